"""Export: ``grades.csv`` from the course gradebook, by nbgrader's own ``export``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from autograder import gradebook
from autograder.nbgrader_runner import nbgrader_env, run_nbgrader


def export_grades(out: Path, db_url: str, launcher=None) -> Path:
    """``nbgrader export`` of the gradebook at ``db_url`` to ``out/grades.csv``."""
    target = (out / "grades.csv").resolve()
    with tempfile.TemporaryDirectory(prefix="autograder-export-") as scratch:
        course = gradebook.make_course_copy(Path(scratch))
        run_nbgrader(course, "export", f"--to={target}", env=nbgrader_env(course, {"NBGRADER_DB_URL": db_url}),
                     timeout=600, launcher=launcher)
    return target
