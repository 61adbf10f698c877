"""Record (main thread only, one submission at a time: the course gradebook's single writer):
the submission's grades into the course gradebook, its files into ``--out``."""

from __future__ import annotations

import shutil
from pathlib import Path

from autograder import gradebook, submissions
from autograder.task import GradingOptions, Task


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



