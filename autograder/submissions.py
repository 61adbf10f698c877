"""Find, validate and stage student submissions.

A SUBMISSIONS folder holds one entry per student, in any of three forms:

    <student_id>/<notebook>.ipynb     a folder with the assignment's notebook (and any files)
    <student_id>.ipynb                the notebook alone
    <student_id>.zip                  a zip of either of the above
    <student_id>/<assignment>/...     nbgrader's collected layout: `autograder grade A submitted`

Nothing here executes student code. Originals are only read: staging copies the files
(regular files only, never symlinks, size-capped) into nbgrader's ``submitted/`` layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import nbformat

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_FILE_BYTES = 50 * 2**20      # one submitted file
MAX_SUBMISSION_BYTES = 200 * 2**20  # a whole submission, unpacked
IGNORED_NAMES = {".ipynb_checkpoints", "__pycache__", ".DS_Store", "__MACOSX"}


class InvalidSubmission(ValueError):
    """The submission cannot be graded; the message is the one-line reason students see."""


@dataclass
class Submission:
    """One student's entry in a SUBMISSIONS folder."""

    student: str          # the id as found (validated later)
    path: Path            # folder, .ipynb or .zip
    kind: str             # "folder", "notebook" or "zip"
    problem: str = ""     # set when the entry is invalid before staging
    files: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return self.path.name


def _collected(folder: Path, assignments) -> bool:
    """Whether ``folder`` is a student's folder in nbgrader's ``submitted/`` layout: only
    folders named after the course's assignments."""
    children = [c for c in folder.iterdir() if c.name not in IGNORED_NAMES and not c.name.startswith(".")]
    return bool(children) and all(c.is_dir() and not c.is_symlink() and c.name in assignments for c in children)


def discover(submissions: Path, assignment: str | None = None) -> list[Submission]:
    """The entries of a SUBMISSIONS folder (or one .ipynb/.zip file), sorted by student id.

    Given the ``assignment``, a student folder in nbgrader's collected layout
    (``submitted/<student>/<assignment>/``) is read from its assignment's folder; one holding
    only other assignments is invalid, with that reason."""
    from autograder.course import ASSIGNMENTS

    submissions = Path(submissions)
    if not submissions.exists():
        raise FileNotFoundError(f"{submissions}: no such folder or file")
    entries = [submissions] if submissions.is_file() else sorted(submissions.iterdir())
    found: dict[str, Submission] = {}
    for entry in entries:
        if entry.name in IGNORED_NAMES or entry.name.startswith("."):
            continue
        if entry.is_symlink():
            sub = Submission(entry.name, entry, "link", problem=f"{entry.name} is a symbolic link")
        elif entry.is_dir() and assignment and _collected(entry, ASSIGNMENTS):
            if (entry / assignment).is_dir():
                sub = Submission(entry.name, entry / assignment, "folder")
            else:
                others = ", ".join(sorted(c.name for c in entry.iterdir() if c.is_dir()))
                sub = Submission(entry.name, entry, "folder",
                                 problem=f"no {assignment}/ in the collected submissions (only {others})")
        elif entry.is_dir():
            sub = Submission(entry.name, entry, "folder")
        elif entry.suffix == ".ipynb":
            sub = Submission(entry.stem, entry, "notebook")
        elif entry.suffix == ".zip":
            sub = Submission(entry.stem, entry, "zip")
        else:
            sub = Submission(entry.name, entry, "other", problem=f"{entry.name} is neither a folder, an .ipynb nor a .zip")
        if not sub.problem and not STUDENT_ID.match(sub.student):
            sub.problem = (f"student id {sub.student!r} is not valid (letters, digits, '_', '.', '-'; "
                           "starting with a letter or digit; at most 64)")
        if sub.student in found:
            sub.problem = f"two entries for student {sub.student!r} ({found[sub.student].label}, {sub.label})"
        found.setdefault(sub.student, sub)
        if sub.problem and found[sub.student] is not sub:
            found[sub.student].problem = sub.problem
    return [found[k] for k in sorted(found)]


def _add(files: dict[str, bytes], name: str, data: bytes) -> None:
    if len(data) > MAX_FILE_BYTES:
        raise InvalidSubmission(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB")
    if sum(map(len, files.values())) + len(data) > MAX_SUBMISSION_BYTES:
        raise InvalidSubmission(f"the submission is larger than {MAX_SUBMISSION_BYTES // 2**20} MB")
    files[name] = data


def _safe_relative(name: str) -> str | None:
    """``name`` as a relative POSIX path inside the submission, or None for ignored entries."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or any(p.startswith("/") for p in path.parts):
        raise InvalidSubmission(f"{name!r} points outside the submission")
    if any(part in IGNORED_NAMES for part in path.parts):
        return None
    return str(path)


def is_regular_file(path: Path) -> bool:
    """A plain file, not a symlink, FIFO or device: what a kernel leaves behind is read only then."""
    try:
        return stat.S_ISREG(Path(path).lstat().st_mode)
    except OSError:
        return False


def read_files(sub: Submission) -> dict[str, bytes]:
    """The submission's files as {relative path: bytes}; symlinks and special files refused."""
    files: dict[str, bytes] = {}
    if sub.kind == "notebook":
        _add(files, sub.path.name, sub.path.read_bytes())
    elif sub.kind == "folder":
        for path in sorted(sub.path.rglob("*")):
            rel = path.relative_to(sub.path).as_posix()
            if _safe_relative(rel) is None:
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise InvalidSubmission(f"{rel} is a symbolic link (not allowed in submissions)")
            if stat.S_ISREG(mode):
                _add(files, rel, path.read_bytes())
            elif not stat.S_ISDIR(mode):
                raise InvalidSubmission(f"{rel} is not a regular file")
    elif sub.kind == "zip":
        try:
            with zipfile.ZipFile(sub.path) as archive:
                for info in archive.infolist():
                    rel = _safe_relative(info.filename)
                    if rel is None or info.is_dir():
                        continue
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise InvalidSubmission(f"{info.filename} is a symbolic link (not allowed in submissions)")
                    if info.file_size > MAX_FILE_BYTES:
                        raise InvalidSubmission(f"{info.filename} is larger than {MAX_FILE_BYTES // 2**20} MB")
                    with archive.open(info) as fh:
                        _add(files, rel, fh.read(MAX_FILE_BYTES + 1))
        except (zipfile.BadZipFile, EOFError) as err:
            raise InvalidSubmission(f"{sub.label} is not a valid zip file ({err})") from err
    if sub.kind == "zip":
        # a zip of the student's folder: strip the single top folder
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) == 1 and all("/" in name for name in files):
            files = {name.split("/", 1)[1]: data for name, data in files.items()}
    return files


def notebook_problem(data: bytes, name: str) -> str:
    """Why ``data`` is not a notebook nbgrader can grade ('' when it is one)."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{name} is not valid JSON ({err.__class__.__name__}: {err})"
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # nbformat raises several kinds for malformed notebooks
        return f"{name} is not a valid notebook ({str(err).splitlines()[0][:200]})"
    return ""


def load(sub: Submission, notebook: str) -> dict[str, bytes]:
    """Read and check a submission for the assignment whose notebook is ``notebook``.

    Returns its files with the notebook under its expected name; a lone notebook or a lone
    notebook in a zip/folder with another name is accepted as the assignment's notebook.
    Raises :class:`InvalidSubmission` with the reason otherwise.
    """
    if sub.problem:
        raise InvalidSubmission(sub.problem)
    files = read_files(sub)
    if notebook not in files:
        notebooks = [n for n in files if n.endswith(".ipynb") and "/" not in n]
        if len(notebooks) == 1 and sub.kind in ("notebook", "zip", "folder"):
            files[notebook] = files.pop(notebooks[0])
        else:
            found = ", ".join(sorted(files)) or "nothing"
            raise InvalidSubmission(f"the notebook {notebook} is missing (found: {found})")
    problem = notebook_problem(files[notebook], notebook)
    if problem:
        raise InvalidSubmission(problem)
    return files


def fingerprint(sub: Submission, *settings: str) -> str:
    """A fingerprint of the entry as it is on disk (read before validation, so invalid
    entries have one too) and of the grading ``settings``: a re-run re-grades when it changes."""
    h = hashlib.sha256()
    paths = [sub.path] if not sub.path.is_dir() or sub.path.is_symlink() else sorted(sub.path.rglob("*"))
    for path in paths:
        h.update(str(path.relative_to(sub.path.parent)).encode() + b"\0")
        if path.is_symlink():
            h.update(b"link:" + os.readlink(path).encode())
        elif path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    for item in settings:
        h.update(b"\1" + item.encode())
    return h.hexdigest()[:16]


def size(sub: Submission) -> int:
    """Bytes of the entry's regular files as they are on disk (links not followed): how much
    was handed in, before it is read."""
    if not sub.path.is_dir() or sub.path.is_symlink():
        return sub.path.lstat().st_size if sub.path.exists() or sub.path.is_symlink() else 0
    total = 0
    for folder, _, names in os.walk(sub.path):  # os.walk does not enter linked folders
        total += sum(os.lstat(os.path.join(folder, name)).st_size for name in names)
    return total


def stage(files: dict[str, bytes], target: Path) -> None:
    """Write the submission's files into ``target`` (nbgrader's submitted/<student>/<assignment>)."""
    if target.exists():
        shutil.rmtree(target)
    for name, data in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
