"""Validate: read the submission and check it (student id, files, notebook JSON)."""

from __future__ import annotations

from autograder import submissions
from autograder.task import GradingOptions, Task, Verdict


def load_submission(task: Task, opts: GradingOptions) -> None:
    """Read and validate the submission (student id, files, notebook JSON), unless it was read
    already: a cluster's client reads it where the submissions are (:mod:`autograder.cluster`)."""
    if task.files:
        return
    try:
        task.files = submissions.load(task.submission, opts.notebook)
    except submissions.InvalidSubmission as err:
        raise Verdict("invalid", str(err)) from None
