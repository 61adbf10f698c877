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
THRESHOLDS = {"small": (0.21, 0.23, 0.25), "full": (0.35, 0.50, 0.60)}
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
if not isinstance(config, dict) or set(config) != {"arch", "num_classes", "backbone", "fpn_channels", "head_channels"}:
    fail(f"the model config must be exactly arch, num_classes, backbone, fpn_channels, head_channels; got {config!r}"[:300])
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
json.dump({"miou": float(miou), "reason": ""}, open("result.json", "w"))
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
        return answer["miou"], answer["reason"]
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


def points(miou: float | None, budget: str) -> list[bool]:
    """Which of the three graded cells pass at this mIoU."""
    return [miou is not None and miou >= t for t in THRESHOLDS[budget]]


def verdicts(nb, left_files: dict, course_root: str | Path) -> tuple[dict[str, str], str]:
    """The three graded cells' verdicts ({grade id: '' if it passes, else why not}) and a
    one-line note, from the model the kernel exported. Raises when scoring could not
    complete (a timeout, a crash): the caller then fails the cells closed."""
    params = notebook_parameters(nb)  # the locked cell, as nbgrader restored it and the grader pinned it
    budget = params.get("budget") if params.get("budget") in THRESHOLDS else "full"
    image_size = params.get("image_size", 128)
    if not isinstance(image_size, int) or not 32 <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size!r} is not a size the hidden split is drawn at (32..{MAX_IMAGE_SIZE})")
    left = left_files.get(MODEL_FILE)
    if left is None or left.problem == "missing":
        miou, reason = None, f"no exported model ({MODEL_FILE}): the hidden test did not run to its export"
    elif left.data is None:
        miou, reason = None, f"the exported model ({MODEL_FILE}) is {left.problem}"
    else:
        miou, reason = score_model(left.data, image_size, hidden_seed(course_root))
    passed = points(miou, budget)
    shown = f"{miou:.3f}" if miou is not None else "none"
    cells = {cell: "" if ok else (reason or f"hidden-split mIoU {shown} < {threshold} (scored out of the kernel)")
             for cell, ok, threshold in zip(GRADE_CELLS, passed, THRESHOLDS[budget])}
    note = (f"hidden-split mIoU {shown} (budget {budget}): {sum(passed)} of 3 cells pass"
            + (f" ({reason})" if reason else ""))
    return cells, note
