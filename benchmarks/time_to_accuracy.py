"""Time to accuracy: our reference ResNet-FPN against segmentation_models_pytorch's FPN, trained
for the same wall-clock CPU budget, then scored on the same held-out shapes.

    python -m benchmarks.time_to_accuracy                  # 2.5 minutes of training each
    python -m benchmarks.time_to_accuracy --minutes 0.2    # a smoke run

Both models get :data:`course_lib.train.REFERENCE_CPU`'s settings: a ResNet-18 encoder with
random init, the same pyramid and head widths (ours: ``fpn_channels`` / ``head_channels``;
smp: ``decoder_pyramid_channels`` / ``decoder_segmentation_channels``), image size, batch size,
peak learning rate, AdamW (weight decay 1e-4, as :func:`~course_lib.train.fit`), the same
:class:`~course_lib.losses.CombinedLoss` (CE + Dice + IoU, as ``make reference``) and the same
:func:`~course_lib.data.make_loaders` batches, in the same order. Both are trained the way
:func:`~course_lib.train.fit` trains: :func:`~course_lib.train.prepare_model` picks the memory
layout, :func:`~course_lib.train.train_step` does each step (bf16 autocast only on CPUs with
native bf16), and both see inputs standardised with the ImageNet statistics (our
``Segmenter`` does it inside; smp's documentation asks its users to do it, so a thin wrapper
does it for smp). smp's FPN keeps its own design otherwise: no 3×3 output convs on the
pyramid, Dropout2d(0.2) before the classifier, its own init. The comparison is thus of
architecture, init and implementation speed, not of training recipes.

**Same budget.** The two are trained interleaved in one process with one thread count:
a step of ours, then a step of smp on the same batch, and so on, each model's own step
times summed, until each has used ``--minutes`` of training time (data generation and the
other model's steps are not counted). Interleaving spreads whatever else the machine is
doing over both alike; the JSON records the load average before and after, and speeds taken
with a load well above the thread count are those of a shared machine, not of the CPU. One
untimed forward and backward pass of each model (on a copy) first builds oneDNN's kernels.
The last step may run over the budget by its own length; the table reports the seconds
actually used.

**Schedule.** :func:`~course_lib.train.fit`'s one-cycle schedule needs the number of steps
in advance, but at a fixed time budget that number depends on each model's speed and on the
machine's load while it runs. So the schedule is a function of *time* instead: before each
step a model's learning rate (and AdamW's β1, cycled 0.95 → 0.85 → 0.95 as ``OneCycleLR``
cycles momentum) is set from the share of its budget used so far, with ``OneCycleLR``'s
curve (10 % cosine warm-up from ``lr / 25``, cosine anneal to ``lr / 25e4``). Each model
thus runs its whole cycle, ending annealed when its time is up, however fast it is. (A
step count estimated from a timed warm-up would be the alternative; load changes on a shared
machine make it miss the end.) Because step timings vary, reruns differ slightly.

Afterwards both are scored with :func:`~course_lib.train.evaluate` (mIoU with background)
and :func:`~course_lib.train.evaluate_by_object_size` on a :class:`~course_lib.data.ShapesDataset`
of ``REFERENCE_CPU["test_size"]`` images with its ``test_seed``. The table is printed and the
results are written to ``build/time_to_accuracy.json`` (with the thread count, the CPU
model and the ratios ours / smp of images per second and of mIoU).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from course_lib.data import SHAPE_CLASS_NAMES, ShapesDataset, make_loaders
from course_lib.device import seed_everything
from course_lib.losses import CombinedLoss
from course_lib.models import IMAGENET_MEAN, IMAGENET_STD, ResNetFPN
from course_lib.train import (
    REFERENCE_CPU,
    evaluate,
    evaluate_by_object_size,
    loss_parts,
    mixed_precision_dtype,
    prepare_model,
    train_step,
)

NUM_CLASSES = len(SHAPE_CLASS_NAMES)
WEIGHT_DECAY = 1e-4  # fit's default
PCT_START, DIV_FACTOR, FINAL_DIV_FACTOR = 0.1, 25.0, 1e4  # OneCycleLR's curve, as fit uses it
BETA1_RANGE = (0.85, 0.95)  # OneCycleLR's base_momentum, max_momentum
NAMES = {"ours": "ours (course_lib ResNetFPN)", "smp": "smp.FPN"}


class StandardizedSmp(nn.Module):
    """An smp model fed as our :class:`~course_lib.models.Segmenter` feeds its backbone: images
    in [0, 1] standardised with the ImageNet statistics, in the layout the weights are in.

    Shape: ``(N, 3, H, W)`` with ``H, W`` multiples of 32 → logits ``(N, num_classes, H, W)``.
    """

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net, self.num_classes = net, num_classes
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.pixel_mean) / self.pixel_std
        if next(self.net.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)


def build_models(settings: dict[str, Any], seed: int) -> dict[str, nn.Module]:
    """``{"ours": ResNetFPN, "smp": smp.FPN}`` with the same encoder, widths and classes."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError as err:
        raise SystemExit("this benchmark needs segmentation-models-pytorch: pip install -e '.[dev]'") from err
    torch.manual_seed(seed)
    ours = ResNetFPN(NUM_CLASSES, backbone=settings["backbone"], fpn_channels=settings["fpn_channels"],
                     head_channels=settings["head_channels"])
    torch.manual_seed(seed)
    theirs = smp.FPN(encoder_name=settings["backbone"], encoder_weights=None, classes=NUM_CLASSES,
                     decoder_pyramid_channels=settings["fpn_channels"],
                     decoder_segmentation_channels=settings["head_channels"])
    return {"ours": ours, "smp": StandardizedSmp(theirs, NUM_CLASSES)}


def one_cycle(share: float, peak_lr: float) -> tuple[float, float]:
    """``(lr, beta1)`` after ``share`` (0 to 1) of the budget, on ``OneCycleLR``'s cosine curve."""
    share = min(max(share, 0.0), 1.0)
    initial, final = peak_lr / DIV_FACTOR, peak_lr / DIV_FACTOR / FINAL_DIV_FACTOR
    low, high = BETA1_RANGE

    def cos(start: float, end: float, t: float) -> float:
        return end + (start - end) / 2 * (1 + math.cos(math.pi * t))

    if share < PCT_START:
        t = share / PCT_START
        return cos(initial, peak_lr, t), cos(high, low, t)
    t = (share - PCT_START) / (1 - PCT_START)
    return cos(peak_lr, final, t), cos(low, high, t)


def set_schedule(optimizer: torch.optim.Optimizer, lr: float, beta1: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["betas"] = (beta1, group["betas"][1])


def train_for(models: dict[str, nn.Module], loader: DataLoader, loss_fn: nn.Module, budget_s: float,
              peak_lr: float) -> dict[str, dict[str, Any]]:
    """Train the models interleaved, step by step on the same batches, each for ``budget_s``
    seconds of its own step time; returns per model its steps, images, seconds and losses."""
    device = torch.device("cpu")
    amp = mixed_precision_dtype(device) is not None
    runs = {}
    for name, model in models.items():
        channels_last = prepare_model(model, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr / DIV_FACTOR, weight_decay=WEIGHT_DECAY)
        runs[name] = {"model": model, "optimizer": optimizer, "channels_last": channels_last, "amp": amp,
                      "seconds": 0.0, "steps": 0, "images": 0, "epochs": 0.0, "losses": []}
    batches_per_epoch = len(loader)
    images, masks = next(iter(loader))
    for r in runs.values():  # untimed: the first pass builds oneDNN's kernels; on a copy, so no state changes
        with torch.random.fork_rng():
            warm = copy.deepcopy(r["model"]).train()
            loss_parts(loss_fn(warm(images), masks))["loss"].backward()
        del warm
    while any(r["seconds"] < budget_s for r in runs.values()):
        for images, masks in loader:
            active = [r for r in runs.values() if r["seconds"] < budget_s]
            if not active:
                break
            for r in active:
                set_schedule(r["optimizer"], *one_cycle(r["seconds"] / budget_s, peak_lr))
                started = time.perf_counter()
                values = train_step(r["model"], images, masks, loss_fn, r["optimizer"], amp=r["amp"])
                r["seconds"] += time.perf_counter() - started
                r["steps"] += 1
                r["images"] += int(images.shape[0])
                r["epochs"] = r["steps"] / batches_per_epoch
                r["losses"].append(values["loss"])
    return runs


def score(model: nn.Module, test: ShapesDataset) -> dict[str, Any]:
    scores = evaluate(model, DataLoader(test, batch_size=32), num_classes=NUM_CLASSES)
    return {"test_miou": scores["miou"], "per_class_iou": scores["per_class_iou"],
            "pixel_accuracy": scores["pixel_accuracy"], "by_size": evaluate_by_object_size(model, test)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(minutes: float, threads: int | None = None, test_size: int | None = None,
        seed: int | None = None) -> dict[str, Any]:
    """Train both models for ``minutes`` each and score them; returns what the JSON holds."""
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if threads is not None:
        torch.set_num_threads(threads)
    s = {k: v for k, v in REFERENCE_CPU.items() if k not in ("epochs", "val_size")}  # a time budget instead
    if test_size is not None:
        s["test_size"] = test_size
    if seed is not None:
        s["seed"] = seed
    seed_everything(s["seed"])
    train, _ = make_loaders(s["train_size"], 0, s["batch_size"], size=s["size"], seed=s["seed"])
    test = ShapesDataset(s["test_size"], size=s["size"], seed=s["test_seed"])
    models = build_models(s, s["seed"])
    loss_fn = CombinedLoss(ce=1.0, dice=1.0, iou=1.0)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    runs = train_for(models, train, loss_fn, 60.0 * minutes, s["lr"])
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    results: dict[str, dict[str, Any]] = {}
    for name, r in runs.items():
        tail = r["losses"][-max(1, len(r["losses"]) // 10):]  # the last tenth of the steps
        results[name] = {
            "model": NAMES[name],
            "parameters": sum(p.numel() for p in r["model"].parameters()),
            "steps": r["steps"], "images_seen": r["images"], "epochs": r["epochs"],
            "train_seconds": r["seconds"], "images_per_second": r["images"] / max(r["seconds"], 1e-9),
            "channels_last": r["channels_last"], "amp": r["amp"],
            "first_loss": r["losses"][0] if r["losses"] else math.nan,
            "final_loss": sum(tail) / len(tail) if tail else math.nan,
            **score(r["model"], test),
        }
    ours, smp_ = results["ours"], results["smp"]
    import segmentation_models_pytorch as smp

    return {
        "budget_minutes_each": minutes,
        "settings": {**s, "loss": "CombinedLoss(ce=1, dice=1, iou=1)", "optimizer": f"AdamW(weight_decay={WEIGHT_DECAY})",
                     "schedule": "time-based one-cycle (OneCycleLR's curve over each model's budget)",
                     "inputs": "ImageNet-standardised for both"},
        "environment": {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                        "segmentation_models_pytorch": smp.__version__, "python": platform.python_version(),
                        "cpu_count": os.cpu_count(),
                        # 1-minute load averages before and after training: well above the thread
                        # count means other work shared the cores and the speeds are not the CPU's.
                        "load_average_before": load_before and round(load_before[0], 2),
                        "load_average_after": load_after and round(load_after[0], 2)},
        "models": results,
        "ratios_ours_over_smp": {
            "images_per_second": ours["images_per_second"] / smp_["images_per_second"],
            "test_miou": ours["test_miou"] / smp_["test_miou"] if smp_["test_miou"] else math.nan,
        },
    }


def table(result: dict[str, Any]) -> str:
    ours, theirs = result["models"]["ours"], result["models"]["smp"]
    rows = [
        ("parameters (M)", "parameters", lambda v: f"{v / 1e6:.2f}"),
        ("training steps", "steps", str),
        ("images seen", "images_seen", str),
        ("epochs", "epochs", lambda v: f"{v:.2f}"),
        ("training seconds", "train_seconds", lambda v: f"{v:.1f}"),
        ("images / s", "images_per_second", lambda v: f"{v:.1f}"),
        ("first → final loss", None, None),
        ("test mIoU (with background)", "test_miou", lambda v: f"{v:.3f}"),
    ]
    lines = [f"| {result['budget_minutes_each']:g} min each | {NAMES['ours']} | {NAMES['smp']} | ours / smp |",
             "|---|---|---|---|"]
    ratios = result["ratios_ours_over_smp"]
    for label, key, fmt in rows:
        if key is None:
            a, b = (f"{m['first_loss']:.3f} → {m['final_loss']:.3f}" for m in (ours, theirs))
            lines.append(f"| {label} | {a} | {b} | |")
            continue
        ratio = {"images_per_second": ratios["images_per_second"], "test_miou": ratios["test_miou"]}.get(key)
        lines.append(f"| {label} | {fmt(ours[key])} | {fmt(theirs[key])} | {'' if ratio is None else f'{ratio:.2f}'} |")
    for size in ("small", "medium", "large", "all"):
        a, b = ours["by_size"][size], theirs["by_size"][size]
        lines.append(f"| mIoU of the shapes, {size} | {a:.3f} | {b:.3f} | {a / b if b else math.nan:.2f} |")
    env = result["environment"]
    lines.append("")
    lines.append(f"CPU: {env['cpu']}; torch {env['torch']} with {env['torch_threads']} threads; "
                 f"smp {env['segmentation_models_pytorch']}; layout channels-last: {ours['channels_last']}; "
                 f"bf16 autocast: {ours['amp']}; load average {env['load_average_before']} → {env['load_average_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.5, help="training budget of each model (default 2.5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--test-size", type=int, default=None,
                        help=f"held-out images (default REFERENCE_CPU's {REFERENCE_CPU['test_size']})")
    parser.add_argument("--seed", type=int, default=None, help=f"training seed (default {REFERENCE_CPU['seed']})")
    parser.add_argument("--out", type=Path, default=Path("build/time_to_accuracy.json"))
    args = parser.parse_args(argv)
    result = run(args.minutes, threads=args.threads, test_size=args.test_size, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
