"""What the grading steps share: the batch's options, a submission on its way through the
steps (:class:`Task`), and :class:`Verdict`, which ends its steps with a status."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autograder import forkserver, settings, submissions
from autograder.course import ASSIGNMENTS, ROOT, STATUSES
from autograder.slots import Slot


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
    cluster: str | None = None                # a Dask cluster's address (autograder.cluster); None: this machine

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
    host: str = ""             # the machine that graded it (where not this one: a cluster's worker)
    worker: str = ""           # the Dask worker that graded it (autograder.cluster); "" for the local pool

    @property
    def student(self) -> str:
        return self.submission.student
