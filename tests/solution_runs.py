"""What every run of a solution notebook must show, however it ran: JupyterLab's Run All Cells
(tests/test_browser.py) where Chromium is, papermill (tests/test_notebooks.py) where not. Each
solution runs once per suite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autograder import course, verdicts
from autograder.course import SMALL_PARAMETERS, solution_path

final = course.grading_module("04_segmentation_assignment")  # its trusted scorer

FINAL = "04_segmentation_assignment"
# set by tests/conftest.py once the session's tests are chosen: the assignments whose solution runs
# in JupyterLab (tests/test_browser.py) this session; test_notebooks leaves their papermill runs out
SOLUTIONS_RUN_IN_BROWSER = pytest.StashKey[frozenset]()


def stage_solution(assignment: str, folder: Path) -> Path:
    """Put beside a run of the solution what nbgrader ships with it and what the grader gives
    the hidden tests (the probes' inputs); returns the probes' cache."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = verdicts.probe_cache(assignment, folder.parent / f"{folder.name}-probes")
    for name, path in verdicts.probe_inputs(cache).items():
        shutil.copyfile(path, folder / name)
    for path in solution_path(assignment).parent.iterdir():
        if path.suffix != ".ipynb" and path.is_file():
            shutil.copyfile(path, folder / path.name)
    return cache


def check_solution_run(assignment: str, nb, folder: Path, cache: Path, trained: bool = True) -> None:
    """No error, figures shown, every probe answered as course_lib answers it (checked out of
    the kernel), and for the final assignment, ``trained`` at the small setting, an export that
    clears the calibrated thresholds."""
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook should show figures"
    assert {grade_id: verdicts.check_probe(verdicts.load_arrays(verdicts.expected_path(cache, grade_id)),
                                           verdicts.outputs_path(folder, grade_id))
            for grade_id in verdicts.probed_cells(cache)} == dict.fromkeys(course.probes(assignment), "")
    if assignment == FINAL and trained:
        _the_exported_reference_clears_every_calibrated_threshold(nb, folder / final.MODEL_FILE)


def _the_exported_reference_clears_every_calibrated_threshold(nb, export: Path) -> None:
    """The model solution, trained at the small budget with the reference's settings (seed 0, loss
    weights 1/1/1, one-cycle at ``lr``, every epoch, the full widths, no augmentation: what the
    calibration trains), exports a model that the trusted scorer, on the calibration's split,
    finds above the top graded threshold by at least half the calibrated margin
    (solutions/04_.../calibration.json)."""
    from benchmarks.calibrate_thresholds import CALIBRATION_SPLIT_SEED

    calibrated = json.loads(final.CALIBRATION_FILE.read_text())["budgets"]["small"]
    chosen = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "check_settings")
    settings = calibrated["settings"]
    assert (f"training {settings['epochs']} epoch(s), peak lr {settings['lr']:g} (one-cycle), "
            "weights {'w_ce': 1.0, 'w_dice': 1.0, 'w_iou': 1.0}, augmentation None, "
            f"widths {{'fpn_channels': {settings['fpn_channels']}, 'head_channels': {settings['head_channels']}}}"
            ) in "".join(o.get("text", "") for o in chosen.outputs)
    miou, reason = final.score_export(export, SMALL_PARAMETERS[FINAL]["image_size"], CALIBRATION_SPLIT_SEED)
    assert miou is not None, reason
    top = final.thresholds("small")[-1]
    print(f"the solution's model at the small budget: calibration-split mIoU {miou:.4f}")
    assert miou >= top + calibrated["margin"] / 2, (
        f"the reference scored {miou:.3f} at the small budget; the top threshold is {top} (margin {calibrated['margin']})")


def echoed_values(nb) -> list[str]:
    """Values such as ``True`` or ``<function ...>`` shown as a cell's ``Out[]`` (a cell ending in
    a call that returns something it should not show)."""
    found = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            text = o.get("data", {}).get("text/plain", "") if o.get("output_type") == "execute_result" else ""
            if text in ("True", "False", "None") or text.startswith("<function"):
                found.append(f"cell {i}: Out: {text}")
    return found


def headless_leftovers(nb) -> list[str]:
    """What a headless run must not leave: widget outputs (static figures and text progress bars
    only: a saved widget shows as '0%', an empty block or a script error in nbconvert's HTML)
    and echoed values."""
    widgets = [f"cell {i}: a widget output" for i, cell in enumerate(nb.cells) for o in cell.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    return widgets + echoed_values(nb)
