"""The grading harness end to end, with real nbgrader, real kernels and real notebooks:
the main job on the bundled examples, parallel workers against one gradebook, re-runs,
time limits, dead kernels, and ``autograder execute``."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import psutil
import pytest
from nbgrader.api import Gradebook

from autograder import course, demo, grading, runtime
from autograder.course import ASSIGNMENTS, ROOT, SMALL_PARAMETERS
from autograder.examples import EXAMPLES, KINDS, completed, write_class
from autograder.gradebook import sqlite_url
from autograder.gradebook import submission_scores as _submissions
from tests.solution_runs import headless_leftovers

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
DICE = "03_dice_iou"
FULL, PARTIAL = 16.0, 13.0  # autograded points of 03, complete and without its last exercise


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _options(out: Path, submissions: Path, workers: int, **kwargs) -> grading.GradingOptions:
    settings = dict(assignment=DICE, submissions=submissions, out=out, db_url=sqlite_url(out / "gradebook.db"),
                    slots=grading.make_slots(workers, []), cell_timeout=60, training_timeout=300,
                    parameters=SMALL_PARAMETERS[DICE], progress=False)
    settings.update(kwargs)
    return grading.GradingOptions(**settings)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    # the release step rewrites notebooks/ in place, which other test processes read: it is
    # tested on its own (tests/test_notebooks.py), and the committed versions are what it makes
    return out, demo.run(out, workers=2, progress=False, release_first=False)


def test_the_main_job_gives_every_example_its_status_and_score_range(demo_run):
    out, rows = demo_run
    assert len(rows) == len(ASSIGNMENTS) * len(KINDS)
    assert demo.check_expectations(rows) == []
    db = sqlite_url(out / "gradebook.db")
    for assignment in ASSIGNMENTS:
        graded = {r["student"] for r in rows if r["assignment"] == assignment and r["status"] in ("graded", "timeout")}
        assert set(_submissions(db, assignment)) == graded  # invalid ones hold no submission
        for student in graded:
            name = Path(ASSIGNMENTS[assignment]).stem
            assert (out / "feedback" / student / assignment / f"{name}.html").is_file()
            assert (out / "autograded" / student / assignment / f"{name}.ipynb").is_file()
    grades = _csv(out / "grades.csv")
    assert len(grades) == len(rows)
    by_key = {(g["assignment"], g["student_id"]): float(g["score"]) for g in grades}
    assert all(by_key[(r["assignment"], r["student"])] == float(r["score"]) for r in rows)
    page = (out / "report.html").read_text()
    assert all(a in page for a in ASSIGNMENTS) and page.count("data:image/png;base64,") == 2 * len(ASSIGNMENTS)


def test_formgrader_started_in_the_out_folder_sees_the_run_with_the_rosters_names(demo_run):
    """--out elsewhere than the course root: the nbgrader_config.py written there gives
    formgrader (nbgrader's NbGraderAPI, configured as formgrader configures it: from its
    working folder) this run's gradebook, submissions and the students' names."""
    out, rows = demo_run
    probe = (
        "import json; from nbgrader.apps import NbGrader; from nbgrader.apps.api import NbGraderAPI\n"
        "from nbgrader.coursedir import CourseDirectory\n"
        "app = NbGrader(); app.load_config_file(); cd = CourseDirectory(config=app.config)\n"
        "api = NbGraderAPI(cd, config=app.config)\n"
        "subs = api.get_submissions('03_dice_iou')\n"
        "print(json.dumps({'root': cd.root, 'db': cd.db_url, 'source': cd.format_path(cd.source_directory, '.', "
        "'03_dice_iou'), 'subs': {s['student']: [s['last_name'], s['first_name'], s['score']] for s in subs}, "
        "'exchange': api.exchange_missing}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(seen["root"]) == out.resolve()
    assert seen["db"] == sqlite_url(out.resolve() / "gradebook.db")
    assert Path(seen["source"]).resolve() == (ROOT / "solutions" / "03_dice_iou").resolve()
    graded = {r["student"]: float(r["score"]) for r in rows if r["assignment"] == "03_dice_iou" and r["status"] == "graded"}
    assert {k: v[2] for k, v in seen["subs"].items() if k in graded} == graded
    assert seen["subs"]["complete"][:2] == ["Okafor", "Ada"]  # examples/roster.csv
    assert seen["exchange"] is False


def test_graded_notebooks_show_static_figures_and_no_echoed_values(demo_run):
    """Graded headless, every completed notebook has figures, no widget output (a saved widget
    shows as '0%', an empty block or a script error in the feedback page) and no ``Out: True``
    or ``Out: <function ...>``: for 04 this is the headless run of its solution code (its
    papermill run is the JupyterLab one where Chromium is, tests/test_browser.py)."""
    out, _ = demo_run
    for assignment, name in ASSIGNMENTS.items():
        nb = nbformat.read(out / "autograded" / "complete" / assignment / name, as_version=4)
        assert headless_leftovers(nb) == [], assignment
        assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])), assignment


def test_grading_pins_the_instructors_budget_into_the_locked_parameters_cell(demo_run):
    out, _ = demo_run
    path = out / "autograded" / "complete" / "04_segmentation_assignment" / "segmentation_assignment.ipynb"
    params = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    lines = params.source.splitlines()
    for name, value in SMALL_PARAMETERS["04_segmentation_assignment"].items():
        assert any(line.startswith(f"{name} = {value!r}") for line in lines), name
    assert "device = 'cpu'" in params.source  # no GPU: the CPU is pinned and recorded
    assert {r["device"] for r in _csv(out / "status.csv")} == {"cpu"}


def test_a_rerun_skips_what_is_graded_and_unchanged(demo_run):
    out, rows = demo_run
    before = _submissions(sqlite_url(out / "gradebook.db"), DICE)
    opts = _options(out, EXAMPLES / DICE, workers=1, cell_timeout=course.assignment(DICE).timeouts.cell)
    result = grading.grade(opts)
    assert result.outcomes == [] and sorted(result.skipped) == sorted(KINDS)
    assert _submissions(opts.db_url, DICE) == before
    assert _csv(out / "status.csv") == rows  # nothing re-recorded


def test_parallel_workers_leave_a_complete_consistent_gradebook_and_regrade_only_changes(tmp_path):
    kinds = {f"s{i:02d}": ("complete", "partial", "untouched")[i % 3] for i in range(4)}
    folder = write_class(tmp_path / "class", DICE, kinds)
    out = tmp_path / "out"
    opts = _options(out, folder, workers=3)
    result = grading.grade(opts)
    assert sorted(o["student"] for o in result.outcomes) == sorted(kinds)
    assert {o["status"] for o in result.outcomes} == {"graded"}
    expected = {"complete": FULL, "partial": PARTIAL, "untouched": 0.0}
    auto = {o["student"]: o["auto_score"] for o in result.outcomes}
    assert auto == {s: expected[k] for s, k in kinds.items()}
    scores = _submissions(opts.db_url, DICE)
    assert scores == auto  # one submission per student, nothing lost, nothing mixed up
    with Gradebook(opts.db_url) as gb:
        assert len(gb.students) == len(kinds)
        assert gb.find_assignment(DICE).num_submissions == len(kinds)
    assert len(_csv(out / "grades.csv")) == len(kinds)

    # s02 hands in a better notebook: only s02 is graded again, and replaces its grade
    nbformat.write(completed(DICE), folder / "s02.ipynb")
    again = grading.grade(_options(out, folder, workers=3))
    assert [o["student"] for o in again.outcomes] == ["s02"] and len(again.skipped) == len(kinds) - 1
    scores = _submissions(opts.db_url, DICE)
    assert scores["s02"] == FULL and len(scores) == len(kinds)


def _processes_in(*folders: Path) -> list[psutil.Process]:
    """Live processes whose working directory is inside one of ``folders``."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd") or ""
        if any(cwd.startswith(str(folder)) for folder in folders):
            found.append(proc)
    return found



def test_a_notebook_past_its_limit_is_stopped_with_its_kernel_and_a_dead_kernel_is_crashed(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    # the looper sleeps: the limit is on the wall clock (a spinning cell is tests/test_adversarial.py's)
    for student, first_line in (("looper", "import time\nwhile True:\n    time.sleep(0.5)"),
                                ("quitter", "import os\nos._exit(3)")):
        nb = completed(DICE)
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code")
        cell.source = first_line + "\n" + cell.source
        nbformat.write(nb, folder / f"{student}.ipynb")
    nbformat.write(completed(DICE), folder / "steady.ipynb")
    out = tmp_path / "out"
    opts = _options(out, folder, workers=2, timeout=45, cell_timeout=600, keep_workspaces=True)
    result = grading.grade(opts)
    status = {o["student"]: o for o in result.outcomes}
    assert status["looper"]["status"] == "timeout" and "45 s limit" in status["looper"]["reason"]
    assert status["quitter"]["status"] == "crashed" and "kernel died" in status["quitter"]["reason"]
    assert status["steady"]["status"] == "graded" and status["steady"]["auto_score"] == FULL
    assert status["looper"]["score"] == 0 and status["quitter"]["score"] == 0
    assert _submissions(opts.db_url, DICE) == {"steady": FULL}
    orphaned = runtime.stale_folders()  # the looper's: its grader was killed at the time limit
    assert _processes_in(result.scratch, *orphaned) == []  # the looping kernel was killed with nbgrader
    runtime.reap_stale()
    assert not any(p.exists() for p in orphaned)  # and what its grader left is reaped
    shutil.rmtree(result.scratch)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder.cli", *args], capture_output=True, text=True, timeout=300)


def test_execute_runs_notebooks_with_parameters_and_names_the_failing_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print('x is', x)"),
        nbformat.v4.new_code_cell("assert x == 2, 'x must be 2'"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "check.ipynb"
    nbformat.write(nb, path)
    ok = _run_cli("execute", str(path), "-p", "x", "2", "--out", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr
    executed = nbformat.read(tmp_path / "ok" / "check.ipynb", as_version=4)
    assert any("x is 2" in o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    failed = _run_cli("execute", str(path), "--out", str(tmp_path / "bad"))
    assert failed.returncode == 1
    assert "check.ipynb: cell" in failed.stderr and "AssertionError: x must be 2" in failed.stderr
