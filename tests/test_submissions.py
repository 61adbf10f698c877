"""Finding and validating submissions: the three forms, student ids, zips, symlinks, bad JSON."""

from __future__ import annotations

import json
import os
import zipfile

import nbformat
import pytest

from autograder import submissions
from autograder.submissions import InvalidSubmission, discover, load

NOTEBOOK = "dice_iou.ipynb"


def _nb_bytes(text: str = "x = 1") -> bytes:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text)])
    return nbformat.writes(nb).encode()


def _by_student(folder):
    return {s.student: s for s in discover(folder)}


def test_the_three_forms_are_found_with_their_student_ids(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / NOTEBOOK).write_bytes(_nb_bytes())
    (tmp_path / "bob.ipynb").write_bytes(_nb_bytes())
    with zipfile.ZipFile(tmp_path / "carol.zip", "w") as z:
        z.writestr(f"carol/{NOTEBOOK}", _nb_bytes())
    (tmp_path / ".DS_Store").write_text("ignored")
    found = _by_student(tmp_path)
    assert {k: s.kind for k, s in found.items()} == {"alice": "folder", "bob": "notebook", "carol": "zip"}
    for sub in found.values():
        files = load(sub, NOTEBOOK)
        assert nbformat.reads(files[NOTEBOOK].decode(), 4).cells[0].source == "x = 1"


@pytest.mark.parametrize("name", ["bad id", "-dash", "a" * 65, "semi;colon", "ünïcode"])
def test_bad_student_ids_are_invalid_with_a_reason(tmp_path, name):
    (tmp_path / f"{name}.ipynb").write_bytes(_nb_bytes())
    (sub,) = discover(tmp_path)
    with pytest.raises(InvalidSubmission, match="student id"):
        load(sub, NOTEBOOK)


def test_zip_entries_pointing_outside_the_submission_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "eve.zip", "w") as z:
        z.writestr(NOTEBOOK, _nb_bytes())
        z.writestr("../../escape.txt", "gotcha")
    (sub,) = discover(tmp_path)
    with pytest.raises(InvalidSubmission, match="outside the submission"):
        load(sub, NOTEBOOK)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_symlinks_in_folders_and_zips_are_refused(tmp_path):
    (tmp_path / "mallory").mkdir()
    (tmp_path / "mallory" / NOTEBOOK).write_bytes(_nb_bytes())
    os.symlink("/etc/passwd", tmp_path / "mallory" / "passwd")
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(tmp_path / "trent.zip", "w") as z:
        z.writestr(NOTEBOOK, _nb_bytes())
        z.writestr(info, "/etc/passwd")
    found = _by_student(tmp_path)
    for student in ("mallory", "trent"):
        with pytest.raises(InvalidSubmission, match="symbolic link"):
            load(found[student], NOTEBOOK)


def test_broken_json_missing_notebook_and_not_a_zip(tmp_path):
    (tmp_path / "broken.ipynb").write_bytes(_nb_bytes()[:40])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no notebook")
    (tmp_path / "fake.zip").write_bytes(b"not a zip at all")
    (tmp_path / "notanotebook.ipynb").write_text(json.dumps({"cells": "nope"}))
    found = _by_student(tmp_path)
    with pytest.raises(InvalidSubmission, match="not valid JSON"):
        load(found["broken"], NOTEBOOK)
    with pytest.raises(InvalidSubmission, match="is missing"):
        load(found["empty"], NOTEBOOK)
    with pytest.raises(InvalidSubmission, match="not a valid zip"):
        load(found["fake"], NOTEBOOK)
    with pytest.raises(InvalidSubmission, match="not a valid notebook"):
        load(found["notanotebook"], NOTEBOOK)


def test_a_lone_notebook_under_another_name_is_the_assignment(tmp_path):
    (tmp_path / "dan").mkdir()
    (tmp_path / "dan" / "dice_iou (1).ipynb").write_bytes(_nb_bytes("y = 2"))
    (sub,) = discover(tmp_path)
    assert nbformat.reads(load(sub, NOTEBOOK)[NOTEBOOK].decode(), 4).cells[0].source == "y = 2"


def test_two_entries_for_one_student_are_invalid(tmp_path):
    (tmp_path / "frank.ipynb").write_bytes(_nb_bytes())
    with zipfile.ZipFile(tmp_path / "frank.zip", "w") as z:
        z.writestr(NOTEBOOK, _nb_bytes())
    (sub,) = discover(tmp_path)
    with pytest.raises(InvalidSubmission, match="two entries"):
        load(sub, NOTEBOOK)


def test_oversized_files_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_FILE_BYTES", 1000)
    (tmp_path / "gina").mkdir()
    (tmp_path / "gina" / NOTEBOOK).write_bytes(_nb_bytes())
    (tmp_path / "gina" / "big.bin").write_bytes(b"0" * 5000)
    (sub,) = discover(tmp_path)
    with pytest.raises(InvalidSubmission, match="larger than"):
        load(sub, NOTEBOOK)


def test_staging_copies_and_never_touches_the_original(tmp_path):
    (tmp_path / "subs" / "hana" / "data").mkdir(parents=True)
    original = tmp_path / "subs" / "hana" / NOTEBOOK
    original.write_bytes(_nb_bytes())
    (tmp_path / "subs" / "hana" / "data" / "extra.txt").write_text("extra")
    before = {p: p.read_bytes() for p in (tmp_path / "subs").rglob("*") if p.is_file()}
    (sub,) = discover(tmp_path / "subs")
    files = load(sub, NOTEBOOK)
    target = tmp_path / "staged"
    submissions.stage(files, target)
    assert (target / NOTEBOOK).read_bytes() == original.read_bytes()
    assert (target / "data" / "extra.txt").read_text() == "extra"
    assert before == {p: p.read_bytes() for p in (tmp_path / "subs").rglob("*") if p.is_file()}


def test_fingerprint_follows_content_and_settings(tmp_path):
    (tmp_path / "ivy").mkdir()
    (tmp_path / "ivy" / NOTEBOOK).write_bytes(_nb_bytes())
    (sub,) = discover(tmp_path)
    first = submissions.fingerprint(sub)
    assert submissions.fingerprint(sub) == first
    (tmp_path / "ivy" / NOTEBOOK).write_bytes(_nb_bytes("x = 2"))
    assert submissions.fingerprint(sub) != first
    assert submissions.fingerprint(sub, "epochs=1") != submissions.fingerprint(sub, "epochs=2")
