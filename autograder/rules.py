"""What decides a grade besides the submission, as fingerprints: a re-run re-grades a
submission when they change; and the parameters a grader may pin."""

from __future__ import annotations

import hashlib
from pathlib import Path

from autograder import checks, course, course_secrets, nbgrader_plugins, sandbox, trusted, verdicts
from autograder.course import ASSIGNMENTS, ROOT, SOLUTIONS, source_notebook


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


def parameter_names(assignment: str) -> list[str]:
    """The names of the assignment's parameters cell: what a grader may pin."""
    return course.parameter_names(source_notebook(assignment))


def check_parameters(assignment: str, parameters: dict[str, object]) -> None:
    """Every pinned name must be a parameter of the assignment's notebook."""
    known = parameter_names(assignment)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not parameters of {assignment}; it has {', '.join(sorted(known))}")
