"""Example submissions for every assignment, made from the student version and the solutions.

    python -m autograder.examples [ASSIGNMENT ...]   # rewrite examples/ of the course (after `make release`)

Each assignment's folder is a SUBMISSIONS folder for ``autograder grade``, one student per
way a real submission can turn out (``KINDS``). What grading must give each one is the
assignment's to say, in the ``[examples]`` table of its ``assignment.toml`` (``make demo``
prints and checks it, so does a test):

    complete/          every exercise solved and every answer written
    untouched.ipynb    the student version as released
    partial/           all but the last exercise solved
    forged.ipynb       nothing solved; a hook rewrites every test into `pass`
    raises.zip         the first exercise's cell raises before its code
    loops/             the first exercise's cell loops forever
    broken_json.ipynb  a notebook cut off mid-file
    missing_notebook/  a folder without the notebook
"""

from __future__ import annotations

import io
import shutil
import sys
import zipfile
from pathlib import Path

import nbformat

from autograder import course
from autograder.course import solution_path, student_path


def __getattr__(name: str):
    """``EXAMPLES``: the course's ``examples/`` folder (of the course root, found on first use)."""
    if name == "EXAMPLES":
        return course.course_root() / "examples"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

KINDS = ("complete", "untouched", "partial", "forged", "raises", "loops", "broken_json", "missing_notebook")
RAISE_LINE = 'raise RuntimeError("a bug in the student\'s code")  # example submission: this cell raises'
# It waits rather than spins: the demo grades it beside the other examples on a few cores (the
# adversarial tests grade a spinning loop).
LOOP_LINE = "import time\n\nwhile True:  # example submission: this cell never ends\n    time.sleep(1)"
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
# The kernel's verdicts all pass once every cell that tests is replaced by `pass`.
FORGE_CELL = ("# example submission: nothing solved, and every later cell that tests becomes `pass`\n"
              "def _forge(lines):\n"
              "    return ['pass\\n'] if any('assert' in line or 'probes' in line for line in lines) else lines\n\n\n"
              "get_ipython().input_transformers_post.append(_forge)")


def _solution_text(cell) -> str:
    return "\n".join(line for line in cell.source.splitlines() if line.strip() not in MARKERS)


def completed(assignment: str, skip_last_exercise: bool = False):
    """The student version with the solutions written in, as a student would hand it in."""
    nb = nbformat.read(student_path(assignment), as_version=4)
    source = nbformat.read(solution_path(assignment), as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    exercises = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    last_code = [c for c in exercises if c.cell_type == "code"][-1]
    for cell in exercises:
        if skip_last_exercise and cell is last_code:
            continue
        cell.source = _solution_text(answers[cell.metadata["nbgrader"]["grade_id"]])
    return nb


GRADED_KINDS = ("complete", "partial", "untouched")


def write_class(folder: Path, assignment: str, kinds: dict[str, str]) -> Path:
    """A SUBMISSIONS folder of ``<student>.ipynb``, each a 'complete', 'partial' or
    'untouched' notebook of ``assignment`` (for tests and benchmarks)."""
    folder.mkdir(parents=True, exist_ok=True)
    for student, kind in kinds.items():
        if kind == "untouched":
            shutil.copy(student_path(assignment), folder / f"{student}.ipynb")
        else:
            nbformat.write(completed(assignment, skip_last_exercise=kind == "partial"), folder / f"{student}.ipynb")
    return folder


def _first_exercise(nb):
    return next(c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))


def make_examples(assignment: str, target: Path) -> None:
    name = course.ASSIGNMENTS[assignment]
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)

    def write(nb, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)

    write(completed(assignment), target / "complete" / name)
    shutil.copy(student_path(assignment), target / "untouched.ipynb")
    write(completed(assignment, skip_last_exercise=True), target / "partial" / name)

    forged = nbformat.read(student_path(assignment), as_version=4)
    setup = next(i for i, c in enumerate(forged.cells) if c.cell_type == "code" and "import " in c.source)
    forged.cells.insert(setup + 1, nbformat.v4.new_code_cell(FORGE_CELL, id="forged-hook"))
    write(forged, target / "forged.ipynb")

    raises = completed(assignment)
    cell = _first_exercise(raises)
    cell.source = RAISE_LINE + "\n" + cell.source
    buffer = io.StringIO()
    nbformat.write(raises, buffer)
    with zipfile.ZipFile(target / "raises.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(f"raises/{name}", date_time=(2026, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        archive.writestr(info, buffer.getvalue())

    loops = completed(assignment)
    cell = _first_exercise(loops)
    cell.source = LOOP_LINE + "\n" + cell.source
    write(loops, target / "loops" / name)

    text = (target / "complete" / name).read_text()
    (target / "broken_json.ipynb").write_text(text[: len(text) // 2])
    (target / "missing_notebook").mkdir()
    (target / "missing_notebook" / "README.txt").write_text(f"I forgot to attach {name}.\n")


def main(argv: list[str] | None = None) -> int:
    examples = course.course_root() / "examples"
    for assignment in argv or list(course.ASSIGNMENTS):
        make_examples(assignment, examples / assignment)
        print(f"wrote {examples / assignment}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
