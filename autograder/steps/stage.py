"""Stage: a private course root for one submission (nbgrader's layout), so that submissions
graded side by side never share a gradebook or a folder."""

from __future__ import annotations

import shutil

from autograder import gradebook, submissions
from autograder.task import GradingOptions, Task


def stage_workspace(task: Task, opts: GradingOptions) -> None:
    """A private course root: config, a fresh copy of the template gradebook, the submission."""
    ws = task.workspace
    gradebook.make_course_copy(ws)
    shutil.copy(opts.out / ".autograder" / "template" / opts.assignment / "gradebook.db", ws / "gradebook.db")
    submissions.stage(task.files, ws / "submitted" / task.student / opts.assignment)
