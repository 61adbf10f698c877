"""``autograder grade``: autograde a batch of submissions with nbgrader, in parallel.

Shaped like nbgrader's converters, as lists of small named steps, each in a module of its own
(:mod:`autograder.steps`):

* the batch (:func:`grade_batch`): discover the submissions (:mod:`autograder.submissions`)
  → check the pinned parameters (:mod:`autograder.rules`) → prepare the gradebooks and the
  probes → hand each submission to an executor (:mod:`autograder.executors`) → record each as
  it ends → export ``grades.csv`` (:mod:`autograder.steps.export`) → write ``report.html``
  (:mod:`autograder.report`);
* per submission, on the executor's slot (:func:`process`, ``SUBMISSION_STEPS``): validate
  → stage a private course root → run the real ``nbgrader autograde`` and
  ``generate_feedback`` → check what the out-of-kernel checks recorded and the cells
  interrupted at their timeout;
* per finished submission, in the main thread, one at a time (``RECORD_STEPS``): its grades
  into the course gradebook (:mod:`autograder.gradebook`), its files into ``--out``; then a
  line in the journal and ``status.csv`` (:mod:`autograder.journal`).

A step ends a submission early by raising :class:`~autograder.task.Verdict`; any other
exception is a harness fault, status ``error``.

Re-running skips what the journal says is done, unless the submission, the grading rules
(the assignment's source and declaration, its probes, course_lib, the checking code) or the
pinned parameters changed, or ``force`` is set. A run killed at any point (even SIGKILL) loses
nothing: a submission counts as done only once its journal line is written, after its
grades are in the gradebook, and recording replaces earlier grades.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from autograder import (
    course_secrets,
    forkserver,
    gradebook,
    nbgrader_plugins,
    roster,
    runtime,
    submissions,
    verdicts,
)
from autograder.course import ROOT, STATUSES, source_notebook  # noqa: F401 (STATUSES: for grading's callers)
from autograder.executors import Executor, LocalExecutor
from autograder.journal import (  # noqa: F401 (the journal's names, for grading's callers)
    STATUS_COLUMNS,
    append_journal,
    journal_path,
    read_journal,
    read_status_csv,
    write_status_csv,
)
from autograder.locks import exclusive_run
from autograder.report import write_report
from autograder.rules import RULES_MODULES, check_parameters, rules_digest, source_digest  # noqa: F401
from autograder.slots import Slot, make_slots, parse_gpus  # noqa: F401 (for grading's callers)
from autograder.steps.check import check_record, find_cell_timeouts
from autograder.steps.export import export_grades
from autograder.steps.record import collect_files, record_gradebook
from autograder.steps.run import ENFORCEMENTS, run_autograde  # noqa: F401 (ENFORCEMENTS: for grading's callers)
from autograder.steps.stage import stage_workspace
from autograder.steps.validate import load_submission
from autograder.task import GradingOptions, Task, Verdict  # noqa: F401 (Verdict: for grading's callers)

HOST = socket.gethostname()
FINAL = {"graded", "timeout", "crashed", "invalid"}  # not re-run unless something changed

SUBMISSION_STEPS: list[Callable[[Task, GradingOptions], None]] = [
    load_submission, stage_workspace, run_autograde, check_record, find_cell_timeouts,
]


def process(task: Task, opts: GradingOptions) -> Task:
    """The per-submission step: ``SUBMISSION_STEPS`` in order, on the slot an executor gave the
    task (:mod:`autograder.executors`). Never raises: a :class:`Verdict` ends the steps with
    its status, anything else is a harness fault, status ``error``."""
    try:
        try:
            for step in SUBMISSION_STEPS:
                step(task, opts)
        except Verdict as verdict:
            task.status = verdict.status
            task.reason = "; ".join(r for r in (verdict.reason, task.reason) if r)
    except Exception:
        task.status, task.graded = "error", False
        task.reason = f"harness fault: {traceback.format_exc().strip().splitlines()[-1]}"
    return task


RECORD_STEPS: list[Callable[[Task, GradingOptions], None]] = [record_gradebook, collect_files]


# --------------------------------------------------------------------------- the batch
@dataclass
class BatchResult:
    outcomes: list[dict]
    skipped: list[str]
    seconds: float
    scratch: Path  # the submissions' private course roots (removed unless keep_workspaces)


def prepare(opts: GradingOptions, source: str, launcher: forkserver.ForkServer | None = None) -> None:
    """Course gradebook and template gradebook both get the assignment (nbgrader
    generate_assignment, forked from ``launcher`` where given), unless they already hold this
    version (``source``) of it; the probes' inputs and answers are made once here, not in every
    submission's process."""
    salt = course_secrets.load(opts.course_root)["probe_salt"]
    verdicts.probe_cache(opts.assignment, verdicts.cache_root(opts.out), salt)
    meta = opts.out / ".autograder" / "template" / opts.assignment
    meta.mkdir(parents=True, exist_ok=True)
    template = meta / "gradebook.db"
    for db_url, stamp, fresh in ((gradebook.sqlite_url(template), meta / "template.stamp", True),
                                 (opts.db_url, meta / "course-gradebook.stamp", False)):
        key = f"{source} {hashlib.sha256(db_url.encode()).hexdigest()}"  # never the URL: it may hold a password
        if stamp.exists() and stamp.read_text() == key and gradebook.has_assignment(db_url, opts.assignment):
            continue
        course_file = db_url.removeprefix("sqlite:///") if db_url.startswith("sqlite:///") else None
        if fresh:  # the template holds the assignment only
            template.unlink(missing_ok=True)
        elif course_file and not Path(course_file).exists():  # a new course gradebook is the template
            shutil.copy(template, course_file)
            stamp.write_text(key)
            continue
        with tempfile.TemporaryDirectory(prefix="autograder-release-") as scratch:
            gradebook.add_assignment(opts.assignment, db_url, Path(scratch) / "course", launcher)
        stamp.write_text(key)


def grade(opts: GradingOptions) -> BatchResult:
    """Grade every submission in ``opts.submissions``; always completes the batch."""
    return grade_batch([opts])


# options that one batch shares: one --out, gradebook, pool of workers and roster
SHARED_OPTIONS = ("out", "db_url", "slots", "progress", "keep_workspaces", "wait", "course_root", "roster", "cluster")


def grade_batch(batch: list[GradingOptions]) -> BatchResult:
    """Grade the submissions of several assignments into one ``--out`` as one batch: one pool
    of workers takes the longest-looking submissions of all of them first (a class's heavy
    assignment does not wait for the light ones to drain), and the gradebook, ``status.csv``,
    ``grades.csv`` and the report are written once. Always completes the batch."""
    started = time.perf_counter()
    first = batch[0]
    for opts in batch:
        mismatched = [name for name in SHARED_OPTIONS if getattr(opts, name) != getattr(first, name)]
        if mismatched:
            raise ValueError(f"one batch shares {', '.join(mismatched)}; {opts.assignment} differs")
        check_parameters(opts.assignment, opts.parameters)
    if len({opts.assignment for opts in batch}) != len(batch):
        raise ValueError("an assignment appears twice in the batch")
    first.out.mkdir(parents=True, exist_ok=True)
    entries = [(opts, submissions.discover(opts.submissions, opts.assignment)) for opts in batch]
    rows = roster.read_roster(first.roster) if first.roster else []  # a bad roster stops the run before it starts
    with exclusive_run(first.out, first.db_url, wait=first.wait):  # one run at a time per --out and gradebook
        gradebook.ensure_schema(first.db_url)  # once, before any grader opens it
        if first.out.resolve() != ROOT.resolve():
            roster.write_formgrader_config(first.out, first.db_url)
        if rows:
            roster.import_roster(first.db_url, rows)
        # the submissions' private course roots: reaped by the next run if this one is killed, unless kept
        label = first.assignment if len(batch) == 1 else "batch"
        scratch = (Path(tempfile.mkdtemp(prefix=f"autograder-{label}-")) if first.keep_workspaces
                   else runtime.new_folder())
        # every nbgrader of the batch is forked from one server, which imports nbgrader while we prepare
        launcher = forkserver.ForkServer(cwd=scratch).start()
        try:
            outcomes, skipped = grade_entries(entries, scratch, launcher)
            write_status_csv(first.out)
            export_grades(first.out, first.db_url, launcher)
        finally:
            launcher.close()
            if not first.keep_workspaces:
                runtime.remove(scratch)
        write_report(read_status_csv(first.out / "status.csv"), first.out / "report.html", first.db_url)
    return BatchResult(outcomes, skipped, time.perf_counter() - started, scratch)


def longest_first(tasks: list[tuple[Task, GradingOptions]], journal: dict) -> list[tuple[Task, GradingOptions]]:
    """The order the pool takes submissions in: what took longest last time first, then
    notebooks with training cells (a solved one trains for minutes), then the larger
    submissions (more of it written). A slow submission started last keeps one worker busy
    while the others idle."""
    training = {opts.assignment: _has_training_cells(opts.assignment) for _, opts in tasks}

    def cost(item: tuple[Task, GradingOptions]) -> tuple[float, bool, int]:
        task, opts = item
        previous = journal.get((opts.assignment, task.student), {}).get("seconds") or 0.0
        return float(previous), training[opts.assignment], submissions.size(task.submission)

    return sorted(tasks, key=cost, reverse=True)


def _has_training_cells(assignment: str) -> bool:
    nb = source_notebook(assignment)
    return any(nbgrader_plugins.TRAINING_TAG in cell.metadata.get("tags", []) for cell in nb.cells)


def make_executor(batch: list[GradingOptions], launcher: forkserver.ForkServer) -> Executor:
    """The local pool on the batch's slots, or with ``cluster`` set, a Dask cluster's workers
    (:mod:`autograder.cluster`), checked for this course's grading rules."""
    first = batch[0]
    if not first.cluster:
        return LocalExecutor(first.slots, launcher=launcher)
    from autograder import cluster

    client, closing = cluster.connect(first.cluster, first.course_root)
    try:
        executor = cluster.ClusterExecutor(client, cluster.batch_bundle(batch), closing)
        for address, why in executor.check_workers(batch).items():
            print(f"autograder: retired {address}: {why}", file=sys.stderr)
    except BaseException:
        for resource in closing:
            resource.close()
        raise
    return executor


def grade_entries(entries: list[tuple[GradingOptions, list[submissions.Submission]]], scratch: Path,
                  launcher: forkserver.ForkServer) -> tuple[list[dict], list[str]]:
    """Grade the entries not graded yet (workspaces in ``scratch``), recording each as it
    ends; returns the outcomes and the students skipped (``assignment/student`` where the
    batch has several assignments)."""
    first = entries[0][0]
    done = read_journal(first.out)
    tasks, skipped, maxima = [], [], {}
    for opts, subs in entries:
        source = source_digest(opts.assignment)
        prepare(opts, source, launcher)
        settings = rules_digest(source, opts.course_root) + json.dumps(opts.parameters, sort_keys=True)
        for sub in subs:
            digest = submissions.fingerprint(sub, settings)
            previous = done.get((opts.assignment, sub.student))
            if (not opts.force and previous and previous.get("digest") == digest and previous["status"] in FINAL
                    and (not previous.get("graded")
                         or gradebook.student_score(opts.db_url, opts.assignment, sub.student))):
                skipped.append(sub.student if len(entries) == 1 else f"{opts.assignment}/{sub.student}")
                continue
            workspace = scratch / f"{len(tasks):04d}-{sub.student}"[:80]
            tasks.append((Task(sub, digest, workspace), opts))
        maxima[opts.assignment] = gradebook.max_scores(opts.db_url, opts.assignment)

    outcomes = []
    several = len(entries) > 1
    desc = f"grading {first.assignment}" if not several else f"grading {len(entries)} assignments"
    bar = tqdm(total=len(tasks), desc=desc, unit="submission", disable=not first.progress,
               file=sys.stderr, dynamic_ncols=True)
    if not tasks:
        return [], skipped
    with bar, make_executor([opts for opts, _ in entries], launcher) as executor:
        running = [executor.submit(process, task, opts) for task, opts in longest_first(tasks, done)]
        options = {id(task): opts for task, opts in tasks}
        for future in as_completed(running):
            task = future.result()
            opts = options[id(task)]
            outcomes.append(record(task, opts, maxima[opts.assignment]))
            line = outcomes[-1]
            who = f"{opts.assignment}/{line['student']}" if several else line["student"]
            bar.write(f"  {who}: {line['status']} {line['score']}/{line['max_score']}"
                      f" in {line['seconds']} s on {line['device']}" + (f" - {line['reason']}" if line["reason"] else ""))
            bar.update(1)
    return outcomes, skipped


def record(task: Task, opts: GradingOptions, maxima: tuple[float, float]) -> dict:
    """Record one finished submission (main thread only: the gradebook's single writer).
    ``maxima``: the assignment's (all, autograded) points."""
    try:
        for step in RECORD_STEPS:
            step(task, opts)
    except Exception:
        task.status, task.graded = "error", False
        task.reason = f"recording failed: {traceback.format_exc().strip().splitlines()[-1]}"
        try:
            gradebook.clear_submission(opts.db_url, opts.assignment, task.student)
        except Exception:
            pass
    score = gradebook.student_score(opts.db_url, opts.assignment, task.student) if task.graded else None
    max_score, auto_max = maxima
    entry = {
        "assignment": opts.assignment, "student": task.student, "status": task.status, "reason": task.reason,
        "score": round(score.score, 3) if score else 0.0, "max_score": max_score,
        "auto_score": round(score.auto_score, 3) if score else 0.0, "auto_max_score": auto_max,
        "needs_manual_grade": bool(score and score.needs_manual_grade),
        "seconds": round(task.seconds, 1), "host": task.host or (HOST if task.slot else ""), "worker": task.worker,
        "device": task.slot.device if task.slot else "",
        "enforcement": task.enforcement,
        "graded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "digest": task.digest, "graded": task.graded,
    }
    append_journal(opts.out, entry)
    write_status_csv(opts.out)
    return entry


def summary_table(rows: list[dict]) -> str:
    """The gradebook as a plain-text table (what ``make demo`` prints)."""
    header = ("assignment", "student", "status", "score", "auto", "seconds", "device", "reason")
    lines = [[r["assignment"], r["student"], r["status"], f"{float(r['score']):g}/{float(r['max_score']):g}",
              f"{float(r['auto_score']):g}/{float(r['auto_max_score']):g}", str(r["seconds"]), r["device"],
              (r["reason"] or "")[:70]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines])
