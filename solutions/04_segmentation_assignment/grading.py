"""04_segmentation_assignment: the grader's code for the final segmentation assignment, loaded
by the harness (:func:`autograder.course.grading_module`); never released to students.

``PROBES``: the hidden test cells whose answers are checked out of the kernel, each with the
inputs the grader draws and ``course_lib``'s reference answers (:class:`autograder.probes.Probe`).

Trusted scoring (:mod:`autograder.trusted`): the model leaves the student's kernel as data.
The hidden test saves the trained ``model`` with ``course_lib.train.save_checkpoint``
(architecture config + tensors; nothing that runs code). After the kernel stopped, the sandbox
reads the file back (a regular file of bounded size) and :func:`trusted_verdicts` rebuilds the
model in a **fresh process inside the sandbox** (``torch.load(weights_only=True)``, a
whitelisted config), evaluates it in float32 on the hidden split and decides the three graded
mIoU cells against the thresholds of ``calibration.json``. The hidden split is drawn from a
seed made for this course installation (:mod:`autograder.course_secrets`): no cell that runs in
the student's kernel holds it, so the student cannot train on the images the model is scored
on. Monkeypatching ``course_lib``, the metric or the data generator inside the kernel changes
nothing; a missing or malformed export scores 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autograder import course, course_secrets, trusted
from autograder.probes import Arrays, Probe, as_cases, as_numpy, as_tensor
from course_lib.probes import case_tensors


def _loss_cases(seed: int) -> Arrays:
    """Logits (N, C, H, W), targets (N, H, W) and weights (w_ce, w_dice, w_iou)."""
    from course_lib.data import ShapesDataset

    rng = np.random.default_rng(seed)
    target = rng.integers(0, 4, (2, 8, 8))
    _, masks = ShapesDataset(2, size=32, seed=int(rng.integers(1000))).materialize()
    cases = [(rng.standard_normal((2, 5, 12, 12)), rng.integers(0, 5, (2, 12, 12)), (1.0, 1.0, 1.0)),
             (3 * rng.standard_normal((2, 5, 12, 12)), rng.integers(0, 5, (2, 12, 12)), (1.0, 0.0, 1.5)),
             (rng.standard_normal((3, 5, 9, 7)), 3 * rng.integers(0, 2, (3, 9, 7)), (0.5, 2.0, 0.0)),  # classes absent
             (rng.standard_normal((1, 3, 5, 11)), np.full((1, 5, 11), 2), (2.0, 1.0, 0.5)),        # one class present
             (30.0 * np.eye(4)[target].transpose(0, 3, 1, 2), target, (1.0, 1.0, 1.0)),          # near-perfect
             (rng.standard_normal((2, 5, 32, 32)), masks.numpy(), (1.0, 1.0, 1.0)),               # the dataset's masks
             (rng.standard_normal((2, 2, 6, 6)), rng.integers(0, 2, (2, 6, 6)), (0.0, 0.0, 1.0))]   # IoU only
    return as_cases([{"x": x.astype(np.float32), "t": t.astype(np.int64), "w": np.array(w)} for x, t, w in cases])


def _combined_loss(inputs: Arrays, k: int) -> Arrays:
    from course_lib.losses import CombinedLoss

    x = as_tensor(inputs, f"x_{k}", grad=True)
    w_ce, w_dice, w_iou = map(float, inputs[f"w_{k}"])
    parts = CombinedLoss(ce=w_ce, dice=w_dice, iou=w_iou)(x, as_tensor(inputs, f"t_{k}"))
    parts["loss"].backward()
    return {**{key: as_numpy(value) for key, value in parts.items()}, "g": as_numpy(x.grad)}


def tiny_segmenter(num_classes: int = 5) -> nn.Module:
    """A small segmenter for the training-step probes: batch norm, so train mode matters; no
    bias before it, whose gradient is rounding noise that AdamW would turn into ±lr steps."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, num_classes, 1))


def _train_step_cases(seed: int) -> Arrays:
    """A tiny segmenter's initial weights, an optimizer (0: SGD, 1: AdamW), loss weights, two batches."""
    from course_lib.data import ShapesDataset

    rng = np.random.default_rng(seed)
    cases = []
    for optimizer, weights in ((0, (1.0, 1.0, 1.0)), (1, (0.5, 1.0, 2.0))):
        with torch.random.fork_rng():
            torch.manual_seed(seed + optimizer)
            case = {f"s.{name}": t.numpy().copy() for name, t in tiny_segmenter().state_dict().items()}
        case.update(opt=np.array(optimizer), w=np.array(weights))
        for step in range(2):
            images, masks = ShapesDataset(3, size=24, seed=int(rng.integers(10_000))).materialize()
            case.update({f"x{step}": images.numpy(), f"y{step}": masks.numpy()})
        cases.append(case)
    return as_cases(cases)


def _train_steps(inputs: Arrays, k: int) -> Arrays:
    """Two steps from a model left in eval mode with stale gradients; losses and every weight after."""
    from course_lib.losses import CombinedLoss
    from course_lib.train import train_step

    model = tiny_segmenter()
    model.load_state_dict(case_tensors(inputs, "s.", k))
    model.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2) if int(inputs[f"opt_{k}"])
                 else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    w_ce, w_dice, w_iou = map(float, inputs[f"w_{k}"])
    loss_fn = CombinedLoss(ce=w_ce, dice=w_dice, iou=w_iou)
    values = [train_step(model, as_tensor(inputs, f"x{s}_{k}"), as_tensor(inputs, f"y{s}_{k}"), loss_fn, optimizer)
              for s in range(2)]
    return {"keys": np.array(sorted(values[0])), "v": np.array([[v[key] for key in sorted(v)] for v in values]),
            **{f"s.{name}": t.detach().numpy() for name, t in model.state_dict().items()}}


PROBES: dict[str, Probe] = {
    "test_combined_loss": Probe(_loss_cases, 41, _combined_loss, 1e-4, 1e-5),
    "test_my_train_step": Probe(_train_step_cases, 42, _train_steps, 1e-4, 1e-5),
}


# --------------------------------------------------------------------------- trusted scoring of the trained model
ASSIGNMENT = Path(__file__).resolve().parent.name
# The cells, the export and the thresholds file are declared in [trusted] of assignment.toml.
_DECLARED = course.load_declaration(Path(__file__).resolve().parent).trusted
GRADE_CELLS = _DECLARED.cells
MODEL_FILE = _DECLARED.kernel_outputs[0]
# The graded mIoU thresholds of each budget, calibrated from seeds of the reference
# (benchmarks/calibrate_thresholds.py): a versioned file of the assignment, which the
# notebook shows and the grader and the tests read.
CALIBRATION_FILE = Path(__file__).resolve().parent / _DECLARED.kernel_inputs[0]
HIDDEN_SIZE, NUM_CLASSES = 200, 5
BUDGETS = ("small", "full")
ALLOWED_CONFIG = {"arch": {"fpn", "single_scale"}, "num_classes": {NUM_CLASSES}, "backbone": {"resnet18", "resnet34", "resnet50"}}
MAX_CHANNELS = 512
MAX_IMAGE_SIZE = 512
TIMEOUT = 600

# Runs in the sandbox: only course_lib and torch, reading the copied export, writing result.json.
# Float32 throughout (amp=False): a score near a threshold must not depend on which CPU or
# GPU graded it.
EVALUATE = """
import json, sys, torch
from torch.utils.data import DataLoader
from course_lib.data import ShapesDataset
from course_lib.train import evaluate
from course_lib.models import build_model
path, image_size, seed, size, allowed, max_channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5]), int(sys.argv[6])
def fail(reason):
    json.dump({"miou": None, "reason": reason}, open("result.json", "w")); sys.exit(0)
try:
    state = torch.load(path, map_location="cpu", weights_only=True)
except Exception as err:
    fail(f"the exported model is not plain data: {type(err).__name__}")
config = state.get("config") if isinstance(state, dict) else None
required = {"arch", "num_classes", "backbone", "fpn_channels", "head_channels"}
if not isinstance(config, dict) or not required <= set(config) <= required | {"normalize"}:
    fail(f"the model config must be arch, num_classes, backbone, fpn_channels, head_channels (and normalize); got {config!r}"[:300])
if not isinstance(config.get("normalize", True), bool):
    fail("config normalize must be True or False")
for key, values in allowed.items():
    if config[key] not in values:
        fail(f"config {key}={config[key]!r} is not one of {values}")
if not all(isinstance(config[k], int) and 1 <= config[k] <= max_channels for k in ("fpn_channels", "head_channels")):
    fail("fpn_channels/head_channels out of range")
model = build_model(config)
try:
    model.load_state_dict(state["state_dict"], strict=True)
except Exception as err:
    fail(f"the weights do not fit the config: {str(err).splitlines()[0][:200]}")
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
data = DataLoader(ShapesDataset(size, size=image_size, seed=seed), batch_size=32)
miou = evaluate(model.float().to(device), data, num_classes=5, device=device, amp=False)["miou"]
training = state.get("training")
training = {k: training[k] for k in ("images_seen", "steps", "epochs", "image_size")
            if type(training.get(k)) is int} if isinstance(training, dict) else None
if training is not None:
    training.update(fpn_channels=config["fpn_channels"], head_channels=config["head_channels"])
json.dump({"miou": float(miou), "reason": "", "training": training}, open("result.json", "w"))
"""


def hidden_seed(course_root: str | Path) -> int:
    return course_secrets.load(course_root)["hidden_seed"]


def score_model(data: bytes, image_size: int, seed: int) -> tuple[float | None, str]:
    """(hidden-split mIoU, '') of an exported model's bytes, or (None, why it cannot be
    scored). Evaluated in a fresh Python inside the sandbox (:func:`autograder.trusted.run_scorer`)."""
    answer = _score(data, image_size, seed)
    return answer["miou"], answer["reason"]


def _score(data: bytes, image_size: int, seed: int) -> dict:
    """The scorer's answer: ``{"miou", "reason", "training"}`` (see :func:`score_model`)."""
    args = [MODEL_FILE, str(image_size), str(seed), str(HIDDEN_SIZE),
            json.dumps({k: sorted(v) for k, v in ALLOWED_CONFIG.items()}), str(MAX_CHANNELS)]
    answer = trusted.run_scorer(EVALUATE, args, {MODEL_FILE: data}, TIMEOUT)
    return {"miou": answer["miou"], "reason": answer["reason"], "training": answer.get("training")}


def score_export(model_path: Path, image_size: int, seed: int) -> tuple[float | None, str]:
    """:func:`score_model` of an export file, read as the sandbox reads what a kernel left."""
    from autograder.sandbox import MAX_LEFT_FILE, read_left_file

    left = read_left_file(Path(model_path), MAX_LEFT_FILE)
    if left.problem == "missing":
        return None, f"no exported model ({MODEL_FILE}): the hidden test did not run to its export"
    if left.data is None:
        return None, f"the exported model ({MODEL_FILE}) is {left.problem}"
    return score_model(left.data, image_size, seed)


def thresholds(budget: str) -> tuple[float, float, float]:
    """The three graded cells' mIoU thresholds for ``budget``, from :data:`CALIBRATION_FILE`
    (read each time: a grader never runs on stale figures). Raises when the file is missing
    or malformed, which fails the cells closed."""
    values = json.loads(CALIBRATION_FILE.read_text())["budgets"][budget]["thresholds"]
    if len(values) != len(GRADE_CELLS) or not all(isinstance(t, float) and 0 < t < 1 for t in values) or values != sorted(values):
        raise ValueError(f"{CALIBRATION_FILE}: thresholds of budget {budget!r} must be 3 increasing numbers in (0, 1), got {values!r}")
    return tuple(values)


def points(miou: float | None, budget: str) -> list[bool]:
    """Which of the three graded cells pass at this mIoU."""
    return [miou is not None and miou >= t for t in thresholds(budget)]


def trusted_verdicts(nb, left_files: dict, course_root: str | Path) -> tuple[dict[str, str], str]:
    """The three graded cells' verdicts ({grade id: '' if it passes, else why not}) and a
    one-line note, from the model the kernel exported. Raises when scoring could not
    complete (a timeout, a crash): the caller then fails the cells closed."""
    params = trusted.notebook_parameters(nb)  # the locked cell, as nbgrader restored it and the grader pinned it
    budget = params.get("budget") if params.get("budget") in BUDGETS else "full"
    image_size = params.get("image_size", 128)
    if not isinstance(image_size, int) or not 32 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size!r} is not a size the hidden split is drawn at (32..{MAX_IMAGE_SIZE})")
    left = left_files.get(MODEL_FILE)
    training = None
    if left is None or left.problem == "missing":
        miou, reason = None, f"no exported model ({MODEL_FILE}): the hidden test did not run to its export"
    elif left.data is None:
        miou, reason = None, f"the exported model ({MODEL_FILE}) is {left.problem}"
    else:
        answer = _score(left.data, image_size, hidden_seed(course_root))
        miou, reason, training = answer["miou"], answer["reason"], answer["training"]
    passed = points(miou, budget)
    shown = f"{miou:.3f}" if miou is not None else "none"
    cells = {cell: "" if ok else (reason or f"hidden-split mIoU {shown} < {threshold} (scored out of the kernel)")
             for cell, ok, threshold in zip(GRADE_CELLS, passed, thresholds(budget))}
    note = (f"hidden-split mIoU {shown} (budget {budget}): {sum(passed)} of 3 cells pass"
            + (f" ({reason})" if reason else ""))
    try:  # flags for the instructor: whatever happens here, the verdicts above stand
        if miou is not None:
            note += f"; {budget_flag(training, params)}"
        outside = training_outside_training_cells(nb)
        if outside:
            note += f"; TRAINS OUTSIDE THE TRAINING CELLS: {'; '.join(outside)}"
    except Exception as err:  # noqa: BLE001
        note += f"; budget flags not computed ({type(err).__name__}: {err})"[:200]
    return cells, note


TRAINING_CALLS = {"fit", "train_step", "my_train_step", "backward", "step"}


def training_outside_training_cells(nb) -> list[str]:
    """Cells the student can edit that train at run time: a call of ``fit``, ``train_step``,
    ``my_train_step``, ``.backward()`` or ``.step()`` outside a function body. The source's
    locked cells are the ones the budget is for."""
    return trusted.calls_in_editable_cells(nb, ASSIGNMENT, TRAINING_CALLS)


def budget_flag(training: dict | None, params: dict) -> str:
    """What the export says the model was trained with, against the budget the notebook pins
    (``train_size`` × ``epochs`` images of ``image_size``), flagged for the instructor: the
    record is written by ``course_lib.train.fit`` in the student's kernel, so it informs a
    review and decides no points."""
    if not training or "images_seen" not in training:
        return "BUDGET UNKNOWN: the export has no training record (trained outside course_lib.train.fit?)"
    allowed = int(params.get("train_size", 0)) * int(params.get("epochs", 0))
    seen, size = training["images_seen"], training.get("image_size", 0)
    over = []
    if allowed and seen > allowed:
        over.append(f"{seen:,} images seen > {allowed:,} allowed")
    if size > int(params.get("image_size", size)):
        over.append(f"images of {size} px > {params['image_size']} px")
    for width in ("fpn_channels", "head_channels"):  # the widths come from the export's config
        if isinstance(training.get(width), int) and training[width] > int(params.get(width, training[width])):
            over.append(f"{width} {training[width]} > {params[width]}")
    record = f"trained on {seen:,} images in {training.get('epochs', 0)} epoch(s) of up to {size} px"
    return f"OVER BUDGET: {'; '.join(over)} ({record})" if over else record
