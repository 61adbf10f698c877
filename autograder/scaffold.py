"""``autograder new ASSIGNMENT``: a new assignment, declared in one place.

Writes ``solutions/<ASSIGNMENT>/`` of the course:

* ``<name>.ipynb``: the source notebook, with nbgrader's metadata: a locked ``parameters``
  cell (papermill's tag too), a locked setup cell, one exercise (a solution region), and its
  test cell, visible asserts plus a hidden part that answers the grader's probes;
* ``assignment.toml``: the declaration (notebook, small setting, timeouts, what each bundled
  example must score), see :mod:`autograder.course`;
* ``grading.py``: the probe of that test cell: the inputs the grader draws and the reference
  answers it checks the student's out of the kernel (:mod:`autograder.probes`).

Then: edit the three files, ``autograder release ASSIGNMENT``, ``python -m autograder.examples
ASSIGNMENT`` and ``make demo`` (README, "Add an assignment").
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from autograder import course

NAME = re.compile(r"^[0-9]{2}_[a-z][a-z0-9_]*$")
# the kernel-side module of the course's probes (in its library, c.Autograder.course_library): the hidden test imports it
KERNEL_PROBES = "{library}.probes"


def notebook_name(assignment: str) -> str:
    """``05_edge_maps`` → ``edge_maps.ipynb``."""
    return re.sub(r"^[0-9]+_", "", assignment) + ".ipynb"


def _cell(kind: str, source: str, grade_id: str | None = None, *, solution: bool = False, grade: bool = False,
          locked: bool = False, points: int = 0, tags: list[str] | None = None):
    cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
                                     "solution": solution, **({"points": points} if grade else {})}
        cell.id = grade_id.replace("_", "-")
    if tags:
        cell.metadata["tags"] = tags
    return cell


def source_notebook(assignment: str, title: str, library: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nb.cells = [
        _cell("markdown", f"# {assignment[:2]} · {title}\n\n"
              "What this notebook teaches, in two sentences. Run it top to bottom; the exercises say what to write."),
        _cell("code", "seed = 0  # seed of every random draw in this notebook\n"
              "size = 32  # side (pixels) of the demo image", "parameters", locked=True, tags=["parameters"]),
        _cell("code", "import numpy as np\n\nrng = np.random.default_rng(seed)", "setup", locked=True),
        _cell("markdown", "### Exercise 1 · `normalize` (2 points)\n\n"
              "Rescale an image (a NumPy array of any shape) linearly so that its smallest value becomes 0 and its\n"
              "largest 1; a constant image becomes all zeros. Return a float64 array of the same shape."),
        _cell("code", 'def normalize(image):\n    """The image rescaled linearly to [0, 1]; a constant image gives zeros."""\n'
              "    ### BEGIN SOLUTION\n    image = np.asarray(image, dtype=np.float64)\n"
              "    low, high = image.min(), image.max()\n"
              "    return (image - low) / (high - low) if high > low else np.zeros_like(image)\n"
              "    ### END SOLUTION", "normalize", solution=True),
        _cell("code", "_image = rng.random((size, size)) * 255\n"
              "assert np.isclose(normalize(_image).min(), 0.0) and np.isclose(normalize(_image).max(), 1.0)\n"
              "assert normalize(np.full((3, 3), 7.0)).tolist() == np.zeros((3, 3)).tolist(), \"a constant image gives zeros\"\n"
              "print(\"normalize: visible tests passed\")\n"
              "### BEGIN HIDDEN TESTS\n"
              "assert normalize(np.arange(4)).tolist() == [0.0, 1 / 3, 2 / 3, 1.0]\n\n"
              "# Probes the grader checks out of this kernel (grading.py beside the source); nothing happens elsewhere.\n"
              f"from {KERNEL_PROBES.format(library=library)} import answer_probes as _answer_probes\n\n"
              "_answer_probes(\"test_normalize\", lambda p, k: {\"y\": normalize(p[f\"x_{k}\"])})\n"
              "### END HIDDEN TESTS", "test_normalize", grade=True, locked=True, points=2),
    ]
    return nb


DECLARATION_TEXT = '''# {assignment}: what the grading harness needs to know about this assignment, in one place
# (autograder/course.py reads it).
notebook = "{notebook}"

# The small setting: CI, the tests, `make demo` and quick grading pin it into the notebook's
# locked parameters cell (names must be parameters there). The cell's own values are the full course.
[small]
size = 8

# Seconds a cell, a cell tagged `training` and the whole notebook may run when graded at the
# small setting: the looping example is interrupted at `cell`.
[timeouts]
cell = 30
training = 300
notebook = 600

# What grading each bundled example (examples/<assignment>/, `python -m autograder.examples`) must
# give: its status and its share of the autograded points, [low, high] inclusive.
[examples]
{examples}
'''

EXAMPLE_DEFAULTS = {
    "complete": ("graded", 1.0, 1.0), "untouched": ("graded", 0.0, 0.0), "partial": ("graded", 0.0, 0.99),
    "forged": ("graded", 0.0, 0.0), "raises": ("graded", 0.0, 0.99), "loops": ("timeout", 0.0, 0.99),
    "broken_json": ("invalid", 0.0, 0.0), "missing_notebook": ("invalid", 0.0, 0.0),
}

GRADING_TEXT = '''"""{assignment}: the grader's code, loaded by the harness (autograder/course.py); never released.

``PROBES``: the hidden test cells whose answers are checked out of the kernel, each with the
inputs the grader draws and the reference answers (:class:`autograder.probes.Probe`).
"""

from __future__ import annotations

import numpy as np

from autograder.probes import Arrays, Probe, as_cases


def _images(seed: int) -> Arrays:
    """Images of several shapes and dtypes, a constant one among them."""
    rng = np.random.default_rng(seed)
    shapes = [(1,), (5, 7), (3, 16, 16), (2, 3, 9, 4)] + [tuple(rng.integers(1, 20, 2)) for _ in range(6)]
    cases = [{{"x": rng.random(shape) * 255}} for shape in shapes]
    cases += [{{"x": np.full((4, 4), 3.0)}}, {{"x": rng.integers(0, 256, (8, 8), dtype=np.uint8)}}]
    return as_cases(cases)


def _normalize(inputs: Arrays, k: int) -> Arrays:
    image = np.asarray(inputs[f"x_{{k}}"], dtype=np.float64)
    low, high = image.min(), image.max()
    return {{"y": (image - low) / (high - low) if high > low else np.zeros_like(image)}}


PROBES: dict[str, Probe] = {{
    "test_normalize": Probe(_images, 51, _normalize, 1e-9, 1e-12),
}}
'''


def new_assignment(assignment: str, title: str | None = None, root: Path | None = None) -> Path:
    """Write the new assignment's folder into the course's ``solutions/``; its path. Refuses a
    name nbgrader and this course cannot use, or one that exists."""
    if not NAME.match(assignment):
        raise ValueError(f"{assignment!r}: an assignment is named like 05_edge_maps (two digits, an underscore, "
                         "lower-case letters, digits and underscores)")
    from autograder import settings

    root = root or course.course_root()
    folder = root / course.SOURCE_FOLDER / assignment
    if folder.exists():
        raise FileExistsError(f"{folder} exists")
    # read now, not settings.course_library(): that one is cached per process, and a config may change meanwhile
    library = settings.effective(config=settings.load_course_config(root))[0].course_library
    if not library:
        raise ValueError(f"the course names no library (c.Autograder.course_library in {root / course.CONFIG_FILE}): "
                         "its probes module answers the new exercise's probes in the kernel")
    notebook = notebook_name(assignment)
    title = title or assignment[3:].replace("_", " ").capitalize()
    folder.mkdir(parents=True)
    nbformat.write(source_notebook(assignment, title, library), folder / notebook)
    examples = "\n".join(f'{kind:<16} = {{ status = "{status}", share = [{low}, {high}] }}'
                         for kind, (status, low, high) in EXAMPLE_DEFAULTS.items())
    (folder / course.DECLARATION).write_text(DECLARATION_TEXT.format(assignment=assignment, notebook=notebook,
                                                                     examples=examples))
    (folder / course.GRADING_MODULE).write_text(GRADING_TEXT.format(assignment=assignment))
    course.load_declaration(folder)  # what was written is a valid declaration
    course.assignments.cache_clear()
    return folder
