"""The course's assignments and the notebook parameters for quick runs.

``SMALL_PARAMETERS`` is the documented small setting: with it notebooks 01-03 run in
well under a minute each and 04 in about 2 minutes on two CPU cores (CI, the tests and
quick grading use it). The defaults in each notebook's ``parameters`` cell give the full
experience.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"

ASSIGNMENTS: dict[str, str] = {
    "01_pyramids_vs_fpn": "pyramids_vs_fpn.ipynb",
    "02_resnet_fpn": "resnet_fpn.ipynb",
    "03_dice_iou": "dice_iou.ipynb",
    "04_segmentation_assignment": "segmentation_assignment.ipynb",
}

SMALL_PARAMETERS: dict[str, dict[str, object]] = {
    "01_pyramids_vs_fpn": {"image_size": 128, "repeats": 1},
    "02_resnet_fpn": {"image_height": 64, "image_width": 96, "fpn_channels": 64},
    "03_dice_iou": {"num_samples": 200, "mask_size": 16, "image_size": 32, "demo_size": 64},
    "04_segmentation_assignment": {
        "budget": "small", "image_size": 64, "train_size": 512, "val_size": 64, "test_size": 64,
        "batch_size": 8, "epochs": 4, "fpn_channels": 64, "head_channels": 32, "lr": 3e-3,
        "ablation_train_size": 64, "ablation_epochs": 2,
    },
}


def solution_path(assignment: str) -> Path:
    return SOLUTIONS / assignment / ASSIGNMENTS[assignment]


def student_path(assignment: str) -> Path:
    return NOTEBOOKS / assignment / ASSIGNMENTS[assignment]


PARAMETERS_ID = "parameters"  # the grade id of every notebook's locked parameters cell


def parameters_cell(nb, graded: bool = False) -> dict:
    """The parameters cell of a notebook node: the locked code cell whose nbgrader grade id is
    ``parameters``, else (not ``graded``) the cell tagged ``parameters`` (papermill's convention).

    While grading, only the locked cell counts: nbgrader restores it from the gradebook, while
    tags are the student's metadata (a cell of their own tagged ``parameters`` must not choose
    the budget)."""
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") == "code" and meta.get("grade_id") == PARAMETERS_ID and meta.get("locked"):
            return cell
    if graded:
        raise ValueError(f"the notebook has no locked cell {PARAMETERS_ID!r}")
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no cell tagged 'parameters'")


def parameter_names(nb) -> list[str]:
    """Names assigned at the start of a line of the parameters cell, in order."""
    return [m.group(1) for m in (re.match(r"^(\w+)\s*=", line) for line in parameters_cell(nb).source.splitlines()) if m]


def pin_parameters(nb, values: dict[str, object], graded: bool = False) -> None:
    """Rewrite ``name = value`` lines of the parameters cell in place, keeping comments
    (``graded``: only the locked parameters cell, see :func:`parameters_cell`).

    Every name must already be a parameter: a typo raises instead of being ignored.
    Values are written with ``repr`` so they stay Python literals.
    """
    cell = parameters_cell(nb, graded=graded)
    lines = cell.source.splitlines()
    for name, value in values.items():
        pattern = re.compile(rf"^{re.escape(name)}\s*=\s*(?P<value>[^#]*?)\s*(?P<comment>#.*)?$")
        for i, line in enumerate(lines):
            match = pattern.match(line)
            if match:
                comment = f"  {match['comment']}" if match["comment"] else ""
                lines[i] = f"{name} = {value!r}{comment}"
                break
        else:
            raise KeyError(f"{name!r} is not a parameter of this notebook; it has {parameter_names(nb)}")
    cell.source = "\n".join(lines)
