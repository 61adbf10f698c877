"""Trusted scoring of the final assignment: the model leaves the student's kernel as data.

The hidden test of ``04_segmentation_assignment`` saves the trained ``model`` with
``course_lib.train.save_checkpoint`` (architecture config + tensors; nothing that runs code).
After the kernel stopped, the sandbox reads the file back (a regular file of bounded size)
and :func:`verdicts` (from :mod:`autograder.checks`, so plain ``nbgrader autograde`` and
``autograder grade`` both use it) rebuilds the model in a **fresh process inside the
sandbox** (``torch.load(weights_only=True)``, a whitelisted config), evaluates it in float32
on the hidden split and decides the three graded mIoU cells. The hidden split is drawn from
a seed made for this course installation (:mod:`autograder.course_secrets`): no cell that
runs in the student's kernel holds it, so the student cannot train on the images the model
is scored on. Monkeypatching ``course_lib``, the metric or the data generator inside the
kernel changes nothing; a missing or malformed export scores 0.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from autograder import course_secrets

ASSIGNMENT = "04_segmentation_assignment"
NOTEBOOK = "segmentation_assignment"
MODEL_FILE = "submission_model.pt"
HIDDEN_SIZE, NUM_CLASSES = 200, 5
# The graded mIoU thresholds of each budget, calibrated from seeds of the reference
# (benchmarks/calibrate_thresholds.py): a versioned file of the assignment, which the
# notebook shows and the grader and the tests read.
CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "solutions" / ASSIGNMENT / "calibration.json"
BUDGETS = ("small", "full")
GRADE_CELLS = ("test_hidden_miou_1", "test_hidden_miou_2", "test_hidden_miou_3")
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


def notebook_parameters(nb) -> dict[str, object]:
    """``name = literal`` values of the parameters cell of a notebook (after pinning)."""
    from autograder.course import parameters_cell

    values = {}
    for node in ast.parse(parameters_cell(nb, graded=True).source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def hidden_seed(course_root: str | Path) -> int:
    return course_secrets.load(course_root)["hidden_seed"]


def score_model(data: bytes, image_size: int, seed: int) -> tuple[float | None, str]:
    """(hidden-split mIoU, '') of an exported model's bytes, or (None, why it cannot be
    scored). Evaluated in a fresh Python inside the sandbox, under the kernels' limits, on a
    private copy in a folder of :mod:`autograder.runtime` (reaped if the grader dies)."""
    answer = _score(data, image_size, seed)
    return answer["miou"], answer["reason"]


def _score(data: bytes, image_size: int, seed: int) -> dict:
    """The scorer's answer: ``{"miou", "reason", "training"}`` (see :func:`score_model`)."""
    from autograder import runtime, sandbox

    folder = runtime.new_folder()
    enforcement = None
    try:
        work = folder / "work"
        work.mkdir()
        (work / MODEL_FILE).write_bytes(data)
        args = [sys.executable, "-c", EVALUATE, MODEL_FILE, str(image_size), str(seed), str(HIDDEN_SIZE),
                json.dumps({k: sorted(v) for k, v in ALLOWED_CONFIG.items()}), str(MAX_CHANNELS)]
        env = sandbox.kernel_environment(dict(os.environ, COURSE_LIB_WIDGETS="0"))
        cmd, enforcement = sandbox.confine(args, str(work), [], env, sandbox.Limits.from_env(), str(folder / "stdio.log"))
        try:
            subprocess.run(cmd, cwd=work, env=env, timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"scoring the exported model took over {TIMEOUT} s") from None
        result = sandbox.read_left_file(work / "result.json", 2**16)
        if result.data is None:
            log = folder / "stdio.log"
            tail = log.read_text(errors="replace")[-300:].strip() if log.exists() else ""
            raise RuntimeError(f"scoring the exported model failed: {tail.splitlines()[-1] if tail else 'no result'}")
        answer = json.loads(result.data)
        return {"miou": answer["miou"], "reason": answer["reason"], "training": answer.get("training")}
    finally:
        if enforcement is not None:
            enforcement.remove()
        runtime.remove(folder)


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


def verdicts(nb, left_files: dict, course_root: str | Path) -> tuple[dict[str, str], str]:
    """The three graded cells' verdicts ({grade id: '' if it passes, else why not}) and a
    one-line note, from the model the kernel exported. Raises when scoring could not
    complete (a timeout, a crash): the caller then fails the cells closed."""
    params = notebook_parameters(nb)  # the locked cell, as nbgrader restored it and the grader pinned it
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
    """Cells the student can edit (solution cells, cells of their own) that train at run
    time: a call of ``fit``, ``train_step``, ``my_train_step``, ``.backward()`` or ``.step()``
    outside a function body. The source's locked cells (which nbgrader restores) are the
    ones the budget is for; a training step *defined* in a solution cell is fine. Returns one
    description per offending cell, and one per cell that could not be read."""
    from autograder.reference_use import locked_in_source  # the instructor's source, read once

    locked, found = locked_in_source(ASSIGNMENT), []
    for index, cell in enumerate(nb.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.get("cell_type") != "code" or grade_id in locked:
            continue
        where = grade_id or f"cell {index}"
        try:
            tree = ast.parse(_magics_as_python(cell.source))
        except (SyntaxError, ValueError, RecursionError) as err:
            found.append(f"{where} could not be read ({type(err).__name__})")
            continue
        calls = sorted({name for statement in tree.body if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for name in _called_names(statement) if name in TRAINING_CALLS})
        if calls:
            found.append(f"{where} calls {', '.join(calls)}")
    return found


def _magics_as_python(source: str) -> str:
    """The cell's code with IPython's syntax unwrapped: ``%time x = f()`` becomes ``x = f()``
    (the code a line magic runs is hidden in a string after IPython's own transform), a
    ``%%time`` header and ``!shell`` lines are dropped."""
    lines = []
    for line in source.splitlines():
        stripped, indent = line.lstrip(), line[: len(line) - len(line.lstrip())]
        if stripped.startswith(("%%", "!")):
            continue
        if stripped.startswith("%"):
            parts = stripped.split(None, 1)
            line = indent + (parts[1] if len(parts) > 1 else "pass")
        lines.append(line)
    return "\n".join(lines)


def _called_names(node: ast.AST) -> set[str]:
    """Names of the functions and methods called in ``node``, not descending into function
    definitions (a class body runs when it is defined: it is searched)."""
    names, todo = set(), [node]
    while todo:
        current = todo.pop()
        if isinstance(current, ast.Call):
            func = current.func
            names.add(func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "")
        todo.extend(child for child in ast.iter_child_nodes(current)
                    if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    return names


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
