"""Verdicts made out of the student's kernel, failing closed: two steps of nbgrader's autograde.

``CheckOutOfKernel`` runs after the sandboxed kernel stopped. For every cell the grader
guards (the probed cells of :mod:`autograder.verdicts` and the trusted-scored cells of
:mod:`autograder.trusted`, as the grader's side lists them, whatever the notebook says) it
decides from the files the kernel left, as the sandbox read them back, and writes one record
into ``resources["autograder"]["record"]`` and the notebook's metadata
(``metadata.autograder.checks``)::

    {"complete": true, "error": "", "notes": [...],
     "cells": {"<grade id>": {"ok": false, "reason": "...", "check_failed": false}, ...}}

``complete`` is set last, only when every check ran to its end within ``timeout``. A guarded
cell that did not pass gets an error output saying why (the student sees it in the feedback).

``SaveVerifiedGrades`` replaces nbgrader's ``SaveAutoGrades``: a guarded cell keeps the points
its kernel claimed only if that record **positively** says it passed. An exception, a
timeout, an unexpected file, a missing or incomplete record: no points, with no reliance on an
exception reaching anyone (nbgrader swallows the exceptions of its hooks). ``autograder grade``
reads the same record to give the submission its status.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor, SaveAutoGrades
from nbgrader.utils import determine_grade, is_grade
from traitlets import Float, Unicode
from traitlets.config import Configurable

from autograder import course_secrets, reference_use, trusted, verdicts
from autograder.sandbox import LeftFile

CHECK_FAILED = "TrustedCheckFailed"  # ename of the error output a failed guarded cell gets


class OutOfKernelChecks(Configurable):
    """Settings shared by the steps below (the course config sets ``course_root``)."""

    course_root = Unicode(".", help="the course root: its secrets and probe cache").tag(config=True)
    timeout = Float(900.0, help="seconds all checks of one submission may take").tag(config=True)


@functools.lru_cache(maxsize=8)  # one version of the probes per grading process
def _cache(assignment: str, course_root: str) -> Path:
    salt = course_secrets.load(course_root)["probe_salt"]
    return verdicts.probe_cache(assignment, verdicts.cache_root(course_root), salt)


def guarded_cells(assignment: str, course_root: str) -> list[str]:
    """The grade ids whose points only a check out of the kernel can give."""
    cells = verdicts.probed_cells(_cache(assignment, course_root))
    cells += [g for g in reference_use.forbidden_references(assignment) if g not in cells]
    return cells + [g for g in trusted.trusted_cells(assignment) if g not in cells]


def kernel_files(resources: dict, course_root: str) -> tuple[dict[str, Path], list[str]]:
    """For ``SandboxedExecute.kernel_files``: the probe inputs the kernel gets and the files it
    must leave (probe results, the final assignment's export)."""
    assignment = resources["nbgrader"]["assignment"]
    cache = _cache(assignment, course_root)
    inputs, outputs = verdicts.probe_inputs(cache), list(verdicts.probe_outputs(cache).values())
    declared = trusted.declared(assignment)
    if declared:  # the files named in its assignment.toml, of its source folder
        from autograder import course

        folder = course.assignment(assignment).folder
        outputs += list(declared.kernel_outputs)
        inputs = {**inputs, **{name: folder / name for name in declared.kernel_inputs}}
    return inputs, outputs


def _failed_check(err: Exception) -> dict:
    return {"ok": False, "reason": f"the check failed: {type(err).__name__}: {err}"[:300], "check_failed": True}


def _verify(assignment: str, nb: NotebookNode, left: dict, course_root: str) -> tuple[dict[str, dict], list[str]]:
    """{grade id: verdict} of every guarded cell, and notes for the log and the status."""
    cells, notes = {}, []
    cache = _cache(assignment, course_root)
    for grade_id, name in verdicts.probe_outputs(cache).items():
        try:
            expected = verdicts.load_arrays(verdicts.expected_path(cache, grade_id))
            reason = verdicts.check_probe(expected, left.get(name) or LeftFile(None, "missing"))
        except Exception as err:
            cells[grade_id] = _failed_check(err)
            continue
        cells[grade_id] = {"ok": not reason, "reason": reason, "check_failed": False}
    # An exercise solved by calling the reference it re-implements gets nothing, probe or not.
    for grade_id, references in reference_use.forbidden_references(assignment).items():
        try:
            uses = reference_use.reference_uses(nb, assignment, references)
        except Exception as err:  # this cell fails closed, the others keep their verdicts
            cells[grade_id] = _failed_check(err)
            continue
        if uses:
            cells[grade_id] = {"ok": False, "check_failed": False,
                               "reason": f"the reference it re-implements is used: {'; '.join(uses)}"[:300]}
        else:
            cells.setdefault(grade_id, {"ok": True, "reason": "", "check_failed": False})
    decided = trusted.trusted_cells(assignment)
    if decided:
        try:
            scored, note = trusted.scorer(assignment)(nb, left, course_root)
            if not isinstance(scored, dict) or set(scored) != set(decided) or not all(
                    isinstance(r, str) for r in scored.values()):
                raise ValueError(f"the scorer must answer {{cell: '' or why not}} for {sorted(decided)}, got "
                                 f"{scored!r}"[:200])
            verdicts_now = {g: {"ok": r == "", "reason": r, "check_failed": False} for g, r in scored.items()}
        except Exception as err:  # a timeout or a crash of the scorer, a bad answer: these cells fail closed
            verdicts_now = {g: _failed_check(err) for g in decided}
            note = f"trusted scoring failed: {verdicts_now[decided[0]]['reason']}"
        for grade_id, verdict in verdicts_now.items():  # a cell passes only if every check of it does
            if cells.get(grade_id, {"ok": True})["ok"]:
                cells[grade_id] = verdict
        notes.append(str(note))
    return cells, notes


def _with_deadline(function, timeout: float, *args):
    """``function(*args)`` in a daemon thread; TimeoutError when it is not done in time."""
    result: dict = {}

    def target():
        try:
            result["value"] = function(*args)
        except BaseException as err:  # handed to the caller below
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True, name="out-of-kernel-check")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the checks took over {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


class CheckOutOfKernel(NbGraderPreprocessor):
    """Decide every guarded cell from what the kernel left, and record it (see the module)."""

    def preprocess(self, nb, resources):
        record = {"complete": False, "error": "", "notes": [], "cells": {}}
        resources.setdefault("autograder", {})["record"] = record  # whatever the notebook claims is not read
        try:
            settings = OutOfKernelChecks(parent=self)
            assignment = resources["nbgrader"]["assignment"]
            left = resources["autograder"].get("kernel_files", {})
            kernel_passed = {c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.cell_type == "code"
                             and is_grade(c) and (determine_grade(c)[0] or 0) > 0}
            record["cells"] = {g: {"ok": False, "reason": "not checked", "check_failed": True}
                               for g in guarded_cells(assignment, settings.course_root)}
            cells, notes = _with_deadline(_verify, settings.timeout, assignment, nb, left, settings.course_root)
            record["cells"].update(cells)
            overruled: dict[str, list[str]] = {}  # the kernel said it passed; the check says otherwise
            for grade_id, cell in cells.items():
                if grade_id in kernel_passed and not cell["ok"] and grade_id not in trusted.trusted_cells(assignment):
                    overruled.setdefault(cell["reason"], []).append(grade_id)
            record["notes"] = [f"{', '.join(ids)} get 0 points: {why}" for why, ids in overruled.items()] + notes
            record["complete"] = True
        except Exception as err:  # the check failed: every guarded cell stays without points
            record["error"] = f"{type(err).__name__}: {err}"[:300]
            self.log.error("The out-of-kernel check of this submission failed: %s", record["error"])
        nb.metadata["autograder"] = {"checks": record}  # the record as it ends
        for cell in nb.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if cell.cell_type == "code" and grade_id in record["cells"] and not verified(record, grade_id):
                why = record["cells"][grade_id]["reason"] if record["complete"] else f"the check failed: {record['error']}"
                cell.outputs.append(NotebookNode(output_type="error", ename=CHECK_FAILED, evalue=why,
                                                 traceback=[f"{CHECK_FAILED}: {why}"]))
        for note in record["notes"]:
            self.log.warning("Trusted check: %s", note)
        return nb, resources


def verified(record: dict | None, grade_id: str) -> bool:
    """Whether ``record`` positively says the cell passed its check."""
    if not isinstance(record, dict) or record.get("complete") is not True:
        return False
    cell = record.get("cells", {}).get(grade_id)
    return isinstance(cell, dict) and cell.get("ok") is True


class SaveVerifiedGrades(SaveAutoGrades):
    """nbgrader's SaveAutoGrades, but a guarded cell keeps its points only if verified."""

    def preprocess(self, nb, resources):
        settings = OutOfKernelChecks(parent=self)
        self._guarded = set(guarded_cells(resources["nbgrader"]["assignment"], settings.course_root))
        self._record = resources.get("autograder", {}).get("record")
        return super().preprocess(nb, resources)

    def _add_score(self, cell, resources):
        """nbgrader's ``_add_score`` with the verification folded in: one commit, so the
        kernel's claim never reaches the gradebook, not even for a moment."""
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        grade = self.gradebook.find_grade(grade_id, self.notebook_id, self.assignment_id, self.student_id)
        auto_score, _ = determine_grade(cell, self.log)
        if grade_id in self._guarded and not verified(self._record, grade_id):
            auto_score = 0.0
        grade.auto_score = auto_score
        # as nbgrader: a manual grade given earlier, or no automatic score, needs a grader's look
        grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
        self.gradebook.db.commit()
