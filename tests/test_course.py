"""Helpers that pin notebook parameters (used by the tests and the grading harness)."""

import nbformat
import pytest

from autograder.course import parameters_cell, pin_parameters


def _notebook():
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('device = "auto"  # cuda, mps or cpu\nepochs = 10  # passes\nlr = 1e-3')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params]
    return nb


def test_pin_parameters_rewrites_values_and_keeps_comments():
    nb = _notebook()
    pin_parameters(nb, {"epochs": 2, "device": "cpu"})
    assert parameters_cell(nb).source == 'device = \'cpu\'  # cuda, mps or cpu\nepochs = 2  # passes\nlr = 1e-3'
    namespace = {}
    exec(parameters_cell(nb).source, namespace)
    assert (namespace["epochs"], namespace["device"], namespace["lr"]) == (2, "cpu", 1e-3)


def test_pin_parameters_rejects_unknown_names_and_notebooks_without_parameters():
    with pytest.raises(KeyError, match="'epoch' is not a parameter.*'epochs'"):
        pin_parameters(_notebook(), {"epoch": 2})
    nb = _notebook()
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        pin_parameters(nb, {"epochs": 2})


# --------------------------------------------------------------------------- the course and its declarations
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from autograder import course  # noqa: E402
from autograder.examples import KINDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_every_assignment_declares_its_notebook_small_setting_timeouts_and_every_example():
    declared = course.assignments(ROOT)
    assert list(declared) == sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    for name, a in declared.items():
        nb = nbformat.read(a.source, as_version=4)
        assert set(a.small) <= set(course.parameter_names(nb)), name  # pinnable: parameters of the notebook
        assert set(a.quick) <= set(course.parameter_names(nb)), name
        assert a.quick_setting == {**a.small, **a.quick} and set(a.quick_setting) == set(a.small) | set(a.quick)
        assert set(a.examples) == set(KINDS), name  # each bundled example's outcome is the assignment's to say
        assert 0 < a.timeouts.cell < a.timeouts.notebook and a.timeouts.training <= a.timeouts.notebook, name
    assert course.ASSIGNMENTS == {n: a.notebook for n, a in declared.items()}


def _course_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "my course"
    shutil.copytree(ROOT / "solutions", copy / "solutions", ignore=shutil.ignore_patterns("*.ipynb_checkpoints"))
    shutil.copy(ROOT / "nbgrader_config.py", copy / "nbgrader_config.py")
    return copy


DICE, FINAL = "03_dice_iou", "04_segmentation_assignment"


@pytest.mark.parametrize("assignment, edit, message", [
    (DICE, lambda t: t.replace('notebook = "dice_iou.ipynb"', 'notebook = "dice.ipynb"'), "notebook 'dice.ipynb' is not"),
    (DICE, lambda t: "budget = 3\n" + t, "unknown key"),
    (DICE, lambda t: t + "\nstray = 3\n", "stray must be"),
    (DICE, lambda t: t.replace("cell = 30", 'cell = "30"'), "'cell' has the wrong type"),
    (DICE, lambda t: t.replace("cell = 30", "cell = 0"), "positive"),
    (DICE, lambda t: t.replace("share = [1.0, 1.0]", "share = [1.0, 0.5]"), "examples.complete"),
    (DICE, lambda t: t.replace("share = [1.0, 1.0]", 'share = ["all", 1.0]'), "examples.complete"),
    (DICE, lambda t: t.replace("[small]", "[small"), "assignment.toml"),
    (FINAL, lambda t: t.replace('kernel_inputs = ["calibration.json"]', 'kernel_inputs = ["../../nbgrader_config.py"]'),
     "list of names"),
    (FINAL, lambda t: t.replace('kernel_inputs = ["calibration.json"]', 'kernel_inputs = ["missing.json"]'),
     "are not files"),
    (FINAL, lambda t: t.replace('cells = ["test_hidden_miou_1", ', "cells = [1, "), "list of names"),
    (FINAL, lambda t: t.replace("kernel_outputs = [", "outputs = ["), "unknown key"),
    (DICE, lambda t: "quick = 3\n" + t, "'quick' has the wrong type"),
])
def test_a_bad_declaration_names_its_file_and_key(tmp_path, assignment, edit, message):
    folder = tmp_path / assignment
    shutil.copytree(ROOT / "solutions" / assignment, folder, ignore=shutil.ignore_patterns("*.ipynb_checkpoints"))
    toml = folder / "assignment.toml"
    toml.write_text(edit(toml.read_text()))
    with pytest.raises(course.BadDeclaration, match=message) as err:
        course.load_declaration(folder)
    assert str(toml) in str(err.value)


def _probe(cwd: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != course.COURSE_DIR_ENV}
    return subprocess.run([sys.executable, "-c", "from autograder import course; print(course.ROOT); "
                           "print(course.SOLUTIONS); print(sorted(course.ASSIGNMENTS))", *extra], cwd=cwd,
                          capture_output=True, text=True, env={**environ, **(env or {})}, timeout=120)


def test_the_course_is_found_from_where_the_instructor_works_not_where_the_package_lives(tmp_path):
    """A copy of the course (as an instructor adopting it has) is graded as that copy, from its
    root or any folder in it, though this package is installed from the original checkout."""
    copy = _course_copy(tmp_path)
    shutil.rmtree(copy / "solutions" / "01_pyramids_vs_fpn")
    for cwd in (copy, copy / "solutions" / "03_dice_iou"):
        done = _probe(cwd)
        assert done.returncode == 0, done.stderr
        root, solutions, names = done.stdout.splitlines()
        assert Path(root) == copy.resolve() and Path(solutions) == copy.resolve() / "solutions"
        assert "01_pyramids_vs_fpn" not in names and "03_dice_iou" in names
    named = _probe(tmp_path, env={course.COURSE_DIR_ENV: str(copy)})
    assert named.returncode == 0 and Path(named.stdout.splitlines()[0]) == copy.resolve()
    nowhere = _probe(tmp_path)
    assert nowhere.returncode != 0 and "no course here" in nowhere.stderr and "--course-dir" in nowhere.stderr


def test_the_command_line_takes_course_dir_and_says_when_there_is_no_course(tmp_path):
    copy = _course_copy(tmp_path)
    shutil.rmtree(copy / "solutions" / "02_resnet_fpn")
    cli = [sys.executable, "-m", "autograder.cli"]
    env = {k: v for k, v in os.environ.items() if k != course.COURSE_DIR_ENV}
    lost = subprocess.run([*cli, "grade", "03_dice_iou", "x"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert lost.returncode == 2 and "no course here" in lost.stderr
    for args in (["--course-dir", str(copy), "grade", "02_resnet_fpn", "x"],
                 ["grade", "02_resnet_fpn", "x", "--course-dir", str(copy)]):
        done = subprocess.run([*cli, *args], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert done.returncode == 2 and "unknown assignment '02_resnet_fpn'" in done.stderr, done.stderr


def test_the_final_assignment_declares_its_trusted_cells_and_files():
    final = course.load_declaration(ROOT / "solutions" / "04_segmentation_assignment")
    assert final.trusted.cells == ("test_hidden_miou_1", "test_hidden_miou_2", "test_hidden_miou_3")
    assert final.trusted.kernel_outputs == ("submission_model.pt",) and final.trusted.kernel_inputs == ("calibration.json",)
    assert all(course.load_declaration(ROOT / "solutions" / a).trusted is None
               for a in ("01_pyramids_vs_fpn", "02_resnet_fpn", "03_dice_iou"))
