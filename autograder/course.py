"""The course the harness grades: its root, and each assignment's declaration.

The course root is where the instructor works, found the way nbgrader finds its config: the
folder holding ``nbgrader_config.py`` (and the ``solutions/`` source folder), from the current
folder upwards, unless ``$AUTOGRADER_COURSE_DIR`` (``autograder --course-dir``) names it. It is
never where this package is installed: an editable install run from a copy of the course grades
that copy. The nbgrader processes the harness starts get it in ``$AUTOGRADER_COURSE_DIR``, so
they see the same course wherever their working folder is.

Each assignment declares itself next to its source notebook, in
``solutions/<assignment>/assignment.toml`` (:class:`Assignment`): its notebook, its small
setting (what CI, the tests and quick grading pin; the defaults of the notebook's
``parameters`` cell give the full experience), its grading timeouts, the cells a trusted
scorer decides and what each bundled example must score; and, where it needs code, its
``grading.py`` (:func:`grading_module`: its probes, its trusted scorer).

Module attributes that depend on the course (``ROOT``, ``SOLUTIONS``, ``NOTEBOOKS``,
``ASSIGNMENTS``, ``SMALL_PARAMETERS``) are computed on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

COURSE_DIR_ENV = "AUTOGRADER_COURSE_DIR"
CONFIG_FILE = "nbgrader_config.py"
SOURCE_FOLDER, RELEASE_FOLDER = "solutions", "notebooks"  # nbgrader's source and release folders
DECLARATION = "assignment.toml"
GRADING_MODULE = "grading.py"  # the assignment's grader code, where it needs any (probes, trusted scoring)
STATUSES = ("graded", "timeout", "crashed", "invalid", "error")  # what grading a submission ends with


class CourseNotFound(RuntimeError):
    """No course root here: no ``nbgrader_config.py`` beside a ``solutions/`` folder."""


class BadDeclaration(ValueError):
    """An ``assignment.toml`` that cannot be used; the message names the file and the key."""


def is_course_root(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / SOURCE_FOLDER).is_dir()


def find_course_root(start: Path | None = None) -> Path:
    """``$AUTOGRADER_COURSE_DIR``, else the nearest folder from ``start`` (default: the current
    folder) upwards that holds ``nbgrader_config.py`` and ``solutions/``."""
    named = os.environ.get(COURSE_DIR_ENV)
    if named:
        root = Path(named).expanduser().resolve()
        if not is_course_root(root):
            raise CourseNotFound(f"${COURSE_DIR_ENV} (--course-dir) is {root}, which holds no {CONFIG_FILE} "
                                 f"beside a {SOURCE_FOLDER}/ folder")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_course_root(folder):
            return folder
    raise CourseNotFound(f"no course here: neither {here} nor a folder above it holds {CONFIG_FILE} beside a "
                         f"{SOURCE_FOLDER}/ folder; run from the course root or pass --course-dir")


@functools.cache
def _discovered() -> tuple[Path, str]:
    how = f"${COURSE_DIR_ENV} (--course-dir)" if os.environ.get(COURSE_DIR_ENV) else "found from the current folder"
    return find_course_root(), how


def course_root() -> Path:
    """The course root of this process, found once. The processes the harness starts get it in
    ``$AUTOGRADER_COURSE_DIR`` (:func:`autograder.nbgrader_runner.nbgrader_env`); it is not
    exported to everything else this process starts."""
    return _discovered()[0]


def course_root_source() -> str:
    """How :func:`course_root` was found: named, or found from the current folder."""
    return _discovered()[1]


@dataclass(frozen=True)
class Timeouts:
    """Seconds a cell, a cell tagged ``training`` and a whole notebook may run when the
    assignment is graded at its small setting (the demo, the tests)."""

    cell: int
    training: int
    notebook: float


@dataclass(frozen=True)
class Expectation:
    """What grading a bundled example must give: its status, and its share of the autograded
    points within ``low``..``high`` (inclusive)."""

    status: str
    low: float
    high: float


@dataclass(frozen=True)
class Trusted:
    """Cells decided out of the kernel by the assignment's trusted scorer (``trusted_verdicts`` in
    its ``grading.py``, :mod:`autograder.trusted`): the cells, the files the kernel must leave
    for it, and the files of the assignment's folder staged beside the notebook."""

    cells: tuple[str, ...]
    kernel_outputs: tuple[str, ...]
    kernel_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Assignment:
    """One assignment, as its ``solutions/<name>/assignment.toml`` declares it."""

    name: str
    folder: Path                      # solutions/<name>: the source notebook and its declaration
    notebook: str                     # the notebook's file name
    small: dict[str, object]          # the small setting: parameter -> value
    timeouts: Timeouts
    examples: dict[str, Expectation] = field(default_factory=dict)
    trusted: Trusted | None = None
    quick: dict[str, object] = field(default_factory=dict)  # [quick]: overrides of small, mechanics only

    @property
    def source(self) -> Path:
        return self.folder / self.notebook

    @property
    def quick_setting(self) -> dict[str, object]:
        """The quickest setting that still runs every cell (the small one with ``[quick]`` on
        top): for checks of the mechanics (every cell runs, figures, widgets), not of results."""
        return {**self.small, **self.quick}

    @property
    def stem(self) -> str:
        return Path(self.notebook).stem


def _required(table: dict, key: str, kind: type | tuple[type, ...], where: str):
    if key not in table:
        raise BadDeclaration(f"{where}: {key!r} is missing")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kind):  # no declared value is a boolean
        raise BadDeclaration(f"{where}: {key!r} has the wrong type ({value!r})")
    return value


def load_declaration(folder: Path) -> Assignment:
    """Read and check ``folder/assignment.toml``."""
    path = folder / DECLARATION
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise BadDeclaration(f"{where}: {err}") from None
    unknown = sorted(set(data) - {"notebook", "small", "quick", "timeouts", "examples", "trusted"})
    if unknown:
        raise BadDeclaration(f"{where}: unknown key(s) {', '.join(unknown)}")
    notebook = _required(data, "notebook", str, where)
    if "/" in notebook or not notebook.endswith(".ipynb") or not (folder / notebook).is_file():
        raise BadDeclaration(f"{where}: notebook {notebook!r} is not an .ipynb file in {folder}")
    small = _required(data, "small", dict, where)
    quick = _required(data, "quick", dict, where) if "quick" in data else {}
    times = _required(data, "timeouts", dict, where)
    cell, training, notebook_limit = (_required(times, key, (int, float), f"{where} [timeouts]")
                                      for key in ("cell", "training", "notebook"))
    if min(cell, training, notebook_limit) <= 0:
        raise BadDeclaration(f"{where} [timeouts]: every timeout must be a positive number of seconds")
    examples = {}
    for kind, spec in _required(data, "examples", dict, where).items() if "examples" in data else ():
        if not isinstance(spec, dict):
            raise BadDeclaration(f"{where} [examples]: {kind} must be {{ status = ..., share = [low, high] }}")
        status = _required(spec, "status", str, f"{where} [examples.{kind}]")
        share = _required(spec, "share", list, f"{where} [examples.{kind}]")
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in share)
        if status not in STATUSES or len(share) != 2 or not numbers or not 0 <= share[0] <= share[1] <= 1:
            raise BadDeclaration(f"{where} [examples.{kind}]: status one of {STATUSES} and share "
                                 f"[low, high] within 0..1, got {spec!r}")
        examples[kind] = Expectation(status, float(share[0]), float(share[1]))
    timeouts = Timeouts(int(cell), int(training), float(notebook_limit))
    return Assignment(folder.name, folder, notebook, dict(small), timeouts, examples,
                      _trusted(data["trusted"], folder, f"{where} [trusted]") if "trusted" in data else None,
                      dict(quick))


def _names(table: dict, key: str, where: str, required: bool = True) -> tuple[str, ...]:
    if key not in table and not required:
        return ()
    names = _required(table, key, list, where)
    if not names and required or not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..")
                                         for n in names):
        raise BadDeclaration(f"{where}: {key} must be a list of names (no folders), got {names!r}")
    return tuple(names)


def _trusted(table, folder: Path, where: str) -> Trusted:
    if not isinstance(table, dict):
        raise BadDeclaration(f"{where}: must be a table (cells, kernel_outputs, kernel_inputs)")
    unknown = sorted(set(table) - {"cells", "kernel_outputs", "kernel_inputs"})
    if unknown:
        raise BadDeclaration(f"{where}: unknown key(s) {', '.join(unknown)}")
    declared = Trusted(_names(table, "cells", where), _names(table, "kernel_outputs", where),
                       _names(table, "kernel_inputs", where, required=False))
    missing = [n for n in declared.kernel_inputs if not (folder / n).is_file() or (folder / n).is_symlink()]
    if missing:
        raise BadDeclaration(f"{where}: kernel_inputs {missing} are not files of {folder}")
    if not (folder / GRADING_MODULE).is_file():
        raise BadDeclaration(f"{where}: trusted cells need a {GRADING_MODULE} with trusted_verdicts beside it")
    return declared


@functools.cache
def assignments(root: Path | None = None) -> dict[str, Assignment]:
    """Every assignment of the course, by name, in name order: each folder of ``solutions/``
    that holds an ``assignment.toml``."""
    source = (root or course_root()) / SOURCE_FOLDER
    return {folder.name: load_declaration(folder)
            for folder in sorted(source.iterdir()) if (folder / DECLARATION).is_file()}


def assignment(name: str) -> Assignment:
    try:
        return assignments()[name]
    except KeyError:
        raise KeyError(f"unknown assignment {name!r}; the course has {', '.join(assignments())}") from None


def grading_module(name: str):
    """The assignment's ``grading.py`` as a module (loaded once), or None where it has none
    (or the assignment has no declaration: nbgrader may know assignments the harness does not)."""
    declared = assignments().get(name)
    path = declared.folder / GRADING_MODULE if declared else None
    if path is None or not path.is_file():
        return None
    module_name = "autograder_course_" + re.sub(r"\W", "_", name)
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before running it: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


PROBE_CALL = re.compile(r"""answer_probes\(\s*(['"])(?P<grade_id>[^'"]+)\1""")


def probed_in_source(folder: Path) -> set[str]:
    """The grade ids the source notebooks' hidden tests answer probes for (``answer_probes("id", ...)``)."""
    import nbformat

    found = set()
    for path in sorted(folder.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found.update(m["grade_id"] for m in PROBE_CALL.finditer(cell.source))
    return found


def probes(name: str) -> dict:
    """``{grade_id: Probe}``: the probes the assignment's ``grading.py`` declares. Refused
    (:class:`BadDeclaration`, so no check passes) where a hidden test of the source answers a
    probe that is not declared: its answers would go unchecked and the kernel's verdict stand;
    where ``grading.py`` has no ``PROBES``; and where a probe guards a trusted cell."""
    declared = assignments().get(name)
    folder = declared.folder if declared else course_root() / SOURCE_FOLDER / name
    module = grading_module(name)
    found = getattr(module, "PROBES", None) if module else {}
    if not isinstance(found, dict):
        raise BadDeclaration(f"{folder / GRADING_MODULE}: PROBES must be a dict {{grade id: Probe}}, got {found!r}"[:300])
    asked = probed_in_source(folder) if folder.is_dir() else set()
    missing = sorted(asked - set(found))
    if missing:
        where = folder / GRADING_MODULE if module else f"{folder} (no {GRADING_MODULE})"
        raise BadDeclaration(f"{where}: the hidden tests answer probes {', '.join(missing)}, which PROBES does not "
                             "declare: their answers could not be checked")
    overlap = sorted(set(found) & set(declared.trusted.cells if declared and declared.trusted else ()))
    if overlap:
        raise BadDeclaration(f"{folder / DECLARATION}: {', '.join(overlap)} both probed and trusted-scored")
    return dict(found)


def grading_files() -> list[Path]:
    """Every assignment's declaration and grader code: what decides its grades besides the notebook."""
    return sorted(p for a in assignments().values() for p in (a.folder / DECLARATION, a.folder / GRADING_MODULE)
                  if p.is_file())


def __getattr__(name: str):
    """The course-dependent constants, computed on first use (PEP 562)."""
    if name == "ROOT":
        return course_root()
    if name == "SOLUTIONS":
        return course_root() / SOURCE_FOLDER
    if name == "NOTEBOOKS":
        return course_root() / RELEASE_FOLDER
    if name == "ASSIGNMENTS":
        return {a.name: a.notebook for a in assignments().values()}
    if name == "SMALL_PARAMETERS":
        return {a.name: dict(a.small) for a in assignments().values()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def solution_path(assignment_name: str) -> Path:
    return assignment(assignment_name).source


@functools.lru_cache(maxsize=16)
def source_notebook(assignment_name: str):
    """The instructor's source notebook, read once per process (callers only read it)."""
    import nbformat

    return nbformat.read(solution_path(assignment_name), as_version=4)


def student_path(assignment_name: str) -> Path:
    a = assignment(assignment_name)
    return course_root() / RELEASE_FOLDER / a.name / a.notebook


PARAMETERS_ID = "parameters"  # the grade id of every notebook's locked parameters cell


def parameters_cell(nb, graded: bool = False) -> dict:
    """The parameters cell of a notebook node: the locked code cell whose nbgrader grade id is
    ``parameters``, else (not ``graded``) the cell tagged ``parameters`` (papermill's convention).

    While grading, only the locked cell counts: nbgrader restores it from the gradebook, while
    tags are the student's metadata (a cell of their own tagged ``parameters`` must not choose
    the budget)."""
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") == "code" and meta.get("grade_id") == PARAMETERS_ID and meta.get("locked"):
            return cell
    if graded:
        raise ValueError(f"the notebook has no locked cell {PARAMETERS_ID!r}")
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no cell tagged 'parameters'")


def parameter_names(nb) -> list[str]:
    """Names assigned at the start of a line of the parameters cell, in order."""
    return [m.group(1) for m in (re.match(r"^(\w+)\s*=", line) for line in parameters_cell(nb).source.splitlines()) if m]


def pin_parameters(nb, values: dict[str, object], graded: bool = False) -> None:
    """Rewrite ``name = value`` lines of the parameters cell in place, keeping comments
    (``graded``: only the locked parameters cell, see :func:`parameters_cell`).

    Every name must already be a parameter: a typo raises instead of being ignored.
    Values are written with ``repr`` so they stay Python literals.
    """
    cell = parameters_cell(nb, graded=graded)
    lines = cell.source.splitlines()
    for name, value in values.items():
        pattern = re.compile(rf"^{re.escape(name)}\s*=\s*(?P<value>[^#]*?)\s*(?P<comment>#.*)?$")
        for i, line in enumerate(lines):
            match = pattern.match(line)
            if match:
                comment = f"  {match['comment']}" if match["comment"] else ""
                lines[i] = f"{name} = {value!r}{comment}"
                break
        else:
            raise KeyError(f"{name!r} is not a parameter of this notebook; it has {parameter_names(nb)}")
    cell.source = "\n".join(lines)
