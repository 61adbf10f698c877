"""Exercises a student cannot pass by calling the reference they re-implement.

An assignment's source notebook (``solutions/``, the instructor's copy: the student's own
metadata decides nothing) names, on a test cell, the reference objects its exercise
re-implements::

    "metadata": {"course": {"must_not_use": ["course_lib.losses.CombinedLoss", ...]}}

After the kernel has stopped, :func:`reference_uses` reads every cell the student can edit
(solution cells and cells of their own; the source's locked cells are restored by nbgrader; a
verbatim copy of a locked cell standing right beside it, as JupyterLab's duplicate leaves it, runs
where the original runs and is left out) and reports each one that reaches such a reference: importing it, naming it (``losses.CombinedLoss``,
``CombinedLoss`` where the student did not define that name), or spelling it in a string
(``getattr(m, "CombinedLoss")``, ``import_module("course_lib.losses")``), or using a name the
source's locked cells bind to it or to its module (``_losses`` after ``import course_lib.losses
as _losses``). Lookups the grader cannot follow statically (``eval``, ``exec``, ``__import__``,
``importlib``, ``globals()``, ``getattr`` with a computed name, ``sys.modules``, ``__dict__``,
frame and function globals) and shell or ``%run`` lines count as reaching it too: what cannot be
checked gives no points. So does a locked cell moved out of the source's order: nbgrader
restores its code wherever it stands, and a demo cell that binds the library, moved above an
exercise's test, would hand the exercise the reference. The rule the notebooks state: your own cells do not use the reference
of an exercise, before or after it (a later cell could rewrite the probes' results).
"""

from __future__ import annotations

import ast
import functools
import re

from autograder.course import source_notebook

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
    nb = source_notebook(assignment)
    found = {}
    for cell in nb.cells:
        names = cell.get("metadata", {}).get(METADATA_KEY, {}).get("must_not_use")
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if names and grade_id:
            found[grade_id] = tuple(str(n) for n in names)
    return found


def locked_in_source(assignment: str) -> frozenset[str]:
    """Grade ids of the source's locked cells (the notebook's own ``locked`` flags are the student's)."""
    return frozenset(_locked_order(assignment))


def _normalized(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.splitlines() if line.strip())


@functools.lru_cache(maxsize=8)
def locked_sources(assignment: str) -> dict[str, frozenset[str]]:
    """{normalised source: grade ids} of the source's locked cells, each as nbgrader restores it
    and as the student version shows it (hidden tests cut)."""
    nb = source_notebook(assignment)
    sources: dict[str, set[str]] = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("locked"):
            for text in (cell.source, HIDDEN_TESTS.sub("", cell.source)):
                sources.setdefault(_normalized(text), set()).add(meta["grade_id"])
    return {text: frozenset(ids) for text, ids in sources.items()}


def _copies_beside_their_original(nb, assignment: str) -> set[int]:
    """Indices of cells that are verbatim copies of a locked cell standing right beside it (or
    beside another such copy of it): what JupyterLab's duplicate or copy-and-paste of a cell
    leaves, and what nbgrader turns into an ordinary cell when the grade id is duplicated. Such a
    copy runs where the original runs, so it reaches nothing the original does not. A copy
    anywhere else is the student's code like any other (a demo cell's handle on the reference,
    pasted above an exercise, would reach it early)."""
    locked, sources = locked_in_source(assignment), locked_sources(assignment)
    ids = [cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") for cell in nb.cells]
    copied = [sources.get(_normalized(cell.get("source", "")), frozenset()) if cell.get("cell_type") == "code"
              and ids[i] not in locked else frozenset() for i, cell in enumerate(nb.cells)]
    beside = set()
    for index, originals in enumerate(copied):
        for step in (-1, 1):
            j = index + step
            while 0 <= j < len(nb.cells) and copied[j] & originals and ids[j] not in locked:
                j += step
            if 0 <= j < len(nb.cells) and ids[j] in originals:
                beside.add(index)
    return beside


def student_code_cells(nb, assignment: str) -> list[tuple[str, str]]:
    """``(where, source)`` of every code cell the student can edit, less copies of a locked cell
    standing beside it (:func:`_copies_beside_their_original`)."""
    locked, beside = locked_in_source(assignment), _copies_beside_their_original(nb, assignment)
    cells = []
    for index, cell in enumerate(nb.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.get("cell_type") == "code" and grade_id not in locked and index not in beside:
            cells.append((grade_id or f"cell {index}", cell.get("source", "")))
    return cells


@functools.lru_cache(maxsize=32)
def source_aliases(assignment: str, references: tuple[str, ...]) -> frozenset[str]:
    """Names the source's locked cells bind to one of ``references`` or to a module holding one
    (``_CombinedLoss``, ``_losses``), and the private names its test cells define (``_reference_step``,
    ``_answer_probes``): a student cell naming them reaches the reference or the tests' machinery."""
    modules = {ref.rsplit(".", 1)[0] for ref in references if "." in ref}
    nb = source_notebook(assignment)
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
    found = [f"{moved} no longer stands where the assignment puts it, so what it binds may reach an exercise "
             "before its test" for moved in _moved_locked_cells(nb, assignment)]
    for where, tree in trees:
        if not isinstance(tree, ast.AST):
            found.append(f"{where} {tree}, so it may call the reference")
            continue
        hits = sorted(_hits(tree, references, defined, aliases))
        if hits:
            found.append(f"{where} uses {', '.join(hits)}")
    return found


@functools.lru_cache(maxsize=8)
def _locked_order(assignment: str) -> tuple[str, ...]:
    """Grade ids of the source's locked cells (demo and test cells), in the source's order."""
    nb = source_notebook(assignment)
    return tuple(c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("locked"))


def _moved_locked_cells(nb, assignment: str) -> list[str]:
    """Locked cells the submission moved out of the source's order: nbgrader restores a locked
    cell's code by its grade id wherever it stands, so a demo cell binding a reference
    (``criterion = losses.CombinedLoss()``) moved above a test cell would hand its exercise the
    reference. (The student's own solution cells may move: that reaches nothing.)"""
    source = _locked_order(assignment)
    rank = {grade_id: i for i, grade_id in enumerate(source)}
    last = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}
    order = [rank[g] for g, _ in sorted(last.items(), key=lambda item: item[1]) if g in rank]  # nbgrader keeps the last of an id
    # the cells that stayed: a longest run in the source's order; the others moved
    best = [1] * len(order)
    previous = [-1] * len(order)
    for i in range(len(order)):
        for j in range(i):
            if order[j] < order[i] and best[j] + 1 > best[i]:
                best[i], previous[i] = best[j] + 1, j
    stayed, i = set(), max(range(len(order)), key=best.__getitem__, default=-1)
    while i >= 0:
        stayed.add(i)
        i = previous[i]
    return [f"locked cell {source[here]!r}" for position, here in enumerate(order) if position not in stayed]


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
