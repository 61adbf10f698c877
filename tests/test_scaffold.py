"""``autograder new``: an assignment added in one place, then released and graded as the others.

Before the declarations, adding an assignment meant editing six places (the course module, the
probes, the trusted scorer, the examples generator, the README's tables and the solutions). The
test below adds one to a course that has none, touching nothing but ``solutions/<assignment>/``,
and grades a solved and an untouched copy with the real harness (nbgrader, the sandbox, the
probes checked out of the kernel)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import course, scaffold
from autograder.examples import KINDS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
NEW = "05_normalize_images"


def _run(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != course.COURSE_DIR_ENV}  # the course is found from cwd
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def new_course(tmp_path_factory) -> Path:
    """A course with the harness's config and no assignment yet."""
    root = tmp_path_factory.mktemp("course") / "course"
    (root / "solutions").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    return root


def test_new_writes_the_assignment_in_one_folder_and_it_releases_and_grades(new_course, tmp_path):
    before = _files(new_course)
    done = _run(new_course, "autograder.cli", "new", NEW, "--title", "Normalizing images")
    assert "next:" in done.stdout
    added = _files(new_course) - before
    assert added == {f"solutions/{NEW}/{name}" for name in ("normalize_images.ipynb", "assignment.toml", "grading.py")}
    declared = course.load_declaration(new_course / "solutions" / NEW)
    assert set(declared.examples) == set(KINDS) and declared.small == {"size": 8}
    source = nbformat.read(declared.source, as_version=4)
    nbformat.validate(source)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in source.cells]
    assert {"parameters", "normalize", "test_normalize"} <= set(ids)

    _run(new_course, "autograder.cli", "release", NEW)
    released = new_course / "notebooks" / NEW
    assert sorted(p.name for p in released.iterdir()) == ["normalize_images.ipynb"]  # no declaration, no grader code
    text = (released / "normalize_images.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in text and "YOUR CODE HERE" in text

    _run(new_course, "autograder.examples", NEW)
    examples = new_course / "examples" / NEW
    assert {p.name.split(".")[0] for p in examples.iterdir()} == set(KINDS)
    submissions = tmp_path / "class"
    submissions.mkdir()
    shutil.copy(examples / "complete" / "normalize_images.ipynb", submissions / "solved.ipynb")
    shutil.copy(examples / "untouched.ipynb", submissions / "untouched.ipynb")
    shutil.copy(examples / "forged.ipynb", submissions / "forged.ipynb")
    out = tmp_path / "out"
    _run(new_course, "autograder.cli", "grade", NEW, str(submissions), "--out", str(out), "--workers", "2",
         "--param", "size=8", "--no-progress")
    with open(out / "status.csv", newline="") as fh:
        rows = {r["student"]: r for r in csv.DictReader(fh)}
    assert {s: r["status"] for s, r in rows.items()} == dict.fromkeys(("solved", "untouched", "forged"), "graded")
    assert float(rows["solved"]["auto_score"]) == float(rows["solved"]["auto_max_score"]) == 2.0, rows["solved"]
    assert float(rows["untouched"]["auto_score"]) == 0.0
    assert float(rows["forged"]["auto_score"]) == 0.0 and "test_normalize" in rows["forged"]["reason"], rows["forged"]


def test_new_refuses_a_bad_name_and_an_existing_assignment(tmp_path):
    root = tmp_path / "course"
    (root / "solutions").mkdir(parents=True)
    for bad in ("normalize", "5_x", "05-x", "05_X", "05_../x"):
        with pytest.raises(ValueError, match="is named like"):
            scaffold.new_assignment(bad, root=root)
    with pytest.raises(ValueError, match="names no library"):  # its probes module answers the new probes
        scaffold.new_assignment("06_edges", root=root)
    assert list((root / "solutions").iterdir()) == []  # nothing written
    (root / "nbgrader_config.py").write_text('c = get_config()  # noqa: F821\nc.Autograder.course_library = "course_lib"\n')
    scaffold.new_assignment("06_edges", root=root)
    assert "from course_lib.probes import answer_probes" in (root / "solutions" / "06_edges" / "edges.ipynb").read_text()
    with pytest.raises(FileExistsError):
        scaffold.new_assignment("06_edges", root=root)
    assert scaffold.notebook_name("06_edges") == "edges.ipynb"
