"""Run: the real ``nbgrader autograde`` and ``generate_feedback`` for one submission, in a
process forked from the batch's fork server (:mod:`autograder.worker`), pinned to the slot's
GPU or CPU share, within the wall-clock limit; its kernel sandboxed (:mod:`autograder.sandbox`)."""

from __future__ import annotations

import json
import time
from concurrent.futures import TimeoutError as WaitTimeout

from autograder import course_secrets, gpus, gradebook, sandbox, verdicts
from autograder.nbgrader_plugins import CELL_TIMEOUT_ENV, PARAMETERS_ENV, TRAINING_TIMEOUT_ENV
from autograder.nbgrader_runner import nbgrader_env
from autograder.rules import parameter_names
from autograder.task import GradingOptions, Task, Verdict
from autograder.worker import FEEDBACK_FAILED

ENFORCEMENTS = ("cgroup-v2", "cgroup-v1", "rlimit", "none")
KERNEL_DIED = ("DeadKernelError", "Kernel died", "kernel became unresponsive", "UnresponsiveKernelError")
# the kernel's messages could not be trusted any more (e.g. forked children writing to its sockets)
KERNEL_CORRUPTED = ("Invalid Signature", "Duplicate Signature")


def worker_env(task: Task, opts: GradingOptions) -> dict[str, str]:
    slot = task.slot
    parameters = dict(opts.parameters)
    if slot.gpu is None and "device" in parameter_names(opts.assignment):
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
        worker.kill()
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
