"""The class roster in the gradebook, and formgrader on a run graded outside the course root.

A roster is nbgrader's CSV (what ``nbgrader db student import`` reads): a header with ``id``
and any of ``first_name``, ``last_name``, ``email``, ``lms_user_id``. Without one, formgrader
lists every student as "None, None".
"""

from __future__ import annotations

import csv
from pathlib import Path

from nbgrader.api import Gradebook

from autograder.course import ROOT
from autograder.nbgrader_runner import alembic_on_path
from autograder.submissions import STUDENT_ID

FIELDS = ("first_name", "last_name", "email", "lms_user_id")


class RosterError(ValueError):
    """The roster cannot be read; the message says which line and why."""


def read_roster(path: Path) -> list[dict[str, str | None]]:
    """The roster's rows as ``{"id": ..., "first_name": ..., ...}`` (empty cells as None)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "id" not in reader.fieldnames:
                raise RosterError(f"{path}: the header must name an 'id' column (and any of {', '.join(FIELDS)})")
            rows, seen = [], set()
            for line, row in enumerate(reader, start=2):
                student = (row.get("id") or "").strip()
                if not STUDENT_ID.match(student):
                    raise RosterError(f"{path}:{line}: {student!r} is not a student id (letters, digits, '_.-')")
                if student in seen:
                    raise RosterError(f"{path}:{line}: student {student!r} is listed twice")
                seen.add(student)
                # only the columns the roster has: a roster without emails leaves the gradebook's as they are
                rows.append({"id": student, **{k: (row.get(k) or "").strip() or None for k in FIELDS
                                               if k in reader.fieldnames}})
            if not rows:
                raise RosterError(f"{path}: no students under the header")
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RosterError(f"{path}: {err}") from err


def import_roster(db_url: str, rows: list[dict[str, str | None]]) -> int:
    """Add or update each student of the roster in the gradebook; returns how many."""
    with alembic_on_path(), Gradebook(db_url) as gb:
        for row in rows:
            gb.update_or_create_student(row["id"], **{k: row[k] for k in FIELDS if k in row})
    return len(rows)


MARKER = "Written by `autograder grade`"


def write_formgrader_config(out: Path, db_url: str) -> Path | None:
    """``out/nbgrader_config.py``: the course's config with ``out`` as the course root, so that
    ``jupyter lab`` started in ``out`` shows this run in formgrader (the assignments' source and
    release stay the course's). A database URL that is not a file is read from
    ``$NBGRADER_DB_URL`` then, so no password is written to disk. A config there that this
    function did not write is left alone (returns None)."""
    out = out.resolve()
    path = out / "nbgrader_config.py"
    if path.exists() and MARKER not in path.read_text(errors="replace"):
        return None
    if db_url.startswith("sqlite:///"):
        db_line = f"c.CourseDirectory.db_url = {'sqlite:///' + str(Path(db_url[len('sqlite:///'):]).resolve())!r}"
    else:
        db_line = ('if not os.environ.get("NBGRADER_DB_URL"):\n'
                   '    raise RuntimeError("this run\'s gradebook is not a file: set NBGRADER_DB_URL to its --db URL")\n'
                   'c.CourseDirectory.db_url = os.environ["NBGRADER_DB_URL"]')
    path.write_text(
        f'"""{MARKER}: `jupyter lab` started in this folder shows this run in\n'
        'formgrader. The course\'s own config, with this folder as the course root."""\n\n'
        "import os\n\n"
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(ROOT / 'nbgrader_config.py')!r})  # noqa: F821\n"
        "c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))\n"
        f"c.CourseDirectory.source_directory = {str(ROOT / 'solutions')!r}\n"
        f"c.CourseDirectory.release_directory = {str(ROOT / 'notebooks')!r}\n"
        f"{db_line}\n"
    )
    return path
