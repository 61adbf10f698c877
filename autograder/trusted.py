"""Trusted scoring of the final assignment: the model leaves the student's kernel as data.

The hidden test of ``04_segmentation_assignment`` saves the trained ``model`` with
``course_lib.train.save_checkpoint`` (architecture config + tensors; nothing that runs code).
After nbgrader has graded the notebook, :func:`score_final_assignment` (from the course
config's ``Autograde.post_convert_hook``, so plain ``nbgrader autograde`` and ``autograder grade``
both use it) rebuilds the model from that file in a **fresh process inside the sandbox**
(``torch.load(weights_only=True)``, a whitelisted config), evaluates it on the hidden split
defined here, and writes the points of the three graded mIoU cells into the gradebook,
replacing what the student's kernel reported. Monkeypatching ``course_lib``, the metric or
the data generator inside the kernel therefore changes nothing; a missing or malformed
export scores 0.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from autograder import submissions

ASSIGNMENT = "04_segmentation_assignment"
NOTEBOOK = "segmentation_assignment"
MODEL_FILE = "submission_model.pt"
HIDDEN_SEED, HIDDEN_SIZE, NUM_CLASSES = 86_420_135, 200, 5
THRESHOLDS = {"small": (0.21, 0.23, 0.25), "full": (0.35, 0.50, 0.60)}
GRADE_CELLS = ("test_hidden_miou_1", "test_hidden_miou_2", "test_hidden_miou_3")
ALLOWED_CONFIG = {"arch": {"fpn", "single_scale"}, "num_classes": {NUM_CLASSES}, "backbone": {"resnet18", "resnet34", "resnet50"}}
MAX_CHANNELS = 1024
TIMEOUT = 600

log = logging.getLogger(__name__)

# Runs in the sandbox: only course_lib and torch, reading the copied export, writing result.json.
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
data = DataLoader(ShapesDataset(size, size=image_size, seed=seed), batch_size=32)
miou = evaluate(model.to(device), data, num_classes=5, device=device)["miou"]
json.dump({"miou": float(miou), "reason": ""}, open("result.json", "w"))
"""


def notebook_parameters(path: Path) -> dict[str, object]:
    """``name = literal`` values of the parameters cell of a notebook file (after pinning)."""
    import nbformat

    from autograder.course import parameters_cell

    values = {}
    for node in ast.parse(parameters_cell(nbformat.read(path, as_version=4)).source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def score_export(model_path: Path, image_size: int) -> tuple[float | None, str]:
    """(hidden-split mIoU, '') of an exported model, or (None, why it cannot be scored).

    Evaluated in a fresh Python inside the sandbox, on a private copy of the file.
    """
    from autograder import sandbox

    if not model_path.exists() and not model_path.is_symlink():
        return None, f"no exported model ({MODEL_FILE}): the hidden test did not run to its export"
    if not submissions.is_regular_file(model_path):
        return None, f"the exported model ({MODEL_FILE}) is not a regular file (a symlink or a special file)"
    with tempfile.TemporaryDirectory(prefix="trusted-") as work:
        shutil.copy(model_path, Path(work) / MODEL_FILE)
        args = [sys.executable, "-c", EVALUATE, MODEL_FILE, str(image_size), str(HIDDEN_SEED), str(HIDDEN_SIZE),
                json.dumps({k: sorted(v) for k, v in ALLOWED_CONFIG.items()}), str(MAX_CHANNELS)]
        env = dict(os.environ, COURSE_LIB_WIDGETS="0")
        limits = sandbox.Limits.from_env()
        spec = {"file_size": limits.file_size, "processes": limits.processes, "memory": limits.memory,
                "gpu": bool(env.get("CUDA_VISIBLE_DEVICES")), "stdio": str(Path(work) / "stdio.log")}
        if sandbox.enabled():
            args = sandbox.bwrap_command(args, work, [], env, limits)
        cmd = [sys.executable, "-m", "autograder.sandbox_launcher", json.dumps(spec), "--", *args]
        try:
            subprocess.run(cmd, cwd=work, env=env, timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None, f"scoring the exported model took over {TIMEOUT} s"
        result = Path(work) / "result.json"
        if not result.exists():
            tail = (Path(work) / "stdio.log").read_text(errors="replace")[-300:] if (Path(work) / "stdio.log").exists() else ""
            return None, f"scoring the exported model failed: {tail.strip().splitlines()[-1] if tail.strip() else 'no result'}"
        data = json.loads(result.read_text())
        return data["miou"], data["reason"]


def points(miou: float | None, budget: str) -> list[bool]:
    """Which of the three graded cells pass at this mIoU."""
    return [miou is not None and miou >= t for t in THRESHOLDS[budget]]


def record_trusted_scores(db_url: str, student: str, passed: list[bool]) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        for cell, ok in zip(GRADE_CELLS, passed):
            grade = gb.find_grade(cell, NOTEBOOK, ASSIGNMENT, student)
            grade.auto_score = grade.max_score if ok else 0.0
            grade.needs_manual_grade = False
        gb.db.commit()


def score_final_assignment(student: str, folder: Path, db_url: str) -> None:
    """Score the model exported in ``folder`` (the autograded submission) and record the
    three mIoU cells' points for ``student`` in the gradebook at ``db_url``."""
    try:
        params = notebook_parameters(folder / f"{NOTEBOOK}.ipynb")
        budget = params.get("budget") if params.get("budget") in THRESHOLDS else "full"
        miou, reason = score_export(folder / MODEL_FILE, int(params.get("image_size", 128)))
    except Exception as err:  # never leave the kernel's own verdict standing
        budget, miou, reason = "full", None, f"trusted scoring failed: {err}"
    passed = points(miou, budget)
    record_trusted_scores(db_url, student, passed)
    shown = f"{miou:.3f}" if miou is not None else "none"
    log.warning("Trusted scoring of %s: hidden-split mIoU %s (budget %s): %d of 3 cells pass%s", student, shown,
                budget, sum(passed), f" ({reason})" if reason else "")
