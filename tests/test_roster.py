"""The roster (students' names in the gradebook, for formgrader) and nbgrader's collected
``submitted/<student>/<assignment>/`` layout as a SUBMISSIONS folder."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder.gradebook import sqlite_url
from autograder.roster import RosterError, import_roster, read_roster
from autograder.submissions import discover, load


def test_a_roster_sets_the_students_names_and_a_later_one_updates_them(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("id,first_name,last_name,email\nada,Ada,Okafor,ada@example.org\nbo,,Silva,\n")
    db = sqlite_url(tmp_path / "gradebook.db")
    assert import_roster(db, read_roster(roster)) == 2
    roster.write_text("id,last_name\nada,Okafor-Lee\n")
    import_roster(db, read_roster(roster))
    with Gradebook(db) as gb:
        ada, bo = gb.find_student("ada"), gb.find_student("bo")
        assert (ada.first_name, ada.last_name, ada.email) == ("Ada", "Okafor-Lee", "ada@example.org")
        assert (bo.first_name, bo.last_name, bo.email) == (None, "Silva", None)


@pytest.mark.parametrize("text, reason", [
    ("name,email\nada,a@b\n", "'id' column"),
    ("id\n../etc\n", "not a student id"),
    ("id\nada\nada\n", "listed twice"),
])
def test_a_bad_roster_is_refused_with_the_line_and_the_reason(tmp_path, text, reason):
    roster = tmp_path / "roster.csv"
    roster.write_text(text)
    with pytest.raises(RosterError, match=reason):
        read_roster(roster)


def test_the_bundled_examples_roster_names_every_example_student():
    from autograder.examples import EXAMPLES, KINDS

    rows = read_roster(EXAMPLES / "roster.csv")
    assert {r["id"] for r in rows} == set(KINDS)
    assert all(r["first_name"] and r["last_name"] for r in rows)


def test_nbgraders_collected_layout_is_read_per_assignment(tmp_path):
    nb = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])).encode()
    (tmp_path / "ada" / "01_pyramids_vs_fpn").mkdir(parents=True)
    (tmp_path / "ada" / "01_pyramids_vs_fpn" / "pyramids_vs_fpn.ipynb").write_bytes(nb)
    (tmp_path / "ada" / "01_pyramids_vs_fpn" / "timestamp.txt").write_text("2026-12-07 10:00:00.000000 UTC")
    (tmp_path / "bo" / "03_dice_iou").mkdir(parents=True)  # submitted another assignment only
    (tmp_path / "bo" / "03_dice_iou" / "dice_iou.ipynb").write_bytes(nb)
    (tmp_path / "cy").mkdir()  # the plain layout beside it
    (tmp_path / "cy" / "pyramids_vs_fpn.ipynb").write_bytes(nb)
    found = {s.student: s for s in discover(tmp_path, "01_pyramids_vs_fpn")}
    assert set(found) == {"ada", "bo", "cy"}
    assert found["bo"].problem == "no 01_pyramids_vs_fpn/ in the collected submissions (only 03_dice_iou)"
    assert not found["ada"].problem and not found["cy"].problem
    files = load(found["ada"], "pyramids_vs_fpn.ipynb")
    assert set(files) == {"pyramids_vs_fpn.ipynb", "timestamp.txt"}  # nbgrader reads the timestamp for lateness
    assert {s.student for s in discover(tmp_path)} == {"ada", "bo", "cy"}  # without the assignment: as before


def test_grading_the_collected_folder_in_place_leaves_the_students_files_as_they_came(tmp_path):
    from types import SimpleNamespace

    from autograder.grading import collect_files

    collected = tmp_path / "course" / "submitted" / "ada" / "01_pyramids_vs_fpn"
    collected.mkdir(parents=True)
    (collected / "pyramids_vs_fpn.ipynb").write_text("the student's own bytes")
    workspace = tmp_path / "ws"
    for step in ("submitted", "autograded", "feedback"):
        (workspace / step / "ada" / "01_pyramids_vs_fpn").mkdir(parents=True)
        (workspace / step / "ada" / "01_pyramids_vs_fpn" / "out.txt").write_text(step)
    task = SimpleNamespace(student="ada", workspace=workspace, graded=True)
    opts = SimpleNamespace(out=tmp_path / "course", submissions=tmp_path / "course" / "submitted",
                           assignment="01_pyramids_vs_fpn")
    collect_files(task, opts)
    assert sorted(p.name for p in collected.iterdir()) == ["pyramids_vs_fpn.ipynb"]
    assert (collected / "pyramids_vs_fpn.ipynb").read_text() == "the student's own bytes"
    assert (tmp_path / "course" / "autograded" / "ada" / "01_pyramids_vs_fpn" / "out.txt").read_text() == "autograded"
    opts.submissions = tmp_path / "elsewhere"  # graded from elsewhere: submitted/ is the staged copy
    collect_files(task, opts)
    assert sorted(p.name for p in collected.iterdir()) == ["out.txt"]


def test_the_formgrader_config_keeps_passwords_out_and_leaves_a_foreign_config_alone(tmp_path):
    from autograder.roster import write_formgrader_config

    path = write_formgrader_config(tmp_path, "postgresql://grader:s3cret@db/gb")
    text = path.read_text()
    assert "s3cret" not in text and 'os.environ["NBGRADER_DB_URL"]' in text
    assert write_formgrader_config(tmp_path, "sqlite:///gradebook.db") == path  # ours: rewritten
    assert f"sqlite:///{(Path.cwd() / 'gradebook.db').resolve()}" in path.read_text()  # made absolute
    path.write_text("c = get_config()  # the instructor's own\n")
    assert write_formgrader_config(tmp_path, "sqlite:///x.db") is None
    assert path.read_text() == "c = get_config()  # the instructor's own\n"
