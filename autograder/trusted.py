"""Trusted scoring: what a kernel leaves behind, scored out of the kernel in a fresh sandbox.

Some graded cells cannot be decided by a test that runs in the student's kernel (the kernel
can fool anything that runs there), nor by a probe (a trained model is not an answer to a
fixed input). An assignment whose ``grading.py`` (:func:`autograder.course.grading_module`)
defines the four names below has such cells decided out of the kernel, by
:mod:`autograder.checks`, so plain ``nbgrader autograde`` and ``autograder grade`` both use
them:

``TRUSTED_CELLS``
    the grade ids whose points only the trusted scorer gives;
``KERNEL_OUTPUTS``
    the files the kernel must leave for it (read back by the sandbox: regular files of bounded
    size, never followed links);
``KERNEL_INPUTS``
    ``{name: path}`` of files staged beside the notebook (what the notebook may show);
``trusted_verdicts(nb, left_files, course_root)``
    ``({grade id: '' if it passes, else why not}, one-line note)``; raising fails those cells
    closed.

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

TRUSTED_NAMES = ("TRUSTED_CELLS", "KERNEL_OUTPUTS", "KERNEL_INPUTS", "trusted_verdicts")
RESULT_FILE, MAX_RESULT_BYTES = "result.json", 2**16


def scorer(assignment: str):
    """The assignment's grading module if it scores cells out of the kernel, else None. A
    module that defines some of :data:`TRUSTED_NAMES` but not all is refused: its cells would
    be left to the kernel."""
    from autograder import course

    module = course.grading_module(assignment)
    if module is None:
        return None
    present = [name for name in TRUSTED_NAMES if hasattr(module, name)]
    if not present:
        return None
    if len(present) != len(TRUSTED_NAMES):
        missing = sorted(set(TRUSTED_NAMES) - set(present))
        raise AttributeError(f"{module.__file__} scores cells out of the kernel but lacks {', '.join(missing)}")
    return module


def trusted_cells(assignment: str) -> tuple[str, ...]:
    module = scorer(assignment)
    return tuple(module.TRUSTED_CELLS) if module else ()


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
