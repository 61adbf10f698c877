"""The course gradebook: one writer, many graders.

nbgrader does not support several ``autograde`` processes on one SQLite gradebook (its
issue #174). So each submission is autograded by real nbgrader against a private copy
of a *template* gradebook that holds only the assignment (no students, no other grades);
the harness's main thread then copies that submission's grades and comments into the
course gradebook, one student at a time, through nbgrader's own API. The course
gradebook has a single writer and every record replaces the student's previous one, so
a re-run never duplicates a grade.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.engine import make_url

from autograder.course import ROOT, SOLUTIONS
from autograder.nbgrader_runner import nbgrader_env, run_nbgrader


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy knows: mask by hand
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def course_db_url(course_root: Path = ROOT) -> str:
    """The gradebook ``nbgrader`` uses from the course root (``CourseDirectory.db_url``)."""
    return os.environ.get("NBGRADER_DB_URL") or sqlite_url(course_root / "gradebook.db")


# pg_advisory_lock's key for making the schema: any 64-bit number all graders agree on ("nbgrader")
SCHEMA_LOCK = int.from_bytes(b"nbgrader", "big") & (2**63 - 1)


def ensure_schema(db_url: str) -> None:
    """Create the gradebook's schema on a database server, once, before any grader opens it:
    nbgrader's first open of an empty PostgreSQL database creates named enum types and its
    course row, and parallel first opens fail with unique violations. The creation runs under a
    transaction-scoped advisory lock, so that one process creates and the others find it made
    (the lock ends with the transaction, also when the creation fails); an older schema is
    upgraded (``nbgrader db upgrade``) under the same lock. An SQLite file has one writer, the
    harness, which makes it as before."""
    from sqlalchemy import create_engine, text

    from autograder.nbgrader_runner import alembic_on_path

    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        return
    engine = create_engine(url)
    try:
        with engine.begin() as conn, alembic_on_path():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            from nbgrader.api import get_alembic_version

            if "alembic_version" in set(conn.dialect.get_table_names(conn)):
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if current != get_alembic_version():
                    _upgrade(db_url)
            with Gradebook(db_url):
                pass
    finally:
        engine.dispose()


def _upgrade(db_url: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autograder-db-upgrade-") as scratch:
        course = make_course_copy(Path(scratch))
        run_nbgrader(course, "db", "upgrade", env=nbgrader_env(course, {"NBGRADER_DB_URL": db_url}), timeout=600)


def make_course_copy(target: Path, assignment: str | None = None) -> Path:
    """A throwaway course root: the course's nbgrader config and, if given, one assignment's source."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", target / "nbgrader_config.py")
    if assignment is not None:
        shutil.copytree(SOLUTIONS / assignment, target / "solutions" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return target


def add_assignment(assignment: str, db_url: str, scratch: Path, launcher=None) -> None:
    """Put the assignment (notebooks, cells, points, hidden tests) into the gradebook at
    ``db_url`` with ``nbgrader generate_assignment`` (forked from ``launcher``, a fork server,
    where given), releasing into ``scratch`` so the committed ``notebooks/`` are left alone."""
    course = make_course_copy(scratch, assignment)
    run_nbgrader(course, "generate_assignment", assignment, "--force",
                 env=nbgrader_env(course, {"NBGRADER_DB_URL": db_url}), timeout=600, launcher=launcher)


def has_assignment(db_url: str, assignment: str) -> bool:
    with Gradebook(db_url) as gb:
        try:
            gb.find_assignment(assignment)
            return True
        except MissingEntry:
            return False


def max_scores(db_url: str, assignment: str) -> tuple[float, float]:
    """(all points, autograded points) of the assignment."""
    with Gradebook(db_url) as gb:
        a = gb.find_assignment(assignment)
        auto = sum(cell.max_score for nb in a.notebooks for cell in nb.grade_cells if cell.cell_type == "code")
        return float(a.max_score), float(auto)


@dataclass
class Score:
    score: float
    max_score: float
    auto_score: float
    auto_max_score: float
    needs_manual_grade: bool


def student_score(db_url: str, assignment: str, student: str) -> Score | None:
    """The student's score for the assignment (None when there is no submission)."""
    with Gradebook(db_url) as gb:
        try:
            sub = gb.find_submission(assignment, student)
        except MissingEntry:
            return None
        grades = [g for nb in sub.notebooks for g in nb.grades]
        code = [g for g in grades if g.cell.cell_type == "code"]
        return Score(float(sub.score), float(sub.max_score), float(sum(g.score for g in code)),
                     float(sum(g.max_score for g in code)), bool(sub.needs_manual_grade))


def copy_submission(source_url: str, target_url: str, assignment: str, student: str) -> None:
    """Replace ``student``'s submission of ``assignment`` in the target gradebook by the one
    in the source gradebook: timestamp, every grade and comment, flags and penalties."""
    clear_submission(target_url, assignment, student)  # its own session: nothing stale is cached
    with Gradebook(source_url) as src, Gradebook(target_url) as dst:
        sub = src.find_submission(assignment, student)
        with warnings.catch_warnings():  # nbgrader's add_submission trips SQLAlchemy 2's autoflush warning
            warnings.simplefilter("ignore", category=Warning)
            dst.add_submission(assignment, student, timestamp=sub.timestamp)
        for nb in sub.notebooks:
            target_nb = dst.find_submission_notebook(nb.name, assignment, student)
            target_nb.flagged = nb.flagged
            target_nb.late_submission_penalty = nb.late_submission_penalty
            for grade in nb.grades:
                g = dst.find_grade(grade.name, nb.name, assignment, student)
                g.auto_score, g.manual_score = grade.auto_score, grade.manual_score
                g.extra_credit, g.needs_manual_grade = grade.extra_credit, grade.needs_manual_grade
            for comment in nb.comments:
                c = dst.find_comment(comment.name, nb.name, assignment, student)
                c.auto_comment, c.manual_comment = comment.auto_comment, comment.manual_comment
        dst.db.commit()


def clear_submission(db_url: str, assignment: str, student: str) -> None:
    """Keep the student in the gradebook with no submission of ``assignment`` (scores 0 in
    ``nbgrader export``): what a submission that could not be graded leaves."""
    with Gradebook(db_url) as gb:
        gb.update_or_create_student(student)
        try:
            gb.remove_submission(assignment, student)
        except MissingEntry:
            pass


def submission_scores(db_url: str, assignment: str) -> dict[str, float]:
    """{student: score} of every submission of ``assignment`` in the gradebook."""
    with Gradebook(db_url) as gb:
        return {s.student.id: float(s.score) for s in gb.find_assignment(assignment).submissions}


def question_results(db_url: str, assignment: str) -> list[dict]:
    """Per autograded test cell: name, points and the share of submissions with full points."""
    rows = []
    with Gradebook(db_url) as gb:
        a = gb.find_assignment(assignment)
        subs = list(a.submissions)
        for nb in a.notebooks:
            for cell in nb.grade_cells:
                if cell.cell_type != "code":
                    continue
                scores = []
                for s in subs:
                    try:
                        scores.append(gb.find_grade(cell.name, nb.name, assignment, s.student.id).score)
                    except MissingEntry:
                        continue
                full = sum(1 for v in scores if v >= cell.max_score)
                rows.append({"notebook": nb.name, "question": cell.name, "points": float(cell.max_score),
                             "submissions": len(scores), "full_points": full,
                             "pass_rate": full / len(scores) if scores else float("nan")})
    return rows
