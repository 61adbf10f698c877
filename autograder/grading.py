"""``autograder grade``: autograde a batch of submissions with nbgrader, in parallel.

Shaped like nbgrader's converters, as lists of small named steps:

* the batch (:func:`grade_batch`): discover the submissions (:mod:`autograder.submissions`)
  → check the pinned parameters → prepare the gradebooks and the probes → hand each
  submission to an executor (:mod:`autograder.executors`) → record each as it ends → export
  ``grades.csv`` → write ``report.html`` (:mod:`autograder.report`);
* per submission, on the executor's slot (:func:`process`, ``SUBMISSION_STEPS``): load and
  validate it → stage a private course root (the course's ``nbgrader_config.py``, a copy of
  the template gradebook, the staged submission) → run the real ``nbgrader autograde`` and
  ``generate_feedback`` in a process of its own, pinned to a CPU share or a GPU → read the
  out-of-kernel checks' record → find the cells interrupted at their timeout;
* per finished submission, in the main thread, one at a time (``RECORD_STEPS``): its grades
  into the course gradebook (:mod:`autograder.gradebook`), its files into ``--out``, a line in
  the journal and ``status.csv`` (:mod:`autograder.journal`).

A step ends a submission early by raising :class:`Verdict`; any other exception is a harness
fault, status ``error``.

Re-running skips what the journal says is done, unless the submission, the grading rules
(the assignment's source and declaration, its probes, course_lib, the checking code) or the
pinned parameters changed, or ``force`` is set. A run killed at any point (even SIGKILL) loses
nothing: a submission counts as done only once its journal line is written, after its
grades are in the gradebook, and recording replaces earlier grades.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import TimeoutError as WaitTimeout
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import psutil
from tqdm.auto import tqdm

from autograder import (
    checks,
    course_secrets,
    forkserver,
    gpus,
    gradebook,
    nbgrader_plugins,
    roster,
    runtime,
    sandbox,
    settings,
    submissions,
    trusted,
    verdicts,
)
from autograder.course import ASSIGNMENTS, ROOT, SOLUTIONS, STATUSES, parameter_names, source_notebook
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
from autograder.nbgrader_plugins import CELL_TIMEOUT_ENV, PARAMETERS_ENV, TRAINING_TIMEOUT_ENV
from autograder.nbgrader_runner import nbgrader_env, run_nbgrader
from autograder.report import write_report
from autograder.slots import Slot, make_slots, parse_gpus  # noqa: F401 (for grading's callers)
from autograder.worker import FEEDBACK_FAILED

FINAL = {"graded", "timeout", "crashed", "invalid"}  # not re-run unless something changed
ENFORCEMENTS = ("cgroup-v2", "cgroup-v1", "rlimit", "none")
KERNEL_DIED = ("DeadKernelError", "Kernel died", "kernel became unresponsive", "UnresponsiveKernelError")
# the kernel's messages could not be trusted any more (e.g. forked children writing to its sockets)
KERNEL_CORRUPTED = ("Invalid Signature", "Duplicate Signature")


class Verdict(Exception):
    """Ends a submission's steps with a status and a one-line reason."""

    def __init__(self, status: str, reason: str):
        assert status in STATUSES
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class GradingOptions:
    assignment: str
    submissions: Path
    out: Path
    db_url: str
    slots: list[Slot]
    timeout: float = settings.default("timeout")  # wall clock per notebook
    cell_timeout: int | None = None           # nbgrader's per-cell timeout (course config otherwise)
    training_timeout: int | None = None       # the same for cells tagged "training"
    parameters: dict[str, object] = field(default_factory=dict)
    force: bool = False
    progress: bool = True
    keep_workspaces: bool = False
    wait: bool = False                        # for another run into the same --out or gradebook
    course_root: Path = ROOT                  # whose secrets grade (the hidden split, the probes' salt)
    roster: Path | None = None                # nbgrader's roster CSV: the students' names for formgrader

    @property
    def notebook(self) -> str:
        return ASSIGNMENTS[self.assignment]


# --------------------------------------------------------------------------- one submission
@dataclass
class Task:
    """A submission on its way through the steps."""

    submission: submissions.Submission
    digest: str
    workspace: Path
    slot: Slot | None = None
    launcher: forkserver.ForkServer | None = None  # the batch's, where the worker is forked
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    status: str = "graded"
    reason: str = ""
    graded: bool = False       # nbgrader produced grades to record
    seconds: float = 0.0
    log: str = ""
    enforcement: str = ""      # how the kernel was limited (ENFORCEMENTS)
    violation: str = ""        # the last limit the kernel hit

    @property
    def student(self) -> str:
        return self.submission.student


def load_submission(task: Task, opts: GradingOptions) -> None:
    """Read and validate the submission (student id, files, notebook JSON)."""
    try:
        task.files = submissions.load(task.submission, opts.notebook)
    except submissions.InvalidSubmission as err:
        raise Verdict("invalid", str(err)) from None


def stage_workspace(task: Task, opts: GradingOptions) -> None:
    """A private course root: config, a fresh copy of the template gradebook, the submission."""
    ws = task.workspace
    gradebook.make_course_copy(ws)
    shutil.copy(opts.out / ".autograder" / "template" / opts.assignment / "gradebook.db", ws / "gradebook.db")
    submissions.stage(task.files, ws / "submitted" / task.student / opts.assignment)


def _kill_tree(worker: forkserver.Worker) -> None:
    """Kill nbgrader and everything it started (kernels run in sessions of their own)."""
    try:
        family = psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    worker.wait()


def worker_env(task: Task, opts: GradingOptions) -> dict[str, str]:
    slot = task.slot
    parameters = dict(opts.parameters)
    if slot.gpu is None and "device" in _parameter_names(opts.assignment):
        parameters.setdefault("device", "cpu")  # --gpus none means CPU, also where MPS exists
    extra = {
        "NBGRADER_DB_URL": gradebook.sqlite_url(task.workspace / "gradebook.db"),
        PARAMETERS_ENV: json.dumps(parameters),
        **gpus.kernel_environment(slot.gpu),  # the GPU by UUID; PCI bus order for indices
        "OMP_NUM_THREADS": str(slot.threads),
        "MKL_NUM_THREADS": str(slot.threads),
        "PYTHONDONTWRITEBYTECODE": "1",
        sandbox.REPORT_ENV: str(task.workspace / "sandbox-report.jsonl"),
        verdicts.CACHE_ENV: str(verdicts.cache_root(opts.out)),
        course_secrets.SECRETS_ENV: str(course_secrets.secrets_path(opts.course_root)),
    }
    if opts.cell_timeout:
        extra[CELL_TIMEOUT_ENV] = str(int(opts.cell_timeout))
    if opts.training_timeout:
        extra[TRAINING_TIMEOUT_ENV] = str(int(opts.training_timeout))
    return nbgrader_env(task.workspace, extra)


def _last_error(log: str) -> str:
    errors = [line.strip() for line in log.splitlines() if "[ERROR]" in line or "Error:" in line]
    return errors[-1] if errors else "see its log"


def run_autograde(task: Task, opts: GradingOptions) -> None:
    """``nbgrader autograde`` and ``generate_feedback`` for the student in the workspace
    (:mod:`autograder.worker`, forked by the batch's :mod:`autograder.forkserver`), within
    the wall-clock limit."""
    log_path = task.workspace / "autograde.log"
    started = time.perf_counter()
    worker = task.launcher.run([opts.assignment, task.student], task.workspace, worker_env(task, opts), log_path)
    try:
        returncode = worker.wait(timeout=opts.timeout)
    except WaitTimeout:
        _kill_tree(worker)
        raise Verdict("timeout", f"stopped after the {opts.timeout:g} s limit for the whole notebook") from None
    finally:
        task.seconds = time.perf_counter() - started
        read_sandbox_report(task)
    task.log = log_path.read_text(errors="replace")[-20_000:]
    violation = task.violation
    if returncode == FEEDBACK_FAILED:
        task.reason = f"feedback not generated: {_last_error(task.log)}"
    elif returncode != 0:
        if any(marker in task.log for marker in KERNEL_DIED):
            raise Verdict("crashed", f"the kernel was stopped: {violation}" if violation else
                          "the kernel died while running the notebook (e.g. os._exit, a segfault or out of memory)")
        if any(marker in task.log for marker in KERNEL_CORRUPTED):
            raise Verdict("crashed", "the kernel corrupted its channel to nbgrader (e.g. forked processes "
                          f"writing to it): {_last_error(task.log)}")
        raise Verdict("error", f"nbgrader autograde failed (exit {returncode}): {_last_error(task.log)}")
    if not (task.workspace / "autograded" / task.student / opts.assignment / opts.notebook).is_file():
        raise Verdict("error", "nbgrader autograde wrote no graded notebook")
    task.graded = True
    if violation:
        task.reason = "; ".join(r for r in (task.reason, f"sandbox: {violation}") if r)


def read_sandbox_report(task: Task) -> None:
    """How the sandbox limited the kernel, and the last limit it hit (the kernel manager's report)."""
    events = sandbox.read_reports(task.workspace / "sandbox-report.jsonl")
    kinds = {e["enforcement"] for e in events if e.get("enforcement") in ENFORCEMENTS}
    # the weakest enforcement any kernel of the submission had
    task.enforcement = next((k for k in reversed(ENFORCEMENTS) if k in kinds), "")
    violations = [str(e["violation"]) for e in events if e.get("violation")]
    task.violation = violations[-1] if violations else ""


def check_record(task: Task, opts: GradingOptions) -> None:
    """Read the out-of-kernel checks' record (:mod:`autograder.checks`) from the graded
    notebook: its notes go into the reason; a missing or incomplete record, or a check that
    could not complete, makes the status ``error`` (the guarded cells have no points either way)."""
    nb = nbformat.read(task.workspace / "autograded" / task.student / opts.assignment / opts.notebook, as_version=4)
    record = nb.metadata.get("autograder", {}).get("checks")
    notes = [f"trusted: {note}" for note in (record or {}).get("notes", [])]
    task.reason = "; ".join([r for r in (task.reason,) if r] + notes)
    if not isinstance(record, dict) or record.get("complete") is not True:
        why = (record or {}).get("error") or "no record of it in the graded notebook"
        raise Verdict("error", f"the out-of-kernel check failed ({why}): its cells get no points")
    failed = sorted(g for g, cell in record.get("cells", {}).items() if cell.get("check_failed"))
    if failed:
        reason = record["cells"][failed[0]].get("reason", "")
        raise Verdict("error", f"the out-of-kernel check of {', '.join(failed)} failed ({reason}): no points for them")


def find_cell_timeouts(task: Task, opts: GradingOptions) -> None:
    """Cells that nbgrader interrupted at their timeout: the rest was graded, status ``timeout``."""
    nb = nbformat.read(task.workspace / "autograded" / task.student / opts.assignment / opts.notebook, as_version=4)
    slow = [f"cell {i}" + (f" ({cell.metadata['nbgrader']['grade_id']})" if "nbgrader" in cell.metadata else "")
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and any(o.get("output_type") == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs)]
    if slow:
        cells = ", ".join(slow)
        raise Verdict("timeout", f"{cells} ran past the per-cell timeout and was interrupted; the other cells were graded")


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


# --------------------------------------------------------------------------- recording (main thread)
def record_gradebook(task: Task, opts: GradingOptions) -> None:
    if task.graded:
        gradebook.copy_submission(gradebook.sqlite_url(task.workspace / "gradebook.db"), opts.db_url,
                                  opts.assignment, task.student)
    else:
        gradebook.clear_submission(opts.db_url, opts.assignment, task.student)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def collect_files(task: Task, opts: GradingOptions) -> None:
    """The staged submission, the graded notebook and the feedback into --out, nbgrader's
    layout: regular files only (nothing that could be a link is followed)."""
    for step in ("submitted", "autograded", "feedback"):
        target = opts.out / step / task.student / opts.assignment
        source = task.workspace / step / task.student / opts.assignment
        if step == "submitted" and _inside(target, opts.submissions):
            continue  # graded where nbgrader collected it: the student's files stay as they came
        if target.exists():
            shutil.rmtree(target)
        if source.is_dir() and (task.graded or step == "submitted"):
            for path in sorted(source.rglob("*")):
                if submissions.is_regular_file(path):
                    (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target / path.relative_to(source), follow_symlinks=False)


RECORD_STEPS: list[Callable[[Task, GradingOptions], None]] = [record_gradebook, collect_files]


# --------------------------------------------------------------------------- the batch
def source_digest(assignment: str) -> str:
    """Fingerprint of the assignment's source notebook (tests, points, hidden tests)."""
    return hashlib.sha256((SOLUTIONS / assignment / ASSIGNMENTS[assignment]).read_bytes()).hexdigest()


# the code that decides and shows a grade: a change to it re-grades (and re-writes the feedback of) everyone
RULES_MODULES = (verdicts, trusted, checks, sandbox, nbgrader_plugins)


def rules_digest(source: str, course_root: Path = ROOT) -> str:
    """Fingerprint of everything that decides a grade besides the submission: the source
    notebook (``source``), the probes and their answers (course_lib, torch, numpy), the
    installation's secrets (by digest) and the code that checks them. A re-run re-grades
    everyone when it changes."""
    digest = hashlib.sha256(f"{source} {verdicts.answers_version()} {course_secrets.fingerprint(course_root)}".encode())
    for path in [*(Path(m.__file__) for m in RULES_MODULES), course_root / "nbgrader_config.py"]:
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def _parameter_names(assignment: str) -> list[str]:
    return parameter_names(source_notebook(assignment))


def check_parameters(assignment: str, parameters: dict[str, object]) -> None:
    """Every pinned name must be a parameter of the assignment's notebook."""
    known = _parameter_names(assignment)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not parameters of {assignment}; it has {', '.join(sorted(known))}")


@dataclass
class BatchResult:
    outcomes: list[dict]
    skipped: list[str]
    seconds: float
    scratch: Path  # the submissions' private course roots (removed unless keep_workspaces)


def prepare(opts: GradingOptions, source: str) -> None:
    """Course gradebook and template gradebook both get the assignment (nbgrader
    generate_assignment), unless they already hold this version (``source``) of it; the
    probes' inputs and answers are made once here, not in every submission's process."""
    salt = course_secrets.load(opts.course_root)["probe_salt"]
    verdicts.probe_cache(opts.assignment, verdicts.cache_root(opts.out), salt)
    meta = opts.out / ".autograder" / "template" / opts.assignment
    meta.mkdir(parents=True, exist_ok=True)
    template = meta / "gradebook.db"
    for db_url, stamp, fresh in ((gradebook.sqlite_url(template), meta / "template.stamp", True),
                                 (opts.db_url, meta / "course-gradebook.stamp", False)):
        key = f"{source} {db_url}"
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
            gradebook.add_assignment(opts.assignment, db_url, Path(scratch) / "course")
        stamp.write_text(key)


def grade(opts: GradingOptions) -> BatchResult:
    """Grade every submission in ``opts.submissions``; always completes the batch."""
    return grade_batch([opts])


# options that one batch shares: one --out, gradebook, pool of workers and roster
SHARED_OPTIONS = ("out", "db_url", "slots", "progress", "keep_workspaces", "wait", "course_root", "roster")


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
        if first.out.resolve() != ROOT.resolve():
            roster.write_formgrader_config(first.out, first.db_url)
        if rows:
            roster.import_roster(first.db_url, rows)
        # the submissions' private course roots: reaped by the next run if this one is killed, unless kept
        label = first.assignment if len(batch) == 1 else "batch"
        scratch = (Path(tempfile.mkdtemp(prefix=f"autograder-{label}-")) if first.keep_workspaces
                   else runtime.new_folder())
        executor = LocalExecutor(first.slots, cwd=scratch)  # its fork server imports nbgrader while we prepare
        try:
            outcomes, skipped = grade_entries(entries, scratch, executor)
        finally:
            executor.close()
            write_status_csv(first.out)
            if not first.keep_workspaces:
                runtime.remove(scratch)
        export_grades(first.out, first.db_url)
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


def grade_entries(entries: list[tuple[GradingOptions, list[submissions.Submission]]], scratch: Path,
                  executor: Executor) -> tuple[list[dict], list[str]]:
    """Grade the entries not graded yet (workspaces in ``scratch``), recording each as it
    ends; returns the outcomes and the students skipped (``assignment/student`` where the
    batch has several assignments)."""
    first = entries[0][0]
    done = read_journal(first.out)
    tasks, skipped, maxima = [], [], {}
    for opts, subs in entries:
        source = source_digest(opts.assignment)
        prepare(opts, source)
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
    with bar:
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
        "seconds": round(task.seconds, 1), "device": task.slot.device if task.slot else "",
        "enforcement": task.enforcement,
        "graded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "digest": task.digest, "graded": task.graded,
    }
    append_journal(opts.out, entry)
    write_status_csv(opts.out)
    return entry


def export_grades(out: Path, db_url: str) -> Path:
    """``nbgrader export`` of the gradebook at ``db_url`` to ``out/grades.csv``."""
    target = (out / "grades.csv").resolve()
    with tempfile.TemporaryDirectory(prefix="autograder-export-") as scratch:
        course = gradebook.make_course_copy(Path(scratch))
        run_nbgrader(course, "export", f"--to={target}", env=nbgrader_env(course, {"NBGRADER_DB_URL": db_url}),
                     timeout=600)
    return target


def summary_table(rows: list[dict]) -> str:
    """The gradebook as a plain-text table (what ``make demo`` prints)."""
    header = ("assignment", "student", "status", "score", "auto", "seconds", "device", "reason")
    lines = [[r["assignment"], r["student"], r["status"], f"{float(r['score']):g}/{float(r['max_score']):g}",
              f"{float(r['auto_score']):g}/{float(r['auto_max_score']):g}", str(r["seconds"]), r["device"],
              (r["reason"] or "")[:70]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines])
