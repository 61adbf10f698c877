"""The grader's check that an exercise is not solved by calling the reference it re-implements
(autograder/reference_use.py), on the final assignment's real source notebook."""

from __future__ import annotations

import ast
import importlib

import nbformat
import pytest

from autograder import reference_use
from autograder.course import student_path
from autograder.examples import completed

FINAL = "04_segmentation_assignment"
STEP_TEST = "test_my_train_step"


@pytest.fixture(scope="module")
def references():
    found = reference_use.forbidden_references(FINAL)
    assert "course_lib.train.train_step" in found[STEP_TEST]
    assert "course_lib.losses.CombinedLoss" in found["test_combined_loss"]
    return found


def _with_step(source: str):
    nb = completed(FINAL)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "my_train_step")
    cell.source = source
    return nb


@pytest.mark.parametrize("assignment", ["01_pyramids_vs_fpn", "02_resnet_fpn", "03_dice_iou", FINAL])
def test_every_solution_passes_and_every_test_cell_of_the_source_names_real_objects(assignment):
    found = reference_use.forbidden_references(assignment)
    nb = completed(assignment)
    for grade_id, names in found.items():
        assert reference_use.reference_uses(nb, assignment, names) == [], f"{assignment}: the model solution trips {grade_id}"
        for name in names:  # a typo would guard nothing
            module, _, leaf = name.rpartition(".")
            assert hasattr(importlib.import_module(module), leaf), f"{assignment}/{grade_id}: {name} does not exist"


@pytest.mark.parametrize("source, hit", [
    ("from course_lib.train import train_step\nmy_train_step = train_step", "course_lib.train.train_step"),
    ("def my_train_step(*a):\n    import course_lib.train as t\n    return t.train_step(*a)", "course_lib.train.train_step"),
    ("def my_train_step(*a):\n    return train_step(*a)", "course_lib.train.train_step"),  # a name nobody defined
    ("import importlib\nmy_train_step = importlib.import_module('course_lib.train').train_step", "importlib"),
    ("import course_lib.train as t\nmy_train_step = getattr(t, 'train' + '_step')", "getattr with a computed name"),
    ("my_train_step = eval('__import__(\"course_lib.train\").train_step')", "eval"),
    ("import sys\nmy_train_step = sys.modules['course_lib.train'].__dict__['train_step']", "modules"),
    ("def my_train_step(:\n", "could not be read"),
    # the tests' own handles on the reference, and their private helpers, are off limits too
    ("def my_train_step(*a):\n    return _reference_step(*a)", "_reference_step"),
    ("def my_train_step(*a):\n    _answer_probes('test_my_train_step', None)", "_answer_probes"),
    ("def my_train_step(m, x, y, loss_fn, opt):\n    return dict(vars(m))", "vars"),
    ("!cp /tmp/solution.py .\nfrom solution import my_train_step", "'!cp'"),
    ("%run helper.py", "'%run'"),
])
def test_reaching_the_reference_or_the_tests_own_names_is_found(references, source, hit):
    uses = reference_use.reference_uses(_with_step(source), FINAL, references[STEP_TEST])
    assert uses and hit in " ".join(uses), uses


def test_a_cell_of_the_students_own_is_read_too_and_locked_cells_are_not(references):
    nb = completed(FINAL)
    nb.cells.insert(3, nbformat.v4.new_code_cell("from course_lib.losses import CombinedLoss"))
    uses = reference_use.reference_uses(nb, FINAL, references["test_combined_loss"])
    assert uses == ["cell 3 uses course_lib.losses.CombinedLoss"]
    # the student's copy marks a cell of theirs locked: only the source's flags count
    nb.cells[3].metadata["nbgrader"] = {"grade_id": "setup", "locked": True}
    assert reference_use.reference_uses(nb, FINAL, references["test_combined_loss"]) == []  # nbgrader restores 'setup'
    nb.cells[3].metadata["nbgrader"] = {"grade_id": "mine", "locked": True}
    assert reference_use.reference_uses(nb, FINAL, references["test_combined_loss"])



def test_a_copy_of_a_test_cell_is_not_the_students_code_but_an_edited_copy_is(references):
    """JupyterLab's copy of a test cell keeps its grade id; nbgrader strips the metadata of all but
    the last cell of an id, so the other copy reaches the grader as an ordinary cell."""
    released = nbformat.read(student_path(FINAL), as_version=4)
    test_cell = next(c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_combined_loss")
    assert reference_use.reference_uses(  # the test's code reaches the reference...
        _with_cells(test_cell.source + "\n# my copy"), FINAL, references["test_combined_loss"])
    nb = completed(FINAL)
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "test_combined_loss")
    source_copy = nb.cells[at].source  # as nbgrader restores it, hidden tests included
    nb.cells.insert(at, nbformat.v4.new_code_cell(test_cell.source + "\n\n"))
    nb.cells.insert(at, nbformat.v4.new_code_cell(source_copy))
    assert reference_use.reference_uses(nb, FINAL, references["test_combined_loss"]) == []  # ...yet a copy does what the original does
    nb.cells[at].source = source_copy + "\nmy_loss = _CombinedLoss"
    assert reference_use.reference_uses(nb, FINAL, references["test_combined_loss"])

    nb.cells.insert(3, nbformat.v4.new_code_cell(test_cell.source))  # the same copy far from its original is read
    assert reference_use.reference_uses(nb, FINAL, references["test_combined_loss"])


DICE = "03_dice_iou"
TAKES_THE_REFERENCES_TYPE = ("def soft_dice_loss(logits, target, smooth=0.0):\n"
                             "    return type(criterion)(ce=0.0, dice=1.0, iou=0.0, smooth=smooth)(logits, target)['loss_dice']")


def _dice_with_exercise(source: str):
    nb = completed(DICE)
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "soft_dice_loss").source = source
    return nb


def _dice_cell(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_demo_cells_that_hold_the_reference_reach_no_exercise_copied_or_moved_above_it():
    """03's demo cells after the exercises bind the library (``losses``) and a CombinedLoss
    (``criterion``): pasted, or moved (nbgrader restores a locked cell by its id wherever it
    stands), above the soft Dice exercise, ``type(criterion)`` would be the reference."""
    references = reference_use.forbidden_references(DICE)["test_soft_dice_loss"]
    nb = _dice_with_exercise(TAKES_THE_REFERENCES_TYPE)
    demos = [nb.cells[_dice_cell(nb, g)].source for g in ("lovasz-demo", "combined-loss")]
    setup = _dice_cell(nb, "setup")
    for offset, source in enumerate(demos, start=1):
        nb.cells.insert(setup + offset, nbformat.v4.new_code_cell(source))
    assert reference_use.reference_uses(nb, DICE, references)  # pasted copies are read like any cell
    moved = _dice_with_exercise(TAKES_THE_REFERENCES_TYPE)
    for grade_id in ("combined-loss", "lovasz-demo"):
        moved.cells.insert(_dice_cell(moved, "setup") + 1, moved.cells.pop(_dice_cell(moved, grade_id)))
    uses = reference_use.reference_uses(moved, DICE, references)
    assert any("'lovasz-demo' no longer stands where the assignment puts it" in use for use in uses), uses
    assert reference_use.reference_uses(completed(DICE), DICE, references) == []  # in place, they reach nothing


def _with_cells(*sources: str):
    """The model solution of the final assignment with ``sources`` appended as cells of the student's own."""
    nb = completed(FINAL)
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in sources)
    return nb


def _bound_after(source: str) -> set[str]:
    """Names a cell leaves bound at module level once it has run (``del`` unbinds)."""
    bound: set[str] = set()
    for statement in ast.parse(source.replace("%matplotlib inline", "")).body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in statement.names}
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(statement.name)
        elif isinstance(statement, ast.Delete):
            bound -= {t.id for t in statement.targets if isinstance(t, ast.Name)}
            for t in statement.targets:
                if isinstance(t, ast.Tuple):
                    bound -= {e.id for e in t.elts if isinstance(e, ast.Name)}
        else:
            bound |= {n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return bound


@pytest.mark.parametrize("assignment", ["01_pyramids_vs_fpn", "02_resnet_fpn", "03_dice_iou", FINAL])
def test_the_released_notebooks_keep_the_references_out_of_the_namespace(assignment):
    """Until the last test of an exercise has run, no locked cell of the student version leaves the
    reference it re-implements bound under its public name (test cells import them inside and
    delete them; a demo after the tests may use them)."""
    found = reference_use.forbidden_references(assignment)
    nb = nbformat.read(student_path(assignment), as_version=4)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    last_test = {}  # leaf name -> index of the last test cell that forbids it
    for grade_id, names in found.items():
        for name in names:
            last_test[name.rsplit(".", 1)[-1]] = max(last_test.get(name.rsplit(".", 1)[-1], -1), ids.index(grade_id))
    assert last_test, f"{assignment} names no references for its exercises"
    locked = reference_use.locked_in_source(assignment)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and ids[index] in locked:
            early = {leaf for leaf in _bound_after(cell.source) if index <= last_test.get(leaf, -1)}
            assert not early, f"{assignment}/{ids[index]} leaves {sorted(early)} bound before its exercise's last test"


@pytest.mark.parametrize("source", [
    # ordinary PyTorch an honest step may contain: none of it is a lookup of the reference
    "def my_train_step(model, images, masks, loss_fn, optimizer):\n    model.train()\n"
    "    for m in model.modules():\n        pass\n    model.eval(); model.train()\n"
    "    parts = loss_fn(model(images), masks)\n    parts['loss'].backward()\n    optimizer.step()\n"
    "    return {k: float(v) for k, v in parts.items()}",
    "import re\npattern = re.compile('x')\ndef my_train_step(*a):\n    return {'loss': 0.0}",
    "losses = []  # a list of the student's own, named like a course module\ndef my_train_step(*a):\n    return {'loss': 0.0}",
])
def test_ordinary_code_is_not_mistaken_for_the_reference(references, source):
    assert reference_use.reference_uses(_with_step(source), FINAL, references[STEP_TEST]) == []
