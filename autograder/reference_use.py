"""Exercises a student cannot pass by calling the reference they re-implement.

An assignment's source notebook (``solutions/``, the instructor's copy: the student's own
metadata decides nothing) names, on a test cell, the reference objects its exercise
re-implements::

    "metadata": {"course": {"must_not_use": ["course_lib.losses.CombinedLoss", ...]}}

After the kernel has stopped, :func:`reference_uses` reads every cell the student can edit
(solution cells and cells of their own; the source's locked cells are restored by nbgrader) and
reports each one that reaches such a reference: importing it, naming it (``losses.CombinedLoss``,
``CombinedLoss`` where the student did not define that name), or spelling it in a string
(``getattr(m, "CombinedLoss")``, ``import_module("course_lib.losses")``), or using a name the
source's locked cells bind to it or to its module (``_losses`` after ``import course_lib.losses
as _losses``). Lookups the grader cannot follow statically (``eval``, ``exec``, ``__import__``,
``importlib``, ``globals()``, ``getattr`` with a computed name, ``sys.modules``, ``__dict__``,
frame and function globals) and shell or ``%run`` lines count as reaching it too: what cannot be
checked gives no points. The rule the notebooks state: your own cells do not use the reference
of an exercise, before or after it (a later cell could rewrite the probes' results).
"""

from __future__ import annotations

import ast
import functools
import re

import nbformat

from autograder.course import solution_path

METADATA_KEY = "course"
DYNAMIC_BUILTINS = frozenset({"eval", "exec", "compile", "__import__", "importlib", "globals", "locals", "vars",
                              "__builtins__", "__loader__", "__spec__"})
DYNAMIC_ATTRIBUTES = frozenset({"__dict__", "__globals__", "f_globals", "f_locals", "_getframe", "__getattribute__",
                                "__builtins__", "__subclasses__", "__mro__", "__bases__"})
HIDDEN_TESTS = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.M | re.S)
UNREADABLE_MAGICS = ("%run", "%load", "%%bash", "%%sh", "%%script", "%%writefile", "%%python", "%sx", "%system")


@functools.lru_cache(maxsize=8)
def forbidden_references(assignment: str) -> dict[str, tuple[str, ...]]:
    """{test cell grade id: the references its exercise must not use}, from the source notebook."""
    nb = nbformat.read(solution_path(assignment), as_version=4)
    found = {}
    for cell in nb.cells:
        names = cell.get("metadata", {}).get(METADATA_KEY, {}).get("must_not_use")
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if names and grade_id:
            found[grade_id] = tuple(str(n) for n in names)
    return found


@functools.lru_cache(maxsize=8)
def locked_in_source(assignment: str) -> frozenset[str]:
    """Grade ids of the source's locked cells (the notebook's own ``locked`` flags are the student's)."""
    nb = nbformat.read(solution_path(assignment), as_version=4)
    return frozenset(c.metadata["nbgrader"]["grade_id"] for c in nb.cells
                     if c.get("metadata", {}).get("nbgrader", {}).get("locked"))


def _normalized(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.splitlines() if line.strip())


@functools.lru_cache(maxsize=8)
def locked_sources(assignment: str) -> frozenset[str]:
    """The source's locked cells as nbgrader restores them and as the student version shows them
    (hidden tests cut), normalised: a copy of one does only what the original already does."""
    nb = nbformat.read(solution_path(assignment), as_version=4)
    sources = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("locked"):
            sources.add(_normalized(cell.source))
            sources.add(_normalized(HIDDEN_TESTS.sub("", cell.source)))
    return frozenset(sources)


def student_code_cells(nb, assignment: str) -> list[tuple[str, str]]:
    """``(where, source)`` of every code cell the student can edit, less verbatim copies of the
    source's locked cells (JupyterLab's copy of a test cell keeps its grade id, and nbgrader strips
    the metadata of all but the last cell of an id, leaving the copy as an ordinary cell)."""
    locked, copies = locked_in_source(assignment), locked_sources(assignment)
    cells = []
    for index, cell in enumerate(nb.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        source = cell.get("source", "")
        if cell.get("cell_type") == "code" and grade_id not in locked and _normalized(source) not in copies:
            cells.append((grade_id or f"cell {index}", source))
    return cells


@functools.lru_cache(maxsize=32)
def source_aliases(assignment: str, references: tuple[str, ...]) -> frozenset[str]:
    """Names the source's locked cells bind to one of ``references`` or to a module holding one
    (``_CombinedLoss``, ``_losses``), and the private names its test cells define (``_reference_step``,
    ``_answer_probes``): a student cell naming them reaches the reference or the tests' machinery."""
    modules = {ref.rsplit(".", 1)[0] for ref in references if "." in ref}
    nb = nbformat.read(solution_path(assignment), as_version=4)
    aliases = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.get("metadata", {}).get("nbgrader", {}).get("locked"):
            continue
        try:
            tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        if cell.metadata["nbgrader"].get("grade"):  # a test cell: its private helpers are off limits
            for node in tree.body:
                names = ([node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else
                         [a.asname or a.name.split(".")[0] for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else
                         [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)])
                aliases.update(n for n in names if n.startswith("_"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in references or f"{node.module}.{alias.name}" in modules:
                        aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname for a in node.names if a.asname and a.name in modules)
    return frozenset(aliases)


def reference_uses(nb, assignment: str, references: tuple[str, ...]) -> list[str]:
    """One description per student cell that reaches one of ``references`` (see the module);
    a cell that cannot be parsed, or runs shell or ``%run`` lines, counts as reaching them."""
    from autograder.trusted import _magics_as_python

    cells, trees = student_code_cells(nb, assignment), []
    for where, source in cells:
        unreadable = [line.strip().split()[0] for line in source.splitlines()
                      if line.strip().startswith("!") or line.strip().startswith(UNREADABLE_MAGICS)]
        if unreadable:
            trees.append((where, f"runs {unreadable[0]!r}, which the grader cannot read"))
            continue
        try:
            trees.append((where, ast.parse(_magics_as_python(source))))
        except (SyntaxError, ValueError, RecursionError) as err:
            trees.append((where, f"could not be read ({type(err).__name__})"))
    defined = set().union(*(_defined_names(t) for _, t in trees if isinstance(t, ast.AST)))
    aliases = source_aliases(assignment, tuple(references))
    found = []
    for where, tree in trees:
        if not isinstance(tree, ast.AST):
            found.append(f"{where} {tree}, so it may call the reference")
            continue
        hits = sorted(_hits(tree, references, defined, aliases))
        if hits:
            found.append(f"{where} uses {', '.join(hits)}")
    return found


def _defined_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _hits(tree: ast.AST, references: tuple[str, ...], defined: set[str], aliases: frozenset[str] = frozenset()) -> set[str]:
    leaves = {ref.rsplit(".", 1)[-1]: ref for ref in references}
    modules = {ref.rsplit(".", 1)[0] for ref in references if "." in ref}
    hits = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in references or (node.module in modules and (alias.name == "*" or alias.name.startswith("_"))):
                    hits.add(full)
        elif isinstance(node, ast.Import):
            hits.update(a.name for a in node.names if a.name.split(".")[0] in {"importlib"})
        elif isinstance(node, ast.Attribute) and node.attr in leaves:
            hits.add(leaves[node.attr])
        elif isinstance(node, ast.Attribute) and (node.attr in DYNAMIC_ATTRIBUTES or (
                node.attr == "modules" and isinstance(node.value, ast.Name) and node.value.id == "sys")):
            hits.add(f"{node.attr} (a lookup the grader cannot check)")
        elif isinstance(node, ast.Name) and node.id in leaves and node.id not in defined:
            hits.add(leaves[node.id])
        elif isinstance(node, ast.Name) and node.id in aliases and node.id not in defined:
            hits.add(f"{node.id} (the notebook's own handle on the reference)")
        elif isinstance(node, ast.Name) and node.id in DYNAMIC_BUILTINS and node.id not in defined:
            hits.add(f"{node.id} (a lookup the grader cannot check)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if text in leaves or text in references or text in modules:
                hits.add(leaves.get(text) or text)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant)):
            hits.add("getattr with a computed name (a lookup the grader cannot check)")
    return hits
