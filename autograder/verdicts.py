"""Verdicts the student's code cannot forge: probes checked as plain data, out of the kernel.

A test cell runs in the student's kernel after the student's code, so everything it calls
(``course_lib``, numpy, ``torch.testing``, an object whose ``==`` is always true, even a
hook that rewrites later cells) may have been replaced. For every autograded cell in
``PROBES`` (:mod:`autograder.probes`):

1. before the notebook runs, :func:`write_inputs` (nbgrader's pre-convert hook) writes
   inputs drawn here, in trusted code, to ``probes_in_<grade id>.npz`` next to the notebook;
2. the hidden part of the test cell runs the student's code on them and saves the results
   as arrays, ``probes_out_<grade id>.npz`` (``course_lib.probes.answer_probes``);
3. after the notebook ran, :func:`check_outputs` (the post-convert hook, in nbgrader's
   process) loads those arrays with ``allow_pickle=False`` and a size cap, recomputes every
   reference with ``course_lib`` on its own copy of the inputs, and takes the cell's points
   away unless all match. The kernel's verdict still counts (both must pass), but a forged
   one alone earns nothing: the student's code must produce the right numbers.
"""

from __future__ import annotations

import functools
import logging
import zipfile
from pathlib import Path

import numpy as np

from autograder.probes import PROBES, Probe
from autograder.submissions import is_regular_file
from course_lib.probes import inputs_path, outputs_path

log = logging.getLogger(__name__)
MAX_OUTPUT_BYTES = 256 * 2**20  # uncompressed: a zip bomb must not take the grader's memory


@functools.cache
def probe_inputs(probe: Probe) -> dict[str, np.ndarray]:
    """The probe's inputs, drawn once per process (read-only: shared by every caller)."""
    inputs = probe.inputs(probe.seed)
    for array in inputs.values():
        array.flags.writeable = False
    return inputs


def write_inputs(assignment: str, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for grade_id, probe in PROBES.get(assignment, {}).items():
        np.savez(inputs_path(folder, grade_id), **probe_inputs(probe))


def load_outputs(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a kernel-written ``.npz``: no pickles, at most ``MAX_OUTPUT_BYTES`` unpacked."""
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > MAX_OUTPUT_BYTES:
        raise ValueError(f"{unpacked:,} bytes unpacked, more than {MAX_OUTPUT_BYTES:,}")
    with np.load(path, allow_pickle=False) as data:
        return {key: np.array(data[key]) for key in data.files}


def _mismatch(have: np.ndarray | None, want: np.ndarray, probe: Probe) -> str:
    """Why ``have`` is not ``want`` ('' when it is)."""
    if have is None or have.shape != want.shape:
        return "missing or of the wrong shape"
    if want.dtype.kind == "U":
        return "" if have.dtype.kind == "U" and np.array_equal(have, want) else "differs"
    if have.dtype.kind not in "biuf" or (want.dtype.kind == "f" and have.dtype.kind != "f"):
        return f"of dtype {have.dtype}, expected {'floats' if want.dtype.kind == 'f' else 'numbers'}"
    if want.dtype.kind in "biu":  # counts and sizes: exact, whatever the tolerance of the rest
        return "" if np.array_equal(have, want) else "differs"
    if not np.allclose(have.astype(np.float64), want, rtol=probe.rtol, atol=probe.atol, equal_nan=False):
        return "differs"
    return ""


def check_probe(probe: Probe, outputs: Path) -> str:
    """'' when the student's outputs match the references on every input, else why not."""
    inputs = probe_inputs(probe)  # our own copy: the kernel may have rewritten its file
    if not Path(outputs).exists() and not Path(outputs).is_symlink():
        return "no probe results (the hidden test did not run to its end)"
    if not is_regular_file(outputs):
        return "probe results are not a regular file (a symlink or a special file)"
    try:
        got = load_outputs(outputs)
    except Exception as err:
        return f"unreadable probe results ({type(err).__name__}: {err})"[:160]
    for k in range(int(inputs["n"])):
        for name, want in probe.reference(inputs, k).items():
            why = _mismatch(got.get(f"{name}_{k}"), np.asarray(want), probe)
            if why:
                return f"probe {k}: {name!r} {why} (course_lib's answer)"
    return ""


def check_outputs(assignment: str, student: str, folder: Path, db_url: str, notebook: str) -> dict[str, str]:
    """Take the points of probed cells whose results do not check out; {grade id: reason}
    for the cells the kernel had passed. The probe files are removed afterwards."""
    from nbgrader.api import Gradebook

    failures = {}
    for grade_id, probe in PROBES.get(assignment, {}).items():
        try:
            reason = check_probe(probe, outputs_path(folder, grade_id))
        except Exception as err:  # a failing check never leaves the kernel's verdict standing
            reason = f"check failed: {err}"
        if reason:
            failures[grade_id] = reason
        for path in (inputs_path(folder, grade_id), outputs_path(folder, grade_id)):
            path.unlink(missing_ok=True)
    overridden = {}
    if failures:
        with Gradebook(db_url) as gb:
            for grade_id, reason in failures.items():
                grade = gb.find_grade(grade_id, notebook, assignment, student)
                if grade.auto_score:  # the kernel said it passed; the numbers say otherwise
                    grade.auto_score = 0.0
                    overridden[grade_id] = reason
            gb.db.commit()
    by_reason: dict[str, list[str]] = {}
    for grade_id, reason in overridden.items():
        by_reason.setdefault(reason, []).append(grade_id)
    for reason, grade_ids in by_reason.items():
        log.warning("Trusted check of %s: %s get 0 points: %s", student, ", ".join(grade_ids), reason)
    return overridden
