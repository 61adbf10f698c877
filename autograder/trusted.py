"""Trusted scoring: what a kernel leaves behind, scored out of the kernel in a fresh sandbox.

Some graded cells cannot be decided by a test that runs in the student's kernel (the kernel
can fool anything that runs there), nor by a probe (a trained model is not an answer to a
fixed input). An assignment declares such cells in the ``[trusted]`` table of its
``assignment.toml`` (:class:`autograder.course.Trusted`: the cells, the files the kernel must
leave for the scorer, the files of its folder staged beside the notebook) and scores them with
``trusted_verdicts(nb, left_files, course_root)`` in its ``grading.py``, which returns
``({grade id: '' if it passes, else why not}, one-line note)`` for exactly those cells;
raising, or answering anything else, fails them closed. :mod:`autograder.checks` calls it, so
plain ``nbgrader autograde`` and ``autograder grade`` both use it; ``grading.py`` is imported
only then (the declaration says which cells are guarded without running any code).

This module holds what such scorers share: :func:`run_scorer` runs a script in a fresh Python
inside the sandbox, under the kernels' limits, on private copies of the files it scores;
:func:`notebook_parameters` reads the locked parameters cell as the grader pinned it;
:func:`calls_in_editable_cells` finds run-time calls in the cells a student can edit.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

RESULT_FILE, MAX_RESULT_BYTES = "result.json", 2**16


def declared(assignment: str):
    """The assignment's :class:`autograder.course.Trusted` declaration, or None."""
    from autograder import course

    found = course.assignments().get(assignment)
    return found.trusted if found else None


def trusted_cells(assignment: str) -> tuple[str, ...]:
    found = declared(assignment)
    return found.cells if found else ()


def scorer(assignment: str):
    """The assignment's ``trusted_verdicts`` (None where it declares no trusted cells); an
    assignment that declares them without the function is refused."""
    from autograder import course

    if not declared(assignment):
        return None
    module = course.grading_module(assignment)
    verdicts = getattr(module, "trusted_verdicts", None)
    if not callable(verdicts):
        raise AttributeError(f"{assignment}: its assignment.toml declares trusted cells, its grading.py has no "
                             "trusted_verdicts(nb, left_files, course_root)")
    return verdicts


def run_scorer(script: str, args: list[str], files: dict[str, bytes], timeout: float) -> dict:
    """Run ``python -c script ARGS`` in a fresh process inside the sandbox (the kernels'
    limits, no network, only its own folder writable), with ``files`` written into its
    working folder, a private folder of :mod:`autograder.runtime` (reaped if the grader dies).
    The script must write its answer as a JSON object to ``result.json``; returns it. Raises
    when the script times out, crashes or writes no answer."""
    from autograder import runtime, sandbox

    folder = runtime.new_folder()
    enforcement = None
    try:
        work = folder / "work"
        work.mkdir()
        for name, data in files.items():
            (work / name).write_bytes(data)
        env = sandbox.kernel_environment(dict(os.environ, COURSE_LIB_WIDGETS="0"))
        cmd, enforcement = sandbox.confine([sys.executable, "-c", script, *args], str(work), [], env,
                                           sandbox.Limits.from_env(), str(folder / "stdio.log"))
        try:
            subprocess.run(cmd, cwd=work, env=env, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the trusted scorer took over {timeout:g} s") from None
        result = sandbox.read_left_file(work / RESULT_FILE, MAX_RESULT_BYTES)
        if result.data is None:
            log = folder / "stdio.log"
            tail = log.read_text(errors="replace")[-300:].strip() if log.exists() else ""
            raise RuntimeError(f"the trusted scorer failed: {tail.splitlines()[-1] if tail else 'no result'}")
        answer = json.loads(result.data)
        if not isinstance(answer, dict):
            raise RuntimeError(f"the trusted scorer's answer is not an object: {answer!r}"[:200])
        return answer
    finally:
        if enforcement is not None:
            enforcement.remove()
        runtime.remove(folder)


def notebook_parameters(nb) -> dict[str, object]:
    """``name = literal`` values of the parameters cell of a notebook (after pinning)."""
    from autograder.course import parameters_cell

    values = {}
    for node in ast.parse(parameters_cell(nb, graded=True).source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def calls_in_editable_cells(nb, assignment: str, names: set[str]) -> list[str]:
    """Cells the student can edit (solution cells, cells of their own) that call one of
    ``names`` at run time, outside a function body: the source's locked cells (which nbgrader
    restores) are left out, and a function merely *defined* in a solution cell is fine. One
    description per offending cell, and one per cell that could not be read."""
    from autograder.reference_use import locked_in_source  # the instructor's source, read once

    locked, found = locked_in_source(assignment), []
    for index, cell in enumerate(nb.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.get("cell_type") != "code" or grade_id in locked:
            continue
        where = grade_id or f"cell {index}"
        try:
            tree = ast.parse(_magics_as_python(cell.source))
        except (SyntaxError, ValueError, RecursionError) as err:
            found.append(f"{where} could not be read ({type(err).__name__})")
            continue
        calls = sorted({name for statement in tree.body if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for name in _called_names(statement) if name in names})
        if calls:
            found.append(f"{where} calls {', '.join(calls)}")
    return found


def _magics_as_python(source: str) -> str:
    """The cell's code with IPython's syntax unwrapped: ``%time x = f()`` becomes ``x = f()``
    (the code a line magic runs is hidden in a string after IPython's own transform), a
    ``%%time`` header and ``!shell`` lines are dropped."""
    lines = []
    for line in source.splitlines():
        stripped, indent = line.lstrip(), line[: len(line) - len(line.lstrip())]
        if stripped.startswith(("%%", "!")):
            continue
        if stripped.startswith("%"):
            parts = stripped.split(None, 1)
            line = indent + (parts[1] if len(parts) > 1 else "pass")
        lines.append(line)
    return "\n".join(lines)


def _called_names(node: ast.AST) -> set[str]:
    """Names of the functions and methods called in ``node``, not descending into function
    definitions (a class body runs when it is defined: it is searched)."""
    names, todo = set(), [node]
    while todo:
        current = todo.pop()
        if isinstance(current, ast.Call):
            func = current.func
            names.add(func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "")
        todo.extend(child for child in ast.iter_child_nodes(current)
                    if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    return names
