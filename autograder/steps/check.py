"""Check: what the out-of-kernel checks (:mod:`autograder.checks`, inside autograde) recorded
in the graded notebook, and the cells nbgrader interrupted at their timeout."""

from __future__ import annotations

import nbformat

from autograder.task import GradingOptions, Task, Verdict


def check_record(task: Task, opts: GradingOptions) -> None:
    """Read the out-of-kernel checks' record (:mod:`autograder.checks`) from the graded
    notebook: its notes go into the reason; a missing or incomplete record, or a check that
    could not complete, makes the status ``error`` (the guarded cells have no points either way)."""
    nb = nbformat.read(task.workspace / "autograded" / task.student / opts.assignment / opts.notebook, as_version=4)
    record = nb.metadata.get("autograder", {}).get("checks")
    notes = [f"trusted: {note}" for note in (record or {}).get("notes", [])]
    task.reason = "; ".join([r for r in (task.reason,) if r] + notes)
    if not isinstance(record, dict) or record.get("complete") is not True:
        why = (record or {}).get("error") or "no record of it in the graded notebook"
        raise Verdict("error", f"the out-of-kernel check failed ({why}): its cells get no points")
    failed = sorted(g for g, cell in record.get("cells", {}).items() if cell.get("check_failed"))
    if failed:
        reason = record["cells"][failed[0]].get("reason", "")
        raise Verdict("error", f"the out-of-kernel check of {', '.join(failed)} failed ({reason}): no points for them")


def find_cell_timeouts(task: Task, opts: GradingOptions) -> None:
    """Cells that nbgrader interrupted at their timeout: the rest was graded, status ``timeout``."""
    nb = nbformat.read(task.workspace / "autograded" / task.student / opts.assignment / opts.notebook, as_version=4)
    slow = [f"cell {i}" + (f" ({cell.metadata['nbgrader']['grade_id']})" if "nbgrader" in cell.metadata else "")
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and any(o.get("output_type") == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs)]
    if slow:
        cells = ", ".join(slow)
        raise Verdict("timeout", f"{cells} ran past the per-cell timeout and was interrupted; the other cells were graded")
