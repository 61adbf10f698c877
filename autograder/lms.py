"""Submissions in from, and grades out to, a learning management system.

``autograder collect ASSIGNMENT ZIP --lms canvas|moodle|blackboard|nbgrader`` turns an LMS's
bulk download into nbgrader's ``submitted/<student>/<assignment>/`` layout, which
``autograder grade ASSIGNMENT submitted`` takes. Each LMS names files its own way:

* Canvas: ``<name>_<userid>_<submissionid>_<file>``, ``<name>_LATE_<userid>_...`` for a late
  one, and ``<file>-<n>.<ext>`` for the n-th resubmission of ``<file>.<ext>``;
* Moodle: a folder (or a name prefix) per participant,
  ``<Full Name>_<participantid>_assignsubmission_file_/<file>``; Moodle keeps the latest
  submission only, and stores each file's upload time in the zip;
* Blackboard: ``<assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file>``, and a receipt
  ``<assignment>_<username>_attempt_<date>.txt`` per attempt;
* nbgrader: ``[submitted/]<student>/<assignment>/<file>``.

A zip inside a student's files is unpacked in its place. The latest resubmission is kept
(Canvas's resubmission number, Blackboard's attempt date); late ones are flagged (Canvas's
marker, or the time against ``--due``) and their time is written to nbgrader's
``timestamp.txt``, from which nbgrader computes its late penalty. An optional roster, the
LMS's gradebook export, maps the LMS's ids to student ids. Every file of the download gets a
line in ``collect-<assignment>.csv`` beside the submissions folder (collected, superseded, receipt, unmatched, ambiguous, ...): nothing
is dropped silently.

``autograder export --format canvas --roster ROSTER`` writes the grades as a CSV that Canvas's
gradebook import accepts (:func:`canvas_csv`), and every autograded and manual question's
points in ``grades-by-question.csv`` (:func:`question_csv`).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from autograder.submissions import MAX_FILE_BYTES, MAX_SUBMISSION_BYTES, STUDENT_ID

LMS_NAMES = ("canvas", "moodle", "blackboard", "nbgrader")
REPORT_COLUMNS = ("file", "status", "student", "lms_user", "name", "late", "submitted_at", "reason")
IGNORED = re.compile(r"(^|/)(__MACOSX|\.DS_Store|\.ipynb_checkpoints)(/|$)")
MAX_NESTING = 2  # a zip in a zip in the download


class CollectError(ValueError):
    """The download or the roster cannot be read at all; the message says why."""


@dataclass
class Entry:
    """One file of a download, as its LMS named it."""

    member: str                     # its path in the download
    lms_user: str = ""              # the LMS's id of the student
    name: str = ""                  # the student's name as the LMS wrote it
    filename: str = ""              # the file's own name (a resubmission's suffix removed)
    attempt: tuple = ()             # orders a student's attempts (Blackboard's dates): the latest is kept
    version: tuple = ()             # orders uploads of one file name (Canvas's -N suffix): the latest is kept
    late: bool | None = None        # None: the LMS does not say
    submitted_at: datetime | None = None
    kind: str = "file"              # "file" or "receipt"
    data: bytes = field(default=b"", repr=False)


# --------------------------------------------------------------------------- file names per LMS
CANVAS = re.compile(r"^(?P<name>[^_/]+?)_(?:(?P<late>LATE)_)?(?P<user>\d+)_(?P<attachment>\d+)_(?P<file>.+)$")
# Canvas renames an upload whose name the student used before: file-1.ext, file-2.ext, ... and after
# 8 of them file-<uuid>.ext
CANVAS_RENAMED = re.compile(r"^(?P<stem>.+)-(?P<n>\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                            r"(?P<ext>\.[^.]+)$")
MOODLE = re.compile(r"^(?P<name>.+)_(?P<user>\d+)_assignsubmission_(?:file|onlinetext)_(?P<rest>.*)$")
BLACKBOARD = re.compile(r"^(?P<assignment>.+?)_(?P<user>[A-Za-z0-9.@-]+)_attempt_"
                        r"(?P<date>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})(?:_(?P<file>.+)|\.txt)$")


def parse_canvas(member: str, info: zipfile.ZipInfo, notebook: str, users: set[str]) -> Entry | None:
    """Canvas's download holds each student's latest submission; a notebook renamed by Canvas
    (``dice_iou-1.ipynb``: the student had uploaded a file of that name before) is the notebook,
    and of several the one uploaded last is kept."""
    match = CANVAS.match(PurePosixPath(member).name)
    if not match:
        return None
    filename, version = match["file"], (0, 0)
    renamed = CANVAS_RENAMED.match(filename)
    if renamed and renamed["stem"] + renamed["ext"] == notebook:
        n = renamed["n"]
        filename, version = notebook, ((1, int(n)) if n.isdigit() else (2, 0))  # the uuid comes after -8
    return Entry(member, match["user"], match["name"], filename, version=version, late=bool(match["late"]))


def parse_moodle(member: str, info: zipfile.ZipInfo, notebook: str, users: set[str]) -> Entry | None:
    first, _, rest = member.partition("/")
    match = MOODLE.match(first)
    if not match:
        return None
    filename = rest if rest else match["rest"]  # a folder per participant, or a prefix per file
    if not filename:
        return None
    # Moodle stores each file's upload time as the member's time (the server's local time: --lms-timezone)
    return Entry(member, match["user"], match["name"], filename, submitted_at=datetime(*info.date_time))


def parse_blackboard(member: str, info: zipfile.ZipInfo, notebook: str, users: set[str]) -> Entry | None:
    """A username may hold ``_``: with a roster, the username is the roster's that the name
    spells out before ``_attempt_`` (the longest); without one, the part before it with no ``_``."""
    match = BLACKBOARD.match(PurePosixPath(member).name)
    if not match:
        return None
    user = match["user"]
    head = PurePosixPath(member).name.split("_attempt_")[0]
    spelled = [u for u in users if head.endswith("_" + u)]
    if spelled:
        user = max(spelled, key=len)
    when = datetime.strptime(match["date"], "%Y-%m-%d-%H-%M-%S")  # the server's local time: --lms-timezone
    if not match["file"]:
        return Entry(member, user, "", "", (when,), submitted_at=when, kind="receipt")
    return Entry(member, user, "", match["file"], (when,), submitted_at=when)


NBGRADER_TIME = "%Y-%m-%d %H:%M:%S.%f %Z"


def parse_nbgrader(assignment: str):
    def parse(member: str, info: zipfile.ZipInfo, notebook: str, users: set[str]) -> Entry | None:
        parts = PurePosixPath(member).parts
        if parts and parts[0] == "submitted":
            parts = parts[1:]
        if len(parts) < 3 or parts[1] != assignment:
            return None
        return Entry(member, parts[0], "", "/".join(parts[2:]))
    return parse


def _nbgrader_time(data: bytes) -> datetime | None:
    """The time in nbgrader's ``timestamp.txt`` (UTC), or None when it is not one."""
    text = data.decode(errors="replace").strip()
    for fmt in (NBGRADER_TIME, "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text.replace(" UTC", "") if "%Z" not in fmt else text, fmt).replace(tzinfo=None)
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------- rosters
def read_lms_roster(path: Path, lms: str) -> dict[str, str]:
    """{LMS id: student id} from the LMS's gradebook export (Canvas: ID -> SIS Login ID, else SIS
    User ID; Moodle: Identifier's participant number -> ID number, else the email's user part;
    Blackboard: Username -> Username; nbgrader's roster: id -> id)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CollectError(f"roster {path}: {err}") from err
    mapping: dict[str, str] = {}
    for row in rows:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if lms == "canvas":
            if row.get("Student", "").strip() in ("Points Possible", "Student, Test") or not row.get("ID"):
                continue
            lms_id, student = row["ID"], row.get("SIS Login ID") or row.get("SIS User ID") or ""
        elif lms == "moodle":
            number = re.search(r"(\d+)", row.get("Identifier", ""))
            if not number:
                continue
            email = row.get("Email address", "")
            lms_id, student = number.group(1), row.get("ID number") or email.partition("@")[0]
        elif lms == "blackboard":
            lms_id = student = row.get("Username", "")
        else:
            lms_id = student = row.get("id", "")
        if lms_id:
            mapping[lms_id] = student
    if not mapping:
        raise CollectError(f"roster {path}: no students found (is it {lms}'s gradebook export?)")
    return mapping


# --------------------------------------------------------------------------- collect
@dataclass
class Collected:
    rows: list[dict]               # the report's rows, a file of the download each
    students: dict[str, Path]      # student -> its folder under submitted/
    report: Path                   # collect-<assignment>.csv beside the submissions folder

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)


def _members(archive: zipfile.ZipFile):
    """(path, ZipInfo, bytes or None when too large) of every file of the download."""
    for info in archive.infolist():
        if info.is_dir() or IGNORED.search(info.filename):
            continue
        yield info.filename, info, (archive.read(info) if info.file_size <= MAX_SUBMISSION_BYTES else None)


def _unpacked(data: bytes, depth: int = 1) -> list[tuple[str, bytes]] | str:
    """A student's zip, as (relative path, bytes) of its files; or why it cannot be."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
        files, total = [], 0
        for info in inner.infolist():
            if info.is_dir() or IGNORED.search(info.filename):
                continue
            path = PurePosixPath(info.filename)
            if path.is_absolute() or ".." in path.parts:
                return f"its zip holds a path that leaves it: {info.filename}"
            total += info.file_size
            if info.file_size > MAX_FILE_BYTES or total > MAX_SUBMISSION_BYTES:
                return "its zip unpacks past the size limit"
            content = inner.read(info)
            if info.filename.lower().endswith(".zip") and depth < MAX_NESTING:
                nested = _unpacked(content, depth + 1)
                if isinstance(nested, str):
                    return nested
                files += [(str(path.parent / name) if str(path.parent) != "." else name, d) for name, d in nested]
            else:
                files.append((info.filename, content))
        return files
    except (zipfile.BadZipFile, OSError, RuntimeError) as err:
        return f"a broken zip ({err})"


def collect(assignment: str, notebook: str, download: Path, lms: str, out: Path, roster: Path | None = None,
            due: datetime | None = None, lms_timezone: str = "UTC") -> Collected:
    """The download into ``out/<student>/<assignment>/`` (nbgrader's submitted/ layout) and its
    report (:func:`report_file`); see the module's docstring. ``due`` is UTC; the times the LMS
    wrote are in ``lms_timezone`` (its server's zone)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if lms not in LMS_NAMES:
        raise CollectError(f"--lms: one of {', '.join(LMS_NAMES)}, not {lms!r}")
    try:
        zone = ZoneInfo(lms_timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise CollectError(f"--lms-timezone: {lms_timezone!r} is not a time zone (like Europe/Berlin)") from err
    parse = {"canvas": parse_canvas, "moodle": parse_moodle, "blackboard": parse_blackboard,
             "nbgrader": parse_nbgrader(assignment)}[lms]
    mapping = read_lms_roster(roster, lms) if roster else None
    users = set(mapping or ())
    try:
        archive = zipfile.ZipFile(download)
    except (zipfile.BadZipFile, OSError) as err:
        raise CollectError(f"{download}: not a zip ({err})") from err
    rows: list[dict] = []
    entries: list[Entry] = []

    def report(entry: Entry, status: str, student: str = "", reason: str = "") -> None:
        rows.append({"file": entry.member, "status": status, "student": student, "lms_user": entry.lms_user,
                     "name": entry.name, "late": "" if entry.late is None else ("yes" if entry.late else "no"),
                     "submitted_at": entry.submitted_at.isoformat(sep=" ") if entry.submitted_at else "",
                     "reason": reason})

    with archive:
        for member, info, data in _members(archive):
            entry = parse(member, info, notebook, users)
            if entry is None:
                report(Entry(member), "unmatched", reason=f"not a {lms} submission's file name")
                continue
            if data is None:
                report(entry, "refused", reason="larger than a whole submission may be")
                continue
            entry.data = data
            if entry.submitted_at is not None:  # the LMS's local time, in UTC
                entry.submitted_at = entry.submitted_at.replace(tzinfo=zone).astimezone(timezone.utc).replace(tzinfo=None)
            entries.append(entry)
    if lms == "nbgrader":  # nbgrader's own record of the hand-in time dates the student's files
        stamps = {e.lms_user: _nbgrader_time(e.data) for e in entries if e.filename == "timestamp.txt"}
        for entry in entries:
            entry.submitted_at = stamps.get(entry.lms_user) or entry.submitted_at
    for entry in entries:
        if due is not None and entry.submitted_at is not None:
            entry.late = entry.submitted_at > due
    # each LMS id to a student id
    by_student: dict[str, list[Entry]] = {}
    for entry in entries:
        student = entry.lms_user
        if mapping is not None:
            if entry.lms_user not in mapping:
                report(entry, "unmatched", reason=f"{lms} user {entry.lms_user} is not in the roster")
                continue
            student = mapping[entry.lms_user]
        if not STUDENT_ID.match(student):
            report(entry, "unmatched", reason=f"{student!r} is not a student id (letters, digits, '_.-')")
            continue
        by_student.setdefault(student, []).append(entry)
    students: dict[str, Path] = {}
    for student, own in sorted(by_student.items()):
        users = {e.lms_user for e in own}  # the roster gives one student two accounts, and both handed in
        if len(users) > 1:
            for entry in own:
                report(entry, "ambiguous", student, f"{len(users)} {lms} users map to student {student}")
            continue
        receipts = [e for e in own if e.kind == "receipt"]
        files = [e for e in own if e.kind == "file"]
        latest = max((e.attempt for e in files), default=())  # the latest attempt's files
        newest = {}  # and of each file name, the last upload
        for entry in files:
            if entry.attempt == latest:
                newest[entry.filename] = max(newest.get(entry.filename, entry.version), entry.version)
        kept = [e for e in files if e.attempt == latest and e.version == newest[e.filename]]
        for entry in receipts:
            report(entry, "receipt", student, "the LMS's record of an attempt, not a file")
        for entry in files:
            if entry not in kept:
                report(entry, "superseded", student, "a later attempt is kept" if entry.attempt != latest
                       else f"a later upload of {entry.filename} is kept")
        target = out / student / assignment
        names: dict[str, Entry] = {}
        staged: list[tuple[str, bytes, Entry]] = []
        problem = ""
        for entry in kept:
            if entry.filename.lower().endswith(".zip"):
                unpacked = _unpacked(entry.data)
                if isinstance(unpacked, str):
                    problem = f"{entry.member}: {unpacked}"
                    break
                staged += [(name, data, entry) for name, data in unpacked]
            else:
                staged.append((entry.filename, entry.data, entry))
        if not problem:
            for name, _, entry in staged:
                path = PurePosixPath(name)
                if path.is_absolute() or ".." in path.parts:
                    problem = f"{entry.member}: a path that leaves the submission"
                elif name in names and names[name] is not entry:
                    problem = f"two files named {name} ({names[name].member}, {entry.member})"
                names.setdefault(name, entry)
        if problem:
            for entry in kept:
                report(entry, "ambiguous", student, problem)
            continue
        if target.exists():
            shutil.rmtree(target)
        for name, data, _ in staged:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
        times = [e.submitted_at for e in kept if e.submitted_at]
        if times:  # nbgrader's record of when it was handed in: its late penalty reads it
            (target / "timestamp.txt").write_text(max(times).strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
        for entry in kept:
            report(entry, "collected", student)
        students[student] = target
    out.mkdir(parents=True, exist_ok=True)
    report_path = report_file(out, assignment)
    with open(report_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["status"] != "collected", r["student"], r["file"])))
    return Collected(rows, students, report_path)


def report_file(out: Path, assignment: str) -> Path:
    """Beside the submissions folder, not in it (where it would be taken for a student's entry)."""
    return out.parent / f"collect-{assignment}.csv"


def parse_due(text: str) -> datetime:
    """``--due``: an ISO date and time (UTC unless it says otherwise), compared in UTC; a date
    alone means the end of that day."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as err:
        raise CollectError(f"--due: expected an ISO date like 2026-12-01T23:59, got {text!r}") from err
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        value = value.replace(hour=23, minute=59, second=59, microsecond=999999)
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


# --------------------------------------------------------------------------- grades out
def _canvas_column(header: list[str], assignment: str, title: str) -> str | None:
    """The roster's column of the assignment: Canvas names it 'Title (id)'."""
    for column in header:
        name = re.sub(r"\s*\(\d+\)\s*$", "", column).strip().lower()
        if name in (assignment.lower(), title.lower()):
            return column
    return None


CANVAS_FIXED = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


@dataclass
class CanvasExport:
    path: Path
    not_in_roster: list[str]      # students of the gradebook the roster lacks: not exported
    pending: list[str]            # assignment/student with manual grading left: cells left empty


def canvas_csv(db_url: str, roster: Path, target: Path, columns: dict[str, str] | None = None) -> CanvasExport:
    """A CSV that Canvas's gradebook import takes: Canvas's own columns from its gradebook
    export (``roster``), a "Points Possible" row, and a column per assignment of the gradebook:
    the export's column named after the assignment (Canvas writes "Title (id)"), or the one
    ``columns`` names for it, so that Canvas updates that one; else a new column, which Canvas
    offers to create. A student is matched by SIS Login ID, SIS User ID or Canvas ID (what
    ``collect`` used without a roster). A score is nbgrader's, less its late penalty; a
    submission with manual grading left, or none, gets an empty cell, which Canvas leaves as it was."""
    from nbgrader.api import Gradebook

    try:
        with open(roster, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CollectError(f"roster {roster}: {err}") from err
    missing = [c for c in ("Student", "ID") if c not in header]
    if missing:
        raise CollectError(f"roster {roster}: not Canvas's gradebook export (no {', '.join(missing)} column)")
    students = [r for r in rows if r.get("Student", "").strip() not in ("Points Possible", "") and r.get("ID")]
    columns = columns or {}
    unknown = [c for c in columns.values() if c not in header]
    if unknown:
        raise CollectError(f"roster {roster}: no column {', '.join(map(repr, unknown))}")
    names, points, scores, pending, graded = [], [], [], [], set()
    with Gradebook(db_url) as gb:
        for a in sorted(gb.assignments, key=lambda a: a.name):
            names.append(columns.get(a.name) or _canvas_column(header, a.name, a.name) or a.name)
            points.append(f"{a.max_score:g}")
            final = {}
            for sub in a.submissions:
                graded.add(sub.student.id)
                if sub.needs_manual_grade:
                    pending.append(f"{a.name}/{sub.student.id}")
                else:
                    final[sub.student.id] = sub.score - (sub.late_submission_penalty or 0.0)
            scores.append(final)
    fixed = [c for c in CANVAS_FIXED if c in header]
    matched = set()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow([*fixed, *names])
        writer.writerow(["    Points Possible", *[""] * (len(fixed) - 1), *points])
        for row in students:
            ids = [row.get(c, "").strip() for c in ("SIS Login ID", "SIS User ID", "ID")]
            student = next((i for i in ids if i and i in graded), "")
            matched.add(student)
            cells = [f"{by[student]:g}" if student in by else "" for by in scores]
            writer.writerow([row.get(c, "") for c in fixed] + cells)
    return CanvasExport(target, sorted(graded - matched), sorted(pending))


def question_csv(db_url: str, target: Path) -> Path:
    """Every student's points per question (autograded tests and manually graded answers)."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb, open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["assignment", "student", "notebook", "question", "kind", "score", "max_score",
                         "needs_manual_grade"])
        for a in sorted(gb.assignments, key=lambda a: a.name):
            for sub in sorted(a.submissions, key=lambda s: s.student.id):
                for nb in sorted(sub.notebooks, key=lambda n: n.name):
                    for grade in sorted(nb.grades, key=lambda g: g.name):
                        kind = "autograded" if grade.cell.cell_type == "code" else "manual"
                        writer.writerow([a.name, sub.student.id, nb.name, grade.name, kind, f"{grade.score:g}",
                                         f"{grade.max_score:g}", grade.needs_manual_grade])
    return target
