"""Submissions in from an LMS's bulk download, grades out in Canvas's import format
(autograder/lms.py). The downloads are zips the tests build, named as each LMS names its files:
resubmissions, late ones, nested zips, files that match no pattern, two accounts of one student."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from autograder import lms, submissions
from autograder.course import ROOT, student_path

DICE, NAME = "03_dice_iou", "dice_iou.ipynb"
GOLDEN = Path(__file__).parent / "golden"


def _notebook(marker: str) -> bytes:
    nb = nbformat.read(student_path(DICE), as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(marker))
    return nbformat.writes(nb).encode()


def _zip(path: Path, files: dict[str, bytes], times: dict[str, tuple] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(times or {}).get(name, (2026, 12, 1, 9, 0, 0)))
            archive.writestr(info, data)
    return path


def _inner_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _rows(out: Path) -> dict[str, dict]:
    with open(lms.report_file(out, DICE), newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def _marker(folder: Path) -> str:
    return nbformat.read(folder / NAME, as_version=4).cells[-1].source


CANVAS_ROSTER = """Student,ID,SIS User ID,SIS Login ID,Section,Dice and IoU (5555),03_dice_iou (5556)
    Points Possible,,,,,25.00,25.00
"Doe, Jane",12345,S1,jdoe,Section A,,
"Smith, Bob",23456,S2,bsmith,Section A,,
"Lee, Ann",34567,S3,alee,Section B,,
"Twin, One",40001,S4,twin,Section B,,
"Twin, Two",40002,S5,twin,Section B,,
"""


def test_canvas_download_keeps_the_latest_resubmission_flags_late_ones_and_reports_every_file(tmp_path):
    roster = tmp_path / "canvas.csv"
    roster.write_text(CANVAS_ROSTER)
    download = _zip(tmp_path / "submissions.zip", {
        "doejane_12345_678_dice_iou.ipynb": _notebook("jane first"),
        "doejane_12345_678_dice_iou-1.ipynb": _notebook("jane second"),  # Canvas's resubmission suffix
        "doejane_12345_678_dice_iou-2.ipynb": _notebook("jane third"),
        "doejane_12345_679_helper.py": b"def helper(): pass\n",  # another file of the same submission
        "smithbob_LATE_23456_789_dice_iou.ipynb": _notebook("bob late"),
        "leeann_34567_790_handin.zip": _inner_zip({
            "dice_iou.ipynb": _notebook("ann zipped"), "data/extra.txt": b"extra",
            "inner.zip": _inner_zip({"notes.md": b"nested twice"})}),
        "onetwin_40001_800_dice_iou.ipynb": _notebook("twin one"),
        "twotwin_40002_801_dice_iou.ipynb": _notebook("twin two"),
        "ghost_99999_900_dice_iou.ipynb": _notebook("not enrolled"),
        "readme.txt": b"not a submission",
        "__MACOSX/._doejane_12345_678_dice_iou.ipynb": b"resource fork",
    })
    out = tmp_path / "submitted"
    result = lms.collect(DICE, NAME, download, "canvas", out, roster)
    assert sorted(result.students) == ["alee", "bsmith", "jdoe"]
    assert _marker(out / "jdoe" / DICE) == "jane third"
    assert (out / "jdoe" / DICE / "helper.py").is_file()  # a file beside the notebook is never superseded by it
    assert (out / "alee" / DICE / "data" / "extra.txt").read_bytes() == b"extra"
    assert (out / "alee" / DICE / "notes.md").read_bytes() == b"nested twice"
    rows = _rows(out)
    assert rows["doejane_12345_678_dice_iou.ipynb"]["status"] == "superseded"
    assert rows["doejane_12345_678_dice_iou-1.ipynb"]["status"] == "superseded"
    assert rows["doejane_12345_678_dice_iou-2.ipynb"]["status"] == "collected"
    assert rows["smithbob_LATE_23456_789_dice_iou.ipynb"]["late"] == "yes"
    assert rows["doejane_12345_678_dice_iou-2.ipynb"]["late"] == "no"
    assert rows["onetwin_40001_800_dice_iou.ipynb"]["status"] == "ambiguous"
    assert "2 canvas users map to student twin" in rows["twotwin_40002_801_dice_iou.ipynb"]["reason"]
    assert rows["ghost_99999_900_dice_iou.ipynb"]["status"] == "unmatched"
    assert "not in the roster" in rows["ghost_99999_900_dice_iou.ipynb"]["reason"]
    assert rows["readme.txt"]["status"] == "unmatched"
    assert not any("__MACOSX" in name for name in rows)
    assert not (out / "twin").exists() and not (out / "99999").exists()
    # the harness takes the folder as it takes nbgrader's submitted/
    found = {s.student: s for s in submissions.discover(out, DICE)}
    assert sorted(found) == ["alee", "bsmith", "jdoe"]
    assert NAME in submissions.load(found["alee"], NAME)


def test_moodle_download_maps_participants_through_the_grading_worksheet_and_dates_each_submission(tmp_path):
    roster = tmp_path / "moodle.csv"
    roster.write_text("Identifier,Full name,Email address,ID number,Status\n"
                      "Participant 111,Jane Doe,jdoe@uni.example,,Submitted\n"
                      "Participant 222,Bob Smith,bob@uni.example,bsmith,Submitted\n")
    download = _zip(tmp_path / "moodle.zip", {
        "Jane Doe_111_assignsubmission_file_/dice_iou.ipynb": _notebook("jane"),
        "Jane Doe_111_assignsubmission_file_/figure.png": b"png",
        "Bob Smith_222_assignsubmission_file_dice_iou.ipynb": _notebook("bob"),  # a prefix, not a folder
        "Eve Stranger_333_assignsubmission_file_/dice_iou.ipynb": _notebook("eve"),
    }, times={"Bob Smith_222_assignsubmission_file_dice_iou.ipynb": (2026, 12, 3, 8, 30, 0),
              "Jane Doe_111_assignsubmission_file_/dice_iou.ipynb": (2026, 12, 3, 0, 30, 0)})
    out = tmp_path / "submitted"
    # the server's clock is Berlin's (UTC+1 in December): jane's 00:30 is 23:30 UTC on the due date
    result = lms.collect(DICE, NAME, download, "moodle", out, roster, due=lms.parse_due("2026-12-02"),
                         lms_timezone="Europe/Berlin")
    assert sorted(result.students) == ["bsmith", "jdoe"]
    assert (out / "jdoe" / DICE / "figure.png").read_bytes() == b"png"
    rows = _rows(out)
    assert rows["Bob Smith_222_assignsubmission_file_dice_iou.ipynb"]["late"] == "yes"
    assert rows["Jane Doe_111_assignsubmission_file_/dice_iou.ipynb"]["late"] == "no"
    assert rows["Eve Stranger_333_assignsubmission_file_/dice_iou.ipynb"]["status"] == "unmatched"
    # nbgrader's record of the hand-in time, which its late penalty reads
    assert (out / "bsmith" / DICE / "timestamp.txt").read_text().startswith("2026-12-03 07:30:00")  # in UTC
    with pytest.raises(lms.CollectError, match="not a time zone"):
        lms.collect(DICE, NAME, download, "moodle", tmp_path / "again", roster, lms_timezone="Mars/Olympus")


def test_blackboard_download_keeps_the_latest_attempt_and_reports_receipts(tmp_path):
    download = _zip(tmp_path / "bb.zip", {
        "Dice_jdoe_attempt_2026-12-01-10-00-00_dice_iou.ipynb": _notebook("first attempt"),
        "Dice_jdoe_attempt_2026-12-01-10-00-00.txt": b"receipt",
        "Dice_jdoe_attempt_2026-12-03-09-00-00_dice_iou.ipynb": _notebook("second attempt"),
        "Dice_bsmith_attempt_2026-12-01-11-00-00_dice_iou.ipynb": _notebook("bob"),
        "Dice_bsmith_attempt_2026-12-01-11-00-00_broken.zip": b"PK not really a zip",
        "Dice_john_smith_attempt_2026-12-01-12-00-00_dice_iou.ipynb": _notebook("john"),  # '_' in a username
    })
    roster = tmp_path / "bb.csv"
    roster.write_text("Last Name,First Name,Username\nDoe,Jane,jdoe\nSmith,Bob,bsmith\nSmith,John,john_smith\n")
    out = tmp_path / "submitted"
    result = lms.collect(DICE, NAME, download, "blackboard", out, roster, due=datetime(2026, 12, 2, 23, 59))
    assert sorted(result.students) == ["jdoe", "john_smith"]
    assert _marker(out / "john_smith" / DICE) == "john"
    assert _marker(out / "jdoe" / DICE) == "second attempt"
    rows = _rows(out)
    assert rows["Dice_jdoe_attempt_2026-12-01-10-00-00_dice_iou.ipynb"]["status"] == "superseded"
    assert rows["Dice_jdoe_attempt_2026-12-01-10-00-00.txt"]["status"] == "receipt"
    assert rows["Dice_jdoe_attempt_2026-12-03-09-00-00_dice_iou.ipynb"]["late"] == "yes"
    # a broken zip in bob's attempt: nothing of it is collected, and the report says why
    assert rows["Dice_bsmith_attempt_2026-12-01-11-00-00_broken.zip"]["status"] == "ambiguous"
    assert "broken zip" in rows["Dice_bsmith_attempt_2026-12-01-11-00-00_broken.zip"]["reason"]
    assert not (out / "bsmith").exists()


def test_nbgrader_layout_and_the_command_line(tmp_path):
    download = _zip(tmp_path / "nbgrader.zip", {
        f"submitted/jdoe/{DICE}/{NAME}": _notebook("jane"),
        f"bsmith/{DICE}/{NAME}": _notebook("bob"),
        f"bsmith/{DICE}/timestamp.txt": b"2026-12-03 10:00:00.000000 UTC",
        "bsmith/01_pyramids_vs_fpn/pyramids_vs_fpn.ipynb": b"{}",
        f"../../{DICE}/evil.ipynb": b"x",
    })
    out = tmp_path / "submitted"
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "collect", DICE, str(download), "--lms", "nbgrader",
                          "--out", str(out), "--due", "2026-12-02"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "collected 2 submission(s)" in run.stdout and "(1 late" in run.stdout and "unmatched" in run.stderr
    assert (out / "bsmith" / DICE / "timestamp.txt").read_text().startswith("2026-12-03 10:00:00")  # nbgrader's, kept
    assert _marker(out / "jdoe" / DICE) == "jane" and _marker(out / "bsmith" / DICE) == "bob"
    rows = _rows(out)
    assert rows["bsmith/01_pyramids_vs_fpn/pyramids_vs_fpn.ipynb"]["status"] == "unmatched"
    assert not (tmp_path / DICE).exists()
    bad = subprocess.run([sys.executable, "-m", "autograder.cli", "collect", DICE, str(tmp_path / "missing.zip"),
                          "--lms", "canvas", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "not a zip" in bad.stderr


def _gradebook(path: Path) -> str:
    """A gradebook with one assignment of an autograded test and a manually graded answer."""
    from nbgrader.api import Gradebook

    from autograder.nbgrader_runner import alembic_on_path

    url = f"sqlite:///{path}"
    with alembic_on_path(), Gradebook(url) as gb:
        gb.add_assignment(DICE)
        gb.add_notebook("dice_iou", DICE)
        gb.add_grade_cell("test_dice", "dice_iou", DICE, max_score=20, cell_type="code")
        gb.add_grade_cell("answer_dice", "dice_iou", DICE, max_score=5, cell_type="markdown")
        for student, first, last, auto, manual in (("jdoe", "Jane", "Doe", 17.5, 4.0),
                                                   ("bsmith", "Bob", "Smith", 20.0, None),
                                                   ("ghost", "Not", "Enrolled", 3.0, 1.0)):
            gb.add_student(student, first_name=first, last_name=last)
            submission = gb.add_submission(DICE, student)
            if student == "jdoe":  # handed in late: nbgrader's penalty comes off the exported score
                submission.notebooks[0].late_submission_penalty = 1.5
            test = gb.find_grade("test_dice", "dice_iou", DICE, student)
            test.auto_score, test.needs_manual_grade = auto, False
            answer = gb.find_grade("answer_dice", "dice_iou", DICE, student)
            answer.manual_score, answer.needs_manual_grade = manual, manual is None  # bob's is not graded yet
        gb.db.commit()
    return url


def test_canvas_export_matches_the_golden_file(tmp_path):
    roster = tmp_path / "canvas.csv"
    roster.write_text(CANVAS_ROSTER)
    url = _gradebook(tmp_path / "gradebook.db")
    export = lms.canvas_csv(url, roster, tmp_path / "canvas-grades.csv")
    written = export.path
    assert written.read_text() == (GOLDEN / "canvas-grades.csv").read_text()
    assert export.pending == [f"{DICE}/bsmith"] and export.not_in_roster == ["ghost"]
    renamed = lms.canvas_csv(url, roster, tmp_path / "named.csv", {DICE: "Dice and IoU (5555)"})
    assert renamed.path.read_text().splitlines()[0].endswith(",Dice and IoU (5555)")
    questions = lms.question_csv(url, tmp_path / "grades-by-question.csv")
    assert questions.read_text() == (GOLDEN / "grades-by-question.csv").read_text()
    with open(written, newline="") as f:  # what Canvas reads back: names with commas stay one cell
        rows = list(csv.reader(f))
    assert rows[2][:2] == ["Doe, Jane", "12345"] and rows[1][0].strip() == "Points Possible"


def test_an_export_without_canvas_columns_is_refused(tmp_path):
    roster = tmp_path / "not-canvas.csv"
    roster.write_text("id,first_name\njdoe,Jane\n")
    with pytest.raises(lms.CollectError, match="not Canvas's gradebook export"):
        lms.canvas_csv(_gradebook(tmp_path / "gb.db"), roster, tmp_path / "out.csv")
