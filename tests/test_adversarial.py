"""Hostile submissions, graded in one batch with an honest one: each ends with the right
status and score, the honest one is graded in full, and nothing outside the sandbox changes.

Real bubblewrap, real cgroups (or the rlimit fallback), real kernels, real nbgrader.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbgrader.api import Gradebook

from autograder import grading, runtime
from autograder.course import ROOT, SMALL_PARAMETERS
from autograder.examples import EXAMPLES, completed
from autograder.gradebook import sqlite_url, submission_scores

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
DICE = "03_dice_iou"
NAME = "dice_iou.ipynb"
FULL = 16.0            # autograded points of 03
WITHOUT_DICE = 10.0    # the same without its first exercise (dice_score; test_iou_score uses it too)


def _with_cell(*codes: str, stub_first_exercise: bool = False):
    """The complete 03 notebook with hostile cells right after the setup cell."""
    nb = completed(DICE)
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "import" in c.source)
    for offset, code in enumerate(codes, start=1):
        nb.cells.insert(setup + offset, nbformat.v4.new_code_cell(code))
    if stub_first_exercise:
        first = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code")
        first.source = "# YOUR CODE HERE\nraise NotImplementedError()"
    return nb


def _snoop_code(paths: list[str]) -> str:
    return (f"_leaked = []\nfor _p in {paths!r}:\n    try:\n        open(_p, 'rb').read(16)\n"
            "        _leaked.append(_p)\n    except Exception:\n        pass\nprint('LEAKED', _leaked)")


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory):
    base = tmp_path_factory.mktemp("adversarial")
    folder, out = base / "class", base / "out"
    folder.mkdir()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    secret = base / "instructor-secret.txt"
    secret.write_text("the answers")
    nbformat.write(completed(DICE), folder / "steady.ipynb")
    hostile = {
        "loop": _with_cell("while True:\n    pass"),
        "membomb": _with_cell("_blocks = []\nwhile True:\n    _blocks.append(bytearray(2**26))"),
        "forkbomb": _with_cell("import os\nwhile True:\n    os.fork()"),
        "suicide": _with_cell("import os\nos._exit(7)"),
        # one prowler, a cell per way out (each graded notebook costs a kernel): read the grader's files,
        # reach the network, write outside its folder, write a file past the size limit
        "prowler": _with_cell(
            _snoop_code([
                str(ROOT / "solutions" / DICE / NAME), str(ROOT / "nbgrader_config.py"), str(out / "gradebook.db"),
                "../../../gradebook.db", "../../../submitted/steady/03_dice_iou/dice_iou.ipynb",
                str(folder / "steady.ipynb"), str(secret), "/etc/shadow", "/root/.bash_history",
            ]),
            f"import socket\nfor _addr in [('127.0.0.1', {port}), ('pypi.org', 443), ('1.1.1.1', 53)]:\n"
            "    try:\n        socket.create_connection(_addr, timeout=3)\n        print('NET OPEN', _addr)\n"
            "    except OSError as _e:\n        print('NET BLOCKED', _addr)",
            # the host's path under /tmp is the sandbox's own tmpfs: written there, never on the host
            "import os\nopen('/tmp/x', 'w').write('x')\n"
            f"for _target in ['/work/escape/x.txt', {str(base / 'escaped.txt')!r}]:\n"
            "    try:\n        os.makedirs(os.path.dirname(_target), exist_ok=True)\n"
            "        open(_target, 'w').write('out')\n        print('WROTE', _target)\n"
            "    except OSError:\n        print('WRITE BLOCKED', _target)",
            "with open('big.bin', 'wb') as _f:\n    _f.write(bytes(300 * 2**20))"),  # fails at the file size limit
        "bigprint": _with_cell("for _ in range(300):\n    print('x' * 1_000_000)"),  # 75x the cap
        "manyfiles": _with_cell("for _i in range(8):\n    with open(f'part{_i}.bin', 'wb') as _f:\n"
                                "        _f.write(bytes(100 * 2**20))\nimport time\ntime.sleep(10)"),
    }
    # tests deleted or rewritten, a grade id duplicated onto a fake test: nbgrader restores the real ones
    tamper = _with_cell("pass", stub_first_exercise=True)
    tamper.cells = [c for c in tamper.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_dice_score"]
    for cell in tamper.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_iou_score":
            cell.source = "pass"
    hostile["tamper"] = tamper
    # wrong scores that compare equal to anything, and course_lib and math.isclose patched to agree
    forger = _with_cell("import math\nimport course_lib.metrics\nmath.isclose = lambda *args, **kwargs: True")
    for cell in forger.cells:
        for name in ("dice_score", "iou_score"):
            if cell.metadata.get("nbgrader", {}).get("solution") and f"def {name}(" in cell.source:
                cell.source = (f"class _Yes(float):\n    __eq__ = lambda self, other: True\n    __hash__ = float.__hash__\n\n\n"
                               f"def {name}(prediction, target):\n    return _Yes(0.5)\n\n\n"
                               f"course_lib.metrics.{name} = {name}")
    hostile["monkeypatch"] = forger
    dup = _with_cell("pass", stub_first_exercise=True)
    test_cell = next(c for c in dup.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_dice_score")
    fake = nbformat.v4.new_code_cell("print('all good')", metadata={"nbgrader": dict(test_cell.metadata["nbgrader"])})
    dup.cells.insert(dup.cells.index(test_cell) + 1, fake)
    hostile["dupids"] = dup
    wrong_kernel = completed(DICE)
    wrong_kernel.metadata["kernelspec"] = {"name": "evil", "display_name": "evil", "language": "python"}
    hostile["kernelname"] = wrong_kernel
    for student, nb in hostile.items():
        nbformat.write(nb, folder / f"{student}.ipynb")
    (folder / "symlinked").mkdir()
    os.symlink(secret, folder / "symlinked" / NAME)
    (folder / "badjson.ipynb").write_text('{"cells": [')

    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}
    env = {"AUTOGRADER_MEMORY_LIMIT": "3G", "AUTOGRADER_MAX_PROCESSES": "64", "AUTOGRADER_MAX_FILE_SIZE": "200M",
           "AUTOGRADER_MAX_WRITTEN": "400M", "AUTOGRADER_MAX_OUTPUT": "4M"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        opts = grading.GradingOptions(
            assignment=DICE, submissions=folder, out=out, db_url=sqlite_url(out / "gradebook.db"),
            slots=grading.make_slots(2, []), timeout=240, cell_timeout=30, parameters=SMALL_PARAMETERS[DICE],
            progress=False, keep_workspaces=True)
        result = grading.grade(opts)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        server.close()
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}
    yield {"result": result, "out": out, "base": base, "before": before, "after": after, "opts": opts,
           "rows": {o["student"]: o for o in result.outcomes}}
    shutil.rmtree(result.scratch, ignore_errors=True)  # the workspaces kept for the tests above


def _outputs(batch, student: str) -> str:
    path = batch["out"] / "autograded" / student / DICE / NAME
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("text", "") + "".join(o.get("traceback", [])) for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs)


@pytest.mark.parametrize("student, status, low, high", [
    ("steady", "graded", FULL, FULL),
    ("loop", "timeout", FULL, FULL),            # interrupted at the cell timeout, the rest graded
    ("suicide", "crashed", 0, 0),
    ("prowler", "graded", FULL, FULL),          # its ways out fail, the bigfile write at the file size limit
    ("bigprint", "graded", FULL, FULL),
    ("manyfiles", "crashed", 0, 0),             # past the bytes-written limit: kernel stopped
    ("tamper", "graded", WITHOUT_DICE, WITHOUT_DICE),
    ("monkeypatch", "graded", WITHOUT_DICE, WITHOUT_DICE),  # fools the kernel, not the probes checked outside
    ("dupids", "graded", WITHOUT_DICE, WITHOUT_DICE),
    ("kernelname", "graded", FULL, FULL),
    ("symlinked", "invalid", 0, 0),
    ("badjson", "invalid", 0, 0),
])
def test_each_hostile_submission_gets_its_status_and_score(hostile_batch, student, status, low, high):
    row = hostile_batch["rows"][student]
    assert row["status"] == status, row
    assert low <= row["auto_score"] <= high, row


def test_redefined_course_lib_and_builtins_fool_the_kernel_but_not_the_grade(hostile_batch):
    text = _outputs(hostile_batch, "monkeypatch")
    assert "dice_score: visible tests passed" in text and "iou_score: visible tests passed" in text  # fooled...
    row = hostile_batch["rows"]["monkeypatch"]
    assert "test_dice_score, test_iou_score get 0 points" in row["reason"], row  # ...overridden out of the kernel


def test_a_memory_bomb_and_a_fork_bomb_are_contained(hostile_batch):
    """What each bomb gets depends on how the host limits kernels, never on luck: each outcome
    below is the only one that enforcement can give, with its exact consequence."""
    rows = hostile_batch["rows"]
    mem = rows["membomb"]
    if mem["enforcement"].startswith("cgroup"):  # the cgroup's memory limit kills the kernel
        assert mem["status"] == "crashed" and "out of memory" in mem["reason"] and mem["auto_score"] == 0, mem
    else:  # an address-space rlimit: the allocation fails inside the cell and the notebook goes on
        assert mem["enforcement"] == "rlimit", mem
        assert mem["status"] == "graded" and "MemoryError" in _outputs(hostile_batch, "membomb"), mem
    bomb = rows["forkbomb"]
    # fork fails at the process limit; the copies of the kernel it made first share its sockets,
    # so what nbgrader sees next is a corrupted channel, a dead kernel, or a next cell that never
    # answers; if none of that happened, the rest of the notebook ran and was graded
    if bomb["status"] == "crashed":
        assert bomb["auto_score"] == 0 and ("corrupted its channel" in bomb["reason"] or "kernel" in bomb["reason"]), bomb
    elif bomb["status"] == "timeout":
        assert "per-cell timeout" in bomb["reason"] or "limit for the whole notebook" in bomb["reason"], bomb
    else:
        assert bomb["status"] == "graded" and bomb["auto_score"] == FULL, bomb


def test_the_sandbox_hides_files_network_and_the_host(hostile_batch):
    text = _outputs(hostile_batch, "prowler")
    assert "LEAKED []" in text
    assert "NET OPEN" not in text and text.count("NET BLOCKED") == 3
    assert "WRITE BLOCKED /work/escape/x.txt" in text  # the root is read-only
    assert "File too large" in text  # the big write failed, and the cells after it ran (graded in full)
    assert not (hostile_batch["base"] / "escaped.txt").exists() and not Path("/work/escape").exists()
    assert not any(p.name == "big.bin" and p.stat().st_size > 200 * 2**20
                   for p in hostile_batch["result"].scratch.rglob("big.bin"))


def test_outputs_are_capped(hostile_batch):
    path = hostile_batch["out"] / "autograded" / "bigprint" / DICE / NAME
    assert path.stat().st_size < 20 * 2**20
    assert "output limit reached" in _outputs(hostile_batch, "bigprint")


def test_originals_are_untouched_and_nothing_is_left_running(hostile_batch):
    assert hostile_batch["before"] == hostile_batch["after"]
    folders = [str(hostile_batch["result"].scratch), *map(str, runtime.stale_folders())]
    left = []
    for _ in range(20):
        left = [p.pid for p in psutil.process_iter(["cwd"]) if any(f in (p.info.get("cwd") or "") for f in folders)]
        if not left:
            break
        time.sleep(0.5)
    assert left == []


def test_the_gradebook_holds_exactly_the_graded_students(hostile_batch):
    rows = hostile_batch["rows"]
    subs = submission_scores(hostile_batch["opts"].db_url, DICE)
    graded = {s for s, r in rows.items() if r["status"] in ("graded", "timeout")}
    assert set(subs) == graded
    assert all(subs[s] == rows[s]["score"] for s in graded)


def test_feedback_does_not_show_hidden_tests(hostile_batch):
    source = nbformat.read(ROOT / "solutions" / DICE / NAME, as_version=4)
    hidden = "\n".join(re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", "\n".join(
        c.source for c in source.cells), flags=re.S))
    student = (EXAMPLES / DICE / "untouched.ipynb").read_text()
    names = {n for n in re.findall(r"\b_\w{4,}\b", hidden) if n not in student}
    assert names, "the hidden tests should use names of their own"
    for student_id in ("steady", "tamper"):
        page = (hostile_batch["out"] / "feedback" / student_id / DICE / "dice_iou.html").read_text()
        assert "hidden tests are not shown" in page
        assert not [n for n in names if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", page)]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # it ended meanwhile
        return []


def test_a_run_killed_mid_batch_resumes_with_every_student_graded_once(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    kinds = {f"k{i}": i % 2 == 0 for i in range(4)}
    for student, full in kinds.items():
        nbformat.write(completed(DICE, skip_last_exercise=not full), folder / f"{student}.ipynb")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "autograder.cli", "grade", DICE, str(folder), "--out", str(out), "--workers", "2",
            "--no-progress", *[f"--param={k}={v!r}" for k, v in SMALL_PARAMETERS[DICE].items()]]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = grading.journal_path(out)
    deadline = time.time() + 300
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
        time.sleep(0.2)
    family = psutil.Process(proc.pid).children(recursive=True)  # fork server, workers, kernels
    assert any("autograder.forkserver" in _cmdline(p) for p in family)
    proc.send_signal(signal.SIGKILL)  # mid-batch: some recorded, some running, some waiting
    proc.wait()
    _, alive = psutil.wait_procs(family, timeout=15)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left running after the harness was killed: {alive}"
    recorded_before = len(grading.read_journal(out))
    assert 2 <= recorded_before < len(kinds)
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    latest = grading.read_journal(out)
    assert {k[1] for k in latest} == set(kinds) and {e["status"] for e in latest.values()} == {"graded"}
    with Gradebook(sqlite_url(out / "gradebook.db")) as gb:
        subs = {s.student.id: s.score for s in gb.find_assignment(DICE).submissions}
        assert gb.find_assignment(DICE).num_submissions == len(kinds)
    assert subs == {s: (FULL if full else 13.0) for s, full in kinds.items()}
