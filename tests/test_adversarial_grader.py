"""Hostile submissions aimed at the grader rather than the host: make the out-of-kernel check
fail while forging the tests, steal the grader's secrets from the environment, fill the ipc
folder, leave daemons running, plant symlinks for nbgrader's permission pass, echo the hidden
tests into the feedback, race two runs into one output folder. Each gets its status, gains
nothing over the untouched notebook, and changes nothing outside.

Real bubblewrap, real cgroups (or the rlimit fallback), real kernels, real nbgrader; the
first batch is tests/test_adversarial.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest

from autograder import checks, grading, runtime
from autograder.course import ROOT, SMALL_PARAMETERS, solution_path, student_path
from autograder.examples import FORGE_CELL, completed
from autograder.gradebook import sqlite_url
from autograder.nbgrader_plugins import HIDDEN_OUTPUT, _squeeze
from autograder.nbgrader_runner import nbgrader_env, run_nbgrader

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
DICE = "03_dice_iou"
NAME = "dice_iou.ipynb"
FULL = 16.0
MARK = f"autograder-daemon-{uuid.uuid4().hex[:8]}"
PROBED = ("test_dice_score", "test_iou_score", "test_soft_dice_loss", "test_lovasz_softmax_loss")


def _untouched_with(*cells: str, forge: bool = False, last: str = ""):
    """The untouched student version (nothing solved) with cells right after the setup cell,
    optionally the forging hook after them, and a cell at the end."""
    nb = nbformat.read(student_path(DICE), as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "import" in c.source)
    added = [*cells, *([FORGE_CELL] if forge else [])]
    for offset, code in enumerate(added, start=1):
        nb.cells.insert(setup + offset, nbformat.v4.new_code_cell(code))
    if last:
        nb.cells.append(nbformat.v4.new_code_cell(last))
    return nb


ECHO = """import glob, os
_found = glob.glob("**/*.ipynb", recursive=True) + glob.glob("/tmp/**/*.ipynb", recursive=True)
print("NOTEBOOKS", _found)
for _p in _found:
    print(open(_p).read())
get_ipython().events.register("pre_run_cell", lambda info: print(info.raw_cell))"""


@pytest.fixture(scope="module")
def grader_batch(tmp_path_factory):
    base = tmp_path_factory.mktemp("adversarial-grader")
    folder, out = base / "class", base / "out"
    folder.mkdir()
    sentinel = base / "sentinel.txt"
    sentinel.write_text("an instructor's file")
    planted = {"LMS_API_TOKEN": f"tok-{secrets.token_hex(8)}", "PGPASSWORD": f"pw-{secrets.token_hex(8)}",
               "DATABASE_URL": f"postgresql://grader:db-{secrets.token_hex(8)}@db.example/gradebook",
               "AWS_SECRET_ACCESS_KEY": f"aws-{secrets.token_hex(8)}", "SSH_AUTH_SOCK": f"/tmp/ssh-{secrets.token_hex(8)}"}
    targets = {"course_config": ROOT / "nbgrader_config.py", "course_lib_init": ROOT / "course_lib" / "__init__.py",
               "gradebook.db": out / "gradebook.db", "sentinel": sentinel, "passwd": Path("/etc/passwd"),
               "probes_out_test_dice_score.npz": sentinel}
    leftovers = ("import os, socket\n"
                 "_names = ['pro' + 'bes_out_' + g + '.npz' for g in "
                 f"{list(PROBED)!r}]\n"  # built at run time: the forging hook blanks any cell naming them
                 "os.mkdir(_names[0])\nos.mkfifo(_names[1])\n"
                 "with open(_names[2], 'wb') as _f:\n    _f.truncate(150 * 2**20)  # sparse\n"
                 "_s = socket.socket(socket.AF_UNIX)\n_s.bind(_names[3])\nprint('left', _names)")
    hostile = {
        "leftovers": _untouched_with(leftovers, forge=True),
        # one snitch (each graded notebook costs a kernel): its environment and every process's, then the
        # notebooks it can find and every cell it runs, echoed (the hidden tests, if it ever saw them)
        "snitch": _untouched_with(
            "import glob, os\nprint('ENV', dict(os.environ))\n"
            "for _p in ['/proc/self/environ', '/proc/1/environ'] + glob.glob('/proc/[0-9]*/environ'):\n"
            "    try:\n        print('PROC', _p, open(_p, 'rb').read().replace(b'\\0', b' ').decode(errors='replace'))\n"
            "    except OSError:\n        print('PROC', _p, 'unreadable')",
            ECHO, last='print("\\n".join(In))'),
        "ipcfill": _untouched_with(
            "import os, time\nfrom ipykernel.connect import get_connection_file\n"
            "_ipc = os.path.dirname(get_connection_file())\nprint('IPC', _ipc)\n"
            "with open(os.path.join(_ipc, 'fill.bin'), 'wb') as _f:\n    _f.write(bytes(8 * 2**20))\n"
            "time.sleep(10)\nprint('still running')"),
        "daemon": _untouched_with(
            "import os, subprocess, sys, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', 'import time  # {MARK}\\nwhile True: time.sleep(0.5)'])\n"
            "    os._exit(0)\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time  # {MARK}\\ntime.sleep(3600)'], start_new_session=True)\n"
            "time.sleep(1)\nprint('daemons started')"),
        "symlinks": _untouched_with(
            "import os\n" + "".join(f"os.symlink({str(t)!r}, {n!r})\n" for n, t in targets.items()), forge=True),
    }
    nbformat.write(completed(DICE), folder / "steady.ipynb")
    for student, nb in hostile.items():
        nbformat.write(nb, folder / f"{student}.ipynb")
    watched = [t for t in targets.values() if t.exists()] + [ROOT / "solutions" / DICE / NAME]
    watched += sorted(folder.glob("*.ipynb"))  # the submissions as handed in
    modes_before = {t: (t.stat().st_mode, hashlib.sha256(t.read_bytes()).hexdigest()) for t in watched}
    saved = {k: os.environ.get(k) for k in planted}
    os.environ.update(planted)
    os.environ.update({"AUTOGRADER_MAX_WRITTEN": "400M", "AUTOGRADER_MAX_FILE_SIZE": "200M"})
    try:
        opts = grading.GradingOptions(
            assignment=DICE, submissions=folder, out=out, db_url=sqlite_url(out / "gradebook.db"),
            slots=grading.make_slots(2, []), timeout=240, cell_timeout=30, parameters=SMALL_PARAMETERS[DICE],
            progress=False)
        result = grading.grade(opts)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        for k in ("AUTOGRADER_MAX_WRITTEN", "AUTOGRADER_MAX_FILE_SIZE"):
            os.environ.pop(k, None)
    return {"out": out, "rows": {o["student"]: o for o in result.outcomes}, "planted": planted,
            "modes_before": modes_before,
            "modes_after": {t: (t.stat().st_mode, hashlib.sha256(t.read_bytes()).hexdigest()) for t in watched}}


def _outputs(out: Path, student: str) -> str:
    nb = nbformat.read(out / "autograded" / student / DICE / NAME, as_version=4)
    return "\n".join(o.get("text", "") + o.get("evalue", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _feedback(out: Path, student: str) -> str:
    return (out / "feedback" / student / DICE / "dice_iou.html").read_text()


@pytest.mark.parametrize("student, status", [
    ("steady", "graded"), ("leftovers", "graded"), ("snitch", "graded"), ("ipcfill", "crashed"),
    ("daemon", "graded"), ("symlinks", "graded"),
])
def test_each_submission_gets_its_status_and_no_hostile_one_gains_a_point(grader_batch, student, status):
    row = grader_batch["rows"][student]
    assert row["status"] == status, row
    assert row["auto_score"] == (FULL if student == "steady" else 0.0), row  # the untouched notebook scores 0
    assert row["enforcement"] in ("cgroup-v1", "cgroup-v2", "rlimit"), row


def test_leftover_folders_fifos_sockets_and_sparse_files_fail_the_cells_not_the_check(grader_batch):
    out, row = grader_batch["out"], grader_batch["rows"]["leftovers"]
    assert "left [" in _outputs(out, "leftovers")  # the files were made, then every test forged
    nb = nbformat.read(out / "autograded" / "leftovers" / DICE / NAME, as_version=4)
    record = nb.metadata["autograder"]["checks"]
    assert record["complete"] is True and not any(c["check_failed"] for c in record["cells"].values())
    assert {g: record["cells"][g]["ok"] for g in PROBED} == dict.fromkeys(PROBED, False)
    assert "not a regular file" in record["cells"]["test_dice_score"]["reason"]  # a folder
    assert "not a regular file" in record["cells"]["test_iou_score"]["reason"]  # a FIFO, not waited on
    assert "unreadable" in record["cells"]["test_soft_dice_loss"]["reason"]  # 150 MB of nothing
    assert "get 0 points" in row["reason"]


def test_the_kernel_sees_none_of_the_graders_secrets(grader_batch):
    out = grader_batch["out"]
    text = _outputs(out, "snitch")
    assert "ENV {" in text and "'PATH'" in text  # it did print its environment
    for student in ("snitch", "steady"):
        shown = _outputs(out, student) + _feedback(out, student)
        leaked = [name for name, value in grader_batch["planted"].items() if value in shown]
        assert leaked == [], f"{student}: {leaked} reached the kernel"
    for name in ("NBGRADER_DB_URL", "AUTOGRADER_SECRETS", "AUTOGRADER_PROBE_CACHE", "AUTOGRADER_SANDBOX_REPORT"):
        assert f"'{name}'" not in text, name


def test_a_kernel_filling_its_ipc_folder_is_stopped_and_every_private_folder_is_removed(grader_batch):
    row = grader_batch["rows"]["ipcfill"]
    assert "ipc folder" in row["reason"], row
    assert runtime.stale_folders() == []  # nothing the batch's kernels had was left behind
    assert not [p for p in runtime.root().glob("k-*/**/fill.bin")]


def test_no_process_a_kernel_started_outlives_its_submission(grader_batch):
    assert "daemons started" in _outputs(grader_batch["out"], "daemon")
    alive = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(MARK in part for part in proc.info.get("cmdline") or []):
            alive.append(proc)
    assert alive == []


def test_symlinks_left_by_a_kernel_are_never_followed(grader_batch):
    # nbgrader's chmod 444 never reached them, nor did anything else: the course's files, the
    # grader's gradebook, the host's /etc/passwd and the submissions are as they were
    assert grader_batch["modes_before"] == grader_batch["modes_after"]
    out = grader_batch["out"]
    links = [p for p in out.rglob("*") if p.is_symlink()]
    assert links == []
    assert not (out / "autograded" / "symlinks" / DICE / "course_config").exists()


def _hidden_only_lines() -> set[str]:
    """Lines of the hidden tests (squeezed, as the feedback compares them) that the student version lacks."""
    source = nbformat.read(solution_path(DICE), as_version=4)
    hidden = set()
    for cell in source.cells:
        for region in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", cell.source, flags=re.S):
            hidden |= {_squeeze(line) for line in region.splitlines()}
    visible = {_squeeze(line) for c in nbformat.read(student_path(DICE), as_version=4).cells for line in c.source.splitlines()}
    return {line for line in hidden - visible if len(line) >= 12}


def test_hidden_tests_never_reach_the_feedback_whatever_printed_them(grader_batch):
    out = grader_batch["out"]
    text = _outputs(out, "snitch")
    assert "NOTEBOOKS []" in text  # no notebook in the kernel's folder (nbgrader's copy has the hidden tests)
    lines = _hidden_only_lines()
    assert len(lines) > 20
    assert any(line in _squeeze(text) for line in lines)  # the kernel did echo them (the instructor's copy)...
    for student in ("snitch", "steady", "leftovers"):
        page = _squeeze(html.unescape(_feedback(out, student)))
        assert [line for line in lines if line in page] == [], student  # ...the student's feedback does not
    assert _squeeze(HIDDEN_OUTPUT) in _squeeze(html.unescape(_feedback(out, "snitch")))


# --------------------------------------------------------------------------- two runs, a failing check
def _write_class(folder: Path, forged: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(forged):
        nbformat.write(_untouched_with(forge=True), folder / f"forger{i}.ipynb")
    return folder


def _cli(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autograder.cli", "grade", DICE, str(folder), "--out", str(out), "--workers", "1",
            "--no-progress", *[f"--param={k}={v!r}" for k, v in SMALL_PARAMETERS[DICE].items()], *extra]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run A grades a forged notebook with a check that cannot complete in time; while it holds
    the output folder, run B is refused, and run C (--wait, nothing to grade) starts once A is done."""
    base = tmp_path_factory.mktemp("two-runs")
    folder, out = _write_class(base / "class", forged=1), base / "out"
    nobody = base / "nobody"
    nobody.mkdir()
    env = dict(os.environ, AUTOGRADER_CHECK_TIMEOUT="0.001")
    first = subprocess.Popen(_cli(folder, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = out / ".autograder" / "run.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text()):
        time.sleep(0.1)
    refused = subprocess.run(_cli(folder, out), capture_output=True, text=True, timeout=120)
    waiting = subprocess.Popen(_cli(nobody, out, "--wait"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_out = first.communicate(timeout=600)
    running_when_first_ended = waiting.poll() is None
    waiting_out = waiting.communicate(timeout=600)
    return {"out": out, "first": (first.returncode, *first_out), "refused": refused,
            "waiting": (waiting.returncode, *waiting_out), "waited": running_when_first_ended}


def test_a_second_run_into_the_same_output_folder_is_refused_or_waits(two_runs):
    refused = two_runs["refused"]
    assert refused.returncode == 1 and "is grading into" in refused.stderr and "--wait" in refused.stderr
    assert two_runs["first"][0] == 0, two_runs["first"][2][-2000:]
    assert two_runs["waited"] and two_runs["waiting"][0] == 0, two_runs["waiting"][2][-2000:]
    lines = grading.journal_path(two_runs["out"]).read_text().splitlines()
    assert [json.loads(line)["student"] for line in lines] == ["forger0"]  # graded once, nothing interleaved
    assert "0 skipped" not in two_runs["waiting"][1] and "nothing new" in two_runs["waiting"][1]


def test_a_check_that_cannot_complete_gives_no_points_and_says_so(two_runs):
    rows = {r["student"]: r for r in grading.read_status_csv(two_runs["out"] / "status.csv")}
    for row in rows.values():  # the kernel claimed every test (forged); the check timed out
        assert float(row["auto_score"]) == 0.0, row
        assert row["status"] == "error" and "out-of-kernel check failed" in row["reason"], row
    nb = nbformat.read(two_runs["out"] / "autograded" / "forger0" / DICE / NAME, as_version=4)
    record = nb.metadata["autograder"]["checks"]
    assert record["complete"] is False and "TimeoutError" in record["error"]
    guarded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") in PROBED]
    assert all(any(o.get("ename") == checks.CHECK_FAILED for o in c.outputs) for c in guarded)


def test_plain_nbgrader_autograde_relies_on_the_same_record(tmp_path):
    """In the course root, without the harness: a check that cannot complete leaves the forged
    tests no points."""
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / DICE, course / "solutions" / DICE)
    env = nbgrader_env(course, {"AUTOGRADER_CHECK_TIMEOUT": "0.001",
                                "AUTOGRADER_PARAMETERS": json.dumps(SMALL_PARAMETERS[DICE])})
    run_nbgrader(course, "generate_assignment", DICE, "--force", env=env, timeout=600)
    (course / "submitted" / "forger" / DICE).mkdir(parents=True)
    nbformat.write(_untouched_with(forge=True), course / "submitted" / "forger" / DICE / NAME)
    run_nbgrader(course, "autograde", DICE, "--force", env=env, timeout=600)
    from nbgrader.api import Gradebook

    with Gradebook(sqlite_url(course / "gradebook.db")) as gb:
        grades = {g.name: g.auto_score for g in gb.find_submission_notebook("dice_iou", DICE, "forger").grades
                  if g.cell.cell_type == "code"}
    assert set(PROBED) <= set(grades) and all(grades[g] == 0 for g in PROBED), grades
