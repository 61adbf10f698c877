"""The course notebooks: nbgrader metadata, regenerated student versions, execution with
papermill, and nbgrader's autograde of the solutions and of untouched student versions.

Execution uses the small setting (``autograder.course.SMALL_PARAMETERS``) so that each
notebook runs in about a minute on two CPU cores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from autograder import course
from autograder.course import (
    ASSIGNMENTS,
    DECLARATION,
    GRADING_MODULE,
    ROOT,
    SMALL_PARAMETERS,
    parameters_cell,
    pin_parameters,
    solution_path,
    student_path,
)
from autograder.nbgrader_runner import nbgrader_env, run_nbgrader
from tests.solution_runs import (
    SOLUTIONS_RUN_IN_BROWSER,
    check_solution_run,
    headless_leftovers,
    stage_solution,
)

final = course.grading_module("04_segmentation_assignment")  # its trusted scorer

STUDENTS = ("solution", "untouched")
PLAIN = "03_dice_iou"  # graded by plain `nbgrader autograde` here (fast, with hidden tests and written answers)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = nbgrader_env(course, {"NBGRADER_DB_URL": f"sqlite:///{course / 'gradebook.db'}"})
    return run_nbgrader(course, *args, env=env, timeout=1800)


def _make_course(root: Path, small: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions", root / "solutions")
    if small:
        for assignment in ASSIGNMENTS:
            path = root / "solutions" / assignment / ASSIGNMENTS[assignment]
            nb = nbformat.read(path, as_version=4)
            pin_parameters(nb, SMALL_PARAMETERS[assignment])
            nbformat.write(nb, path)
    return root


def _nbgrader_cells(nb):
    return [c for c in nb.cells if "nbgrader" in c.metadata]


@pytest.mark.parametrize("path", sorted(ROOT.glob("solutions/*/*.ipynb")) + sorted(ROOT.glob("notebooks/*/*.ipynb")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_notebooks_have_no_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path}: a code cell has outputs"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_has_parameters_exercises_hidden_tests_and_written_answers(assignment):
    nb = nbformat.read(solution_path(assignment), as_version=4)
    params = parameters_cell(nb)
    assert params.metadata["nbgrader"]["locked"] is True
    assert "device = \"auto\"" in params.source or "device = 'auto'" in params.source
    assert set(SMALL_PARAMETERS[assignment]) <= {line.split("=")[0].strip() for line in params.source.splitlines() if "=" in line}
    cells = _nbgrader_cells(nb)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in cells]
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    solutions = [c for c in cells if c.metadata["nbgrader"].get("solution") and c.cell_type == "code"]
    tests = [c for c in cells if c.metadata["nbgrader"].get("grade") and c.cell_type == "code"]
    written = [c for c in cells if c.metadata["nbgrader"].get("grade") and c.cell_type == "markdown"]
    assert solutions and tests and written
    assert all("### BEGIN SOLUTION" in c.source for c in solutions)
    assert all(c.metadata["nbgrader"]["locked"] and c.metadata["nbgrader"]["points"] > 0 for c in tests)
    # every autograded exercise has at least one hidden test, but the final assignment's
    # second and third mIoU cells: their points come from the model the first one exports
    scored_elsewhere = set(final.GRADE_CELLS[1:])
    assert all("### BEGIN HIDDEN TESTS" in c.source for c in tests if c.metadata["nbgrader"]["grade_id"] not in scored_elsewhere)


PLACEHOLDERS = ("YOUR ANSWER HERE", "# YOUR CODE HERE", "raise NotImplementedError()")


def _without_placeholders(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.strip() not in PLACEHOLDERS).strip()


def _outside_solution(source: str) -> str:
    """The text of a solution cell that release keeps: everything outside its solution regions."""
    kept, inside = [], False
    for line in source.splitlines():
        if "### BEGIN SOLUTION" in line:
            inside = True
        elif "### END SOLUTION" in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept).strip()


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_released_written_answers_keep_their_questions(assignment):
    """Release replaces a solution region by a placeholder: a written question that shares its cell
    with the model answer must sit outside that region, or the student gets a bare placeholder."""
    solution = {c.metadata["nbgrader"]["grade_id"]: c for c in _nbgrader_cells(nbformat.read(solution_path(assignment), as_version=4))}
    released = nbformat.read(student_path(assignment), as_version=4)
    for cell in released.cells:
        scratch = cell.cell_type == "code" and "nbgrader" not in cell.metadata and not cell.source.strip()
        assert scratch or _without_placeholders(cell.source), (
            f"{assignment}: a student-facing cell is a bare placeholder: {cell.source[:60]!r}")
    manual = [c for c in _nbgrader_cells(released) if c.metadata["nbgrader"].get("grade") and c.metadata["nbgrader"].get("solution")]
    assert manual, f"{assignment}: no manually graded cell"
    for cell in manual:
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        question = _outside_solution(solution[grade_id].source)
        points = cell.metadata["nbgrader"]["points"]
        assert len(question) > 80 and re.search(rf"\({points:g} points?\)", question), (
            f"{assignment}/{grade_id}: the question (with its {points:g} points) is not in its cell")
        assert question in cell.source and "YOUR ANSWER HERE" in cell.source, (
            f"{assignment}/{grade_id}: released cell lacks its question or its answer placeholder")


@pytest.mark.slow
def test_student_versions_are_what_nbgrader_generates_from_the_solutions(tmp_path):
    course = _make_course(tmp_path / "course", small=False)
    _nbgrader(course, "generate_assignment", "*", "--force")  # every assignment, by nbgrader's glob
    for assignment in ASSIGNMENTS:
        generated = nbformat.read(course / "notebooks" / assignment / ASSIGNMENTS[assignment], as_version=4)
        committed = nbformat.read(student_path(assignment), as_version=4)
        assert generated == committed, f"notebooks/{assignment} is stale: run `make release` (autograder release)"
        text = student_path(assignment).read_text()
        assert "### BEGIN SOLUTION" not in text and "### BEGIN HIDDEN TESTS" not in text
        # the grader's declaration and code stay with the instructor: released are the committed files only
        released = sorted(p.name for p in (course / "notebooks" / assignment).iterdir())
        assert released == sorted(p.name for p in student_path(assignment).parent.iterdir()
                                  if p.name != ".ipynb_checkpoints"), assignment
        assert (course / "solutions" / assignment / DECLARATION).is_file()
        assert DECLARATION not in released and GRADING_MODULE not in released


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_runs_under_papermill_with_the_small_setting(assignment, tmp_path, monkeypatch, request):
    import papermill

    if assignment in request.config.stash.get(SOLUTIONS_RUN_IN_BROWSER, ()):
        pytest.skip("each solution runs once per suite: in JupyterLab's Run All with these checks "
                    "(tests/test_browser.py); headless, in the main job's grading (tests/test_harness.py)")
    source = solution_path(assignment)
    out = tmp_path / source.name
    cache = stage_solution(assignment, tmp_path)
    monkeypatch.setenv("COURSE_LIB_WIDGETS", "0")  # the kernel inherits it: static figures
    papermill.execute_notebook(str(source), str(out), parameters=SMALL_PARAMETERS[assignment],
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    check_solution_run(assignment, nb, tmp_path, cache)
    assert headless_leftovers(nb) == []


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    """A temporary course with the small setting: one assignment generated, submitted by two
    students (the solution, the untouched student version) and autograded by plain ``nbgrader
    autograde`` in the course root, as the README's "Teaching with nbgrader" does. Every
    assignment's complete and untouched versions are autograded by the same nbgrader and config
    in the main job (tests/test_harness.py)."""
    course = _make_course(tmp_path_factory.mktemp("graded") / "course", small=True)
    assignment, name = PLAIN, ASSIGNMENTS[PLAIN]
    _nbgrader(course, "generate_assignment", assignment, "--force")
    for student, source in (("solution", course / "solutions"), ("untouched", course / "notebooks")):
        target = course / "submitted" / student / assignment
        target.mkdir(parents=True)
        shutil.copy(source / assignment / name, target / name)
    _nbgrader(course, "autograde", assignment, "--force")
    return course


def _autograded_points(course: Path, assignment: str, student: str) -> tuple[float, float]:
    from nbgrader.api import Gradebook

    notebook = Path(ASSIGNMENTS[assignment]).stem
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission_notebook(notebook, assignment, student)
        code = [g for g in sub.grades if g.cell.cell_type == "code"]
        return sum(g.auto_score or 0.0 for g in code), sum(g.max_score for g in code)


@pytest.mark.slow
def test_autograde_gives_solutions_full_points_and_untouched_notebooks_zero(graded_course):
    assignment = PLAIN
    score, max_score = _autograded_points(graded_course, assignment, "solution")
    assert max_score > 0 and score == max_score
    score, max_score = _autograded_points(graded_course, assignment, "untouched")
    assert max_score > 0 and score == 0
    for student in STUDENTS:
        autograded = graded_course / "autograded" / student / assignment / ASSIGNMENTS[assignment]
        assert autograded.is_file()


@pytest.mark.slow
def test_nbgrader_validate_passes_on_the_solution(graded_course):
    path = graded_course / "solutions" / PLAIN / ASSIGNMENTS[PLAIN]
    result = _nbgrader(graded_course, "validate", str(path))
    assert "Success! Your notebook passes all the tests." in result.stdout
