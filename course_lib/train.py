"""Training and evaluation of segmenters (notebook 04).

:func:`fit` is the loop the final assignment uses; :func:`train_step` is the one step
students re-implement and compare against.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from course_lib.data import IGNORE_INDEX, OWNERSHIP_MARGIN, SIZE_BIN_NAMES, ShapesDataset, size_bin_regions
from course_lib.device import resolve_device, seed_everything
from course_lib.losses import LOSS_KEYS
from course_lib.metrics import ConfusionMatrix
from course_lib.models import Segmenter, build_model
from course_lib.widgets import progress_bar

REFERENCE_CPU: dict[str, Any] = {
    "backbone": "resnet18", "fpn_channels": 128, "head_channels": 64,
    "size": 96, "batch_size": 8, "lr": 3e-3, "epochs": 4,
    "train_size": 3000, "val_size": 200, "test_size": 500, "seed": 0, "test_seed": 20_170_721,
}
"""The course's CPU training budget for the reference model: 265-300 s on two cores in
float32 (a CPU without native bf16), held-out mIoU 0.72 with background
(``python -m benchmarks.reference_study`` is the study behind these settings; ``make
reference`` trains it). On a GPU, use the library defaults (256/128 channels, size 128) and
more data and epochs."""

LossFn = Callable[[Tensor, Tensor], "Tensor | dict[str, Tensor]"]
StepFn = Callable[[nn.Module, Tensor, Tensor, LossFn, torch.optim.Optimizer], dict[str, float]]
"""``step_fn(model, images, masks, loss_fn, optimizer) -> {name: float}``: one optimisation step."""
SCHEDULES = ("one-cycle", "cosine", "constant")


@dataclass
class History:
    """What :func:`fit` records.

    ``history["loss"]`` (or ``history.epoch["loss"]``) is the per-epoch mean of the training
    total; ``loss_ce``, ``loss_dice``, ``loss_iou`` likewise, ``val_miou`` the validation mIoU
    after each epoch and ``seconds`` each epoch's wall time. ``history.step`` holds the same
    loss keys for every optimisation step, for smoother curves.
    """

    epoch: dict[str, list[float]] = field(default_factory=dict)
    step: dict[str, list[float]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> list[float]:
        return self.epoch[key]

    def __contains__(self, key: object) -> bool:
        return key in self.epoch

    def keys(self):
        return self.epoch.keys()

    def log(self, where: dict[str, list[float]], values: dict[str, float]) -> None:
        for key, value in values.items():
            where.setdefault(key, []).append(float(value))

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {"epoch": {k: list(v) for k, v in self.epoch.items()},
                "step": {k: list(v) for k, v in self.step.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, list[float]]]) -> History:
        return cls(epoch={k: list(v) for k, v in data.get("epoch", {}).items()},
                   step={k: list(v) for k, v in data.get("step", {}).items()})


def mixed_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype used on ``device``, or ``None`` for plain float32.

    CUDA: bfloat16 where the GPU has it natively (compute capability 8.0 and later: Ampere,
    Ada, Hopper, Blackwell), else float16, which :func:`fit` pairs with loss scaling.
    ``torch.cuda.is_bf16_supported()`` is no guide: it also says yes where bf16 is only
    emulated (T4, V100: capability 7.x), which is slower than float16 there. CPU: bfloat16
    only where the processor has native bf16 instructions (AVX512-BF16 or AMX; about twice
    the speed of float32 there); elsewhere bf16 would be emulated and slower, so float32.
    MPS: float32.
    """
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_for(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision where it pays off (see :func:`mixed_precision_dtype`); else a no-op."""
    dtype = mixed_precision_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


_CHANNELS_LAST: dict[str, bool] = {}  # device type -> measured choice, for this process


def channels_last_is_faster(device: torch.device) -> bool:
    """Whether convolutions train faster in channels-last (NHWC) layout on ``device``.

    CUDA: yes (cuDNN's tensor-core kernels want NHWC). MPS: no. CPU: it depends on the
    processor and the oneDNN build (on CPUs without AVX-512 channels-last can be 10-15 %
    *slower*), so the first call times a forward and backward pass of a ResNet stage in both
    layouts (about a second) and the answer is kept for the process. The environment
    variable ``COURSE_LIB_CHANNELS_LAST=1`` or ``0`` decides instead.
    """
    forced = os.environ.get("COURSE_LIB_CHANNELS_LAST")
    if forced in ("0", "1"):
        return forced == "1"
    if device.type != "cpu":
        return device.type == "cuda"
    if "cpu" not in _CHANNELS_LAST:
        _CHANNELS_LAST["cpu"] = _time_layout(channels_last=True) < 0.95 * _time_layout(channels_last=False)
    return _CHANNELS_LAST["cpu"]


def _time_layout(channels_last: bool, repeats: int = 3) -> float:
    """Best seconds of a training pass of a ResNet-18 stage (8 × 64 × 48 × 48) in one layout."""
    from torchvision.models.resnet import BasicBlock

    with torch.random.fork_rng():
        torch.manual_seed(0)
        stage = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        x = torch.randn(8, 64, 48, 48)
    if channels_last:
        stage, x = stage.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    best = math.inf
    with torch.enable_grad():  # fit may be called under no_grad
        for k in range(repeats + 1):  # the first pass warms oneDNN's kernel cache
            started = time.perf_counter()
            stage(x).sum().backward()
            if k:
                best = min(best, time.perf_counter() - started)
    return best


def prepare_model(model: nn.Module, device: torch.device) -> bool:
    """Move ``model`` to ``device`` in the memory layout that trains fastest there
    (:func:`channels_last_is_faster`); :class:`~course_lib.models.Segmenter` converts its
    input to match. Returns whether channels-last is used.
    """
    model.to(device)
    channels_last = channels_last_is_faster(device)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return channels_last


def loss_parts(output: Tensor | dict[str, Tensor]) -> dict[str, Tensor]:
    """A loss function's result as a dict with at least ``"loss"``."""
    if isinstance(output, dict):
        if "loss" not in output:
            raise KeyError(f"a loss returning a dict must include 'loss'; got {sorted(output)}")
        return output
    return {"loss": output}


def train_step(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """One optimisation step: forward, loss, backward, update. Returns the losses as floats."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast_for(images.device, amp):
        logits = model(images)
    parts = loss_parts(loss_fn(logits.float(), masks))
    loss = parts["loss"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()}: lower the learning rate or check the data")
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, amp: bool = True) -> Tensor:
    """Class labels ``(N, H, W)`` for images ``(N, 3, H, W)`` on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True)
    with autocast_for(device, amp):
        logits = model(images)
    return logits.argmax(dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    device: str | torch.device | None = None,
    amp: bool = True,
) -> dict[str, Any]:
    """Scores a model over a whole loader with one dataset-wide confusion matrix.

    Returns ``{"miou", "per_class_iou", "mean_dice", "pixel_accuracy"}``; ``miou`` leaves
    out classes that appear in neither the targets nor the predictions.
    """
    if device is not None:
        model.to(resolve_device(device))
    num_classes = num_classes or getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("num_classes is needed for models without a num_classes attribute")
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    for images, masks in loader:
        cm.update(predict(model, images, amp=amp), masks)
    return {
        "miou": cm.mean_iou(),
        "per_class_iou": [float(v) for v in cm.iou()],
        "mean_dice": cm.mean_dice(),
        "pixel_accuracy": cm.pixel_accuracy(),
    }


class ObjectSizeIoU:
    """mIoU of the shape classes by object size, accumulated over a dataset.

    Each size bin (small, medium, large) is scored over the pixels it owns
    (:func:`course_lib.data.size_bin_regions`): the pixels of its objects and the background
    within ``margin`` pixels of them, each background pixel going to its nearest object. So
    a bin's score counts its objects' misses, their boundary bleed and the false positives
    around them, and never another bin's errors: the bleed of a large object is not charged
    to the small ones. Background far from every object counts in ``"all"`` only, which
    scores every pixel. The mean runs over the foreground classes only (the background IoU
    would hide small objects).

    Example::

        scores = ObjectSizeIoU(num_classes=5)
        scores.update(pred, masks, scales)   # (N, H, W) labels, targets, object diameters
        scores.compute()                     # {"small": ..., "medium": ..., "large": ..., "all": ...}
    """

    def __init__(self, num_classes: int, margin: int = OWNERSHIP_MARGIN) -> None:
        self.margin = margin
        self.names = SIZE_BIN_NAMES[1:]
        self.matrices = {name: ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX) for name in (*self.names, "all")}

    def update(self, pred: Tensor, target: Tensor, scales: Tensor) -> None:
        """Add a batch: predicted labels, target labels (``IGNORE_INDEX`` not counted) and the
        target's scale map, all ``(N, H, W)``."""
        regions = size_bin_regions(scales.cpu(), self.margin)
        pred, target = pred.cpu(), target.cpu()
        self.matrices["all"].update(pred, target)
        for b, name in enumerate(self.names, start=1):
            self.matrices[name].update(pred, torch.where(regions == b, target, IGNORE_INDEX))

    def compute(self) -> dict[str, float]:
        """``{"small", "medium", "large", "all"}`` → mIoU of the shape classes (NaN for a bin without objects)."""
        results = {}
        for name, cm in self.matrices.items():
            iou = cm.iou()[1:]  # shape classes only
            iou = iou[~torch.isnan(iou)]
            results[name] = float(iou.mean()) if len(iou) else math.nan
        return results


@torch.no_grad()
def evaluate_by_object_size(
    model: nn.Module,
    dataset: ShapesDataset,
    batch_size: int = 32,
    amp: bool = True,
    margin: int = OWNERSHIP_MARGIN,
) -> dict[str, float]:
    """mIoU of the shape classes of ``model`` on ``dataset``, by object size (:class:`ObjectSizeIoU`).

    Returns ``{"small": ..., "medium": ..., "large": ..., "all": ...}`` (NaN for a bin without objects).
    """
    scores = ObjectSizeIoU(dataset.num_classes, margin=margin)
    for start in range(0, len(dataset), batch_size):
        items = [dataset.item_with_scales(i) for i in range(start, min(start + batch_size, len(dataset)))]
        images, masks, scales = (torch.stack(t) for t in zip(*items))
        scores.update(predict(model, images, amp=amp), masks, scales)
    return scores.compute()


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    loss: LossFn,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    optimizer: torch.optim.Optimizer | None = None,
    device: str | torch.device | None = "auto",
    amp: bool = True,
    seed: int | None = 0,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    ignore_index: int | None = None,
    step_fn: StepFn | None = None,
    schedule: str = "one-cycle",
    warmup: float = 0.1,
    augment: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    AdamW unless ``optimizer`` is given, with the learning-rate ``schedule``: ``"one-cycle"``
    (warm up over the first ``warmup`` share of the steps to ``lr``, then anneal to almost 0),
    ``"cosine"`` (linear warm-up, then cosine decay to 0) or ``"constant"``. ``step_fn`` does
    each optimisation step (default :func:`train_step`; a student's own step is called as
    ``step_fn(model, images, masks, loss, optimizer)`` and gets no mixed precision).
    ``augment(images, masks)`` (e.g. :class:`course_lib.data.Augment`) transforms each
    training batch on the device. Device ``"auto"`` picks
    CUDA, then MPS, then CPU; with ``amp``, mixed precision on CUDA and on CPUs with native
    bf16 (:func:`mixed_precision_dtype`); the losses always run in float32. With ``checkpoint``
    the model, optimizer and history are saved there after every epoch, and training
    resumes from it when the file already exists. What the model was trained with (images
    seen, steps, epochs, largest image side; summed over calls) is kept in
    ``model.training_budget``, which :func:`save_checkpoint` exports.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a share of the steps in [0, 1), got {warmup}")
    if seed is not None:
        seed_everything(seed)
    device = resolve_device(device)
    prepare_model(model, device)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    use_amp = amp and mixed_precision_dtype(device) is not None and step_fn is None
    # loss scaling is needed for float16 only
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and mixed_precision_dtype(device) == torch.float16)

    history, start_epoch = History(), 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, model, optimizer)
        history, start_epoch = state["history"], state["epoch"]
    steps_per_epoch = _len_or_none(train_loader)
    scheduler = None
    if steps_per_epoch and schedule != "constant":
        done = start_epoch * steps_per_epoch  # a resumed run continues its schedule
        scheduler = _lr_scheduler(optimizer, schedule, max(1, epochs * steps_per_epoch, done), warmup, done)

    bar = progress_bar(total=(epochs - start_epoch) * (steps_per_epoch or 0) or None, disable=not progress,
                       desc="training", unit="step", dynamic_ncols=True)
    # What this model was trained with, summed over every fit call; save_checkpoint exports it
    # with the weights, so a grader can compare it with the budget the assignment pins.
    budget = getattr(model, "training_budget", None) or {"images_seen": 0, "steps": 0, "epochs": 0, "image_size": 0}
    model.training_budget = budget  # counted as it goes: an interrupted fit is recorded too
    for epoch in range(start_epoch, epochs):
        started, sums, count = time.perf_counter(), {}, 0
        for images, masks in train_loader:
            budget["images_seen"] += int(images.shape[0])
            budget["steps"] += 1
            budget["image_size"] = max(budget["image_size"], *map(int, images.shape[-2:]))
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            if augment is not None:
                images, masks = augment(images, masks)
            if step_fn is None:
                values = train_step(model, images, masks, loss, optimizer, scaler, amp=use_amp)
            else:
                values = {k: float(v) for k, v in dict(step_fn(model, images, masks, loss, optimizer)).items()}
                if "loss" not in values:
                    raise KeyError(f"step_fn must return a dict with 'loss'; got {sorted(values)}")
            if scheduler is not None:
                scheduler.step()
            history.log(history.step, values)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.set_postfix(epoch=epoch + 1, loss=f"{values['loss']:.3f}", refresh=False)  # drawn by update,
            bar.update(1)  # at most every TEXT_BAR_SECONDS: each redraw is an output a saved notebook keeps
        epoch_values = {k: v / max(count, 1) for k, v in sums.items()}
        if val_loader is not None:
            epoch_values["val_miou"] = evaluate(model, val_loader, ignore_index=ignore_index, amp=amp)["miou"]
            bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_values.get('loss', math.nan):.3f}",
                            val_miou=f"{epoch_values['val_miou']:.3f}")
        epoch_values["seconds"] = time.perf_counter() - started
        history.log(history.epoch, epoch_values)
        budget["epochs"] += 1
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, history, epoch=epoch + 1)
    bar.close()
    return history


def _lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total: int, warmup: float,
                  done: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The scheduler of ``schedule`` over ``total`` steps, positioned after ``done`` of them."""
    peaks = [g.get("max_lr", g["lr"]) for g in optimizer.param_groups]
    if schedule == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total,
                                                   pct_start=max(warmup, 1e-3), last_epoch=done - 1)
    for group, peak in zip(optimizer.param_groups, peaks):
        group.setdefault("initial_lr", peak)
    ramp = max(1, round(warmup * total))

    def factor(step: int) -> float:  # cosine: linear warm-up from 1/ramp, then cosine decay to 0
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - ramp) / max(1, total - ramp))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=done - 1)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    history: History | None = None,
    epoch: int = 0,
) -> Path:
    """Save plain data only (tensors, numbers, strings): it loads with ``weights_only=True``.

    Besides the weights and the config, ``"training"`` holds what :func:`fit` recorded on the
    model (``model.training_budget``: images seen, steps, epochs, largest image side)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "config": dict(getattr(model, "config", {})),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "history": history.to_dict() if history is not None else None,
        "epoch": epoch,
        "training": {k: int(v) for k, v in (getattr(model, "training_budget", None) or {}).items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Without ``model`` the architecture is rebuilt from the stored config. Returns
    ``{"model", "history", "epoch"}``.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if model is None:
        if not state.get("config"):
            raise ValueError(f"{path} holds no model config; pass the model to load into")
        model = build_model(state["config"])
    model.load_state_dict(state["state_dict"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    history = History.from_dict(state["history"]) if state.get("history") else History()
    if state.get("training"):
        model.training_budget = dict(state["training"])  # a resumed fit keeps counting
    return {"model": model, "history": history, "epoch": int(state.get("epoch", 0)), "training": state.get("training") or {}}


def _len_or_none(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


__all__ = [
    "History", "LOSS_KEYS", "SCHEDULES", "ObjectSizeIoU", "Segmenter", "StepFn", "autocast_for", "evaluate", "evaluate_by_object_size", "fit", "load_checkpoint",
    "loss_parts", "mixed_precision_dtype", "predict", "prepare_model", "save_checkpoint", "train_step",
]
