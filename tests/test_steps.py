"""Each grading step alone (autograder/steps/), on files the test writes: no nbgrader run, no
kernel. The steps together are tested end to end in tests/test_harness.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from autograder import gradebook
from autograder.slots import make_slots
from autograder.steps.check import check_record, find_cell_timeouts
from autograder.steps.record import collect_files
from autograder.steps.run import read_sandbox_report
from autograder.steps.validate import load_submission
from autograder.submissions import Submission
from autograder.task import GradingOptions, Task, Verdict

DICE, NAME = "03_dice_iou", "dice_iou.ipynb"


def _task(tmp_path: Path, path: Path, kind: str = "notebook") -> tuple[Task, GradingOptions]:
    out = tmp_path / "out"
    opts = GradingOptions(assignment=DICE, submissions=path.parent, out=out,
                          db_url=gradebook.sqlite_url(out / "gradebook.db"), slots=make_slots(1, []), progress=False)
    return Task(Submission("ada", path, kind), "digest", tmp_path / "workspace"), opts


def _graded(task: Task, opts: GradingOptions, nb) -> None:
    path = task.workspace / "autograded" / task.student / opts.assignment / opts.notebook
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_validate_reads_a_notebook_and_turns_a_broken_one_into_the_status_invalid(tmp_path):
    good = tmp_path / "ada.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), good)
    task, opts = _task(tmp_path, good)
    load_submission(task, opts)
    assert list(task.files) == [NAME] and nbformat.reads(task.files[NAME], as_version=4).cells[0].source == "1"

    broken = tmp_path / "bob.ipynb"
    broken.write_text('{"cells": [')
    task, opts = _task(tmp_path, broken)
    with pytest.raises(Verdict) as verdict:
        load_submission(task, opts)
    assert verdict.value.status == "invalid" and "not valid JSON" in verdict.value.reason


def _record(**cells) -> dict:
    return {"complete": True, "error": "", "notes": ["hidden-split mIoU 0.3"], "cells": cells}


@pytest.mark.parametrize("record, status, says", [
    (_record(t1={"ok": True, "reason": "", "check_failed": False}), None, "trusted: hidden-split mIoU 0.3"),
    (None, "error", "no record of it in the graded notebook"),
    ({**_record(), "complete": False, "error": "TimeoutError: 900 s"}, "error", "TimeoutError: 900 s"),
    (_record(t1={"ok": False, "reason": "the scorer crashed", "check_failed": True}), "error", "of t1 failed"),
])
def test_check_reads_the_out_of_kernel_record_and_fails_closed_without_one(tmp_path, record, status, says):
    task, opts = _task(tmp_path, tmp_path / "ada.ipynb")
    nb = nbformat.v4.new_notebook()
    if record is not None:
        nb.metadata["autograder"] = {"checks": record}
    _graded(task, opts, nb)
    if status is None:
        check_record(task, opts)
        assert says in task.reason
    else:
        with pytest.raises(Verdict) as verdict:
            check_record(task, opts)
        assert verdict.value.status == status and says in verdict.value.reason


def test_check_names_the_cells_interrupted_at_their_timeout(tmp_path):
    task, opts = _task(tmp_path, tmp_path / "ada.ipynb")
    slow = nbformat.v4.new_code_cell("while True: pass", metadata={"nbgrader": {"grade_id": "dice_score"}})
    slow.outputs = [nbformat.v4.new_output("error", ename="CellTimeoutError", evalue="", traceback=[])]
    failing = nbformat.v4.new_code_cell("1/0")
    failing.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="", traceback=[])]
    _graded(task, opts, nbformat.v4.new_notebook(cells=[failing]))
    find_cell_timeouts(task, opts)  # an error is not a timeout
    _graded(task, opts, nbformat.v4.new_notebook(cells=[failing, slow]))
    with pytest.raises(Verdict) as verdict:
        find_cell_timeouts(task, opts)
    assert verdict.value.status == "timeout" and verdict.value.reason.startswith("cell 1 (dice_score) ran past")


def test_run_reports_the_weakest_enforcement_and_the_last_limit_hit(tmp_path):
    task, _ = _task(tmp_path, tmp_path / "ada.ipynb")
    task.workspace.mkdir()
    lines = [{"enforcement": "cgroup-v2"}, {"enforcement": "rlimit", "violation": "memory limit"},
             "torn line", {"enforcement": "made-up"}, {"violation": "process limit"}]
    (task.workspace / "sandbox-report.jsonl").write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    read_sandbox_report(task)
    assert task.enforcement == "rlimit" and task.violation == "process limit"


def test_record_copies_regular_files_only_and_only_what_was_graded(tmp_path):
    task, opts = _task(tmp_path, tmp_path / "class" / "ada.ipynb")
    for step in ("submitted", "autograded", "feedback"):
        folder = task.workspace / step / task.student / opts.assignment
        folder.mkdir(parents=True)
        (folder / f"{step}.txt").write_text(step)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the student's")
    os.symlink(secret, task.workspace / "feedback" / task.student / opts.assignment / "leak.txt")
    task.graded = False
    collect_files(task, opts)
    copied = sorted(p.relative_to(opts.out).as_posix() for p in opts.out.rglob("*") if p.is_file())
    assert copied == [f"submitted/ada/{DICE}/submitted.txt"]  # not graded: no graded notebook, no feedback
    task.graded = True
    collect_files(task, opts)
    copied = sorted(p.relative_to(opts.out).as_posix() for p in opts.out.rglob("*") if p.is_file())
    assert copied == [f"autograded/ada/{DICE}/autograded.txt", f"feedback/ada/{DICE}/feedback.txt",
                      f"submitted/ada/{DICE}/submitted.txt"]  # the link is not followed
