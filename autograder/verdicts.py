"""Probes: verdicts the student's code cannot forge, checked as plain data out of the kernel.

A test cell runs in the student's kernel after the student's code, so everything it calls
(``course_lib``, numpy, ``torch.testing``, an object whose ``==`` is always true, even a
hook that rewrites later cells) may have been replaced. For every autograded cell that its
assignment's ``grading.py`` probes (``PROBES``, :mod:`autograder.probes`):

1. once per version of the probes and of ``course_lib`` and per course installation (its
   secret salt, :mod:`autograder.course_secrets`), :func:`probe_cache` draws the inputs and
   computes course_lib's answers on them into a folder the kernel never sees
   (``$AUTOGRADER_PROBE_CACHE``, else ``.autograder/probes`` in the course root);
2. before the notebook runs, the inputs are copied into the kernel's private folder,
   ``probes_in_<grade id>.npz`` (:func:`probe_inputs`, staged by the sandbox);
3. the hidden part of the test cell runs the student's code on them and saves the results
   as arrays, ``probes_out_<grade id>.npz`` (``course_lib.probes.answer_probes``);
4. after the kernel stopped, the sandbox reads those files back (regular files only, size
   capped) and :func:`check_probe` (in :mod:`autograder.checks`, in nbgrader's process)
   loads them with ``allow_pickle=False`` and a size cap and compares them with the expected
   answers. A cell keeps its points only if this check positively succeeded.

The checks themselves need only numpy: torch and ``course_lib`` are imported when the cache
is made (once per batch in ``autograder grade``), not once per submission.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from autograder.sandbox import LeftFile, read_left_file

MAX_OUTPUT_BYTES = 256 * 2**20  # uncompressed: a zip bomb must not take the grader's memory
CACHE_ENV = "AUTOGRADER_PROBE_CACHE"
MANIFEST = "manifest.json"
RTOL, ATOL = "__rtol__", "__atol__"  # the probe's tolerances, stored with its expected answers
PACKAGE = Path(__file__).resolve().parents[1]


# The kernel's side (course_lib.probes) uses the same names; importing it here would import
# torch into every grading process (a test checks that the names agree).
def inputs_path(folder: Path, grade_id: str) -> Path:
    return Path(folder) / f"probes_in_{grade_id}.npz"


def outputs_path(folder: Path, grade_id: str) -> Path:
    return Path(folder) / f"probes_out_{grade_id}.npz"


def expected_path(folder: Path, grade_id: str) -> Path:
    return Path(folder) / f"probes_expected_{grade_id}.npz"


def salted_seed(probe, salt: int) -> int:
    """The seed of the probe's inputs in this installation: its own, mixed with the secret salt."""
    return (probe.seed ^ salt) & (2**62 - 1)


def expected_answers(probe, salt: int = 0) -> dict[str, np.ndarray]:
    """course_lib's answers to every case of ``probe``, as ``<name>_<k>``, and its tolerances."""
    inputs = probe.inputs(salted_seed(probe, salt))
    answers = {f"{name}_{k}": np.asarray(value) for k in range(int(inputs["n"]))
               for name, value in probe.reference(inputs, k).items()}
    return {**answers, RTOL: np.array(probe.rtol), ATOL: np.array(probe.atol)}


def answers_version() -> str:
    """Fingerprint of what the answers depend on: the probes (the assignments' declarations and
    grading.py), the course's library (``c.Autograder.course_library``), torch and numpy."""
    from autograder import course, settings

    library = settings.course_library_folder()
    digest = hashlib.sha256()
    for path in [PACKAGE / "autograder" / "probes.py", *course.grading_files(),
                 *(sorted(library.rglob("*.py")) if library else [])]:
        digest.update(path.read_bytes())
    for package in ("torch", "numpy"):
        digest.update(metadata.version(package).encode())
    return digest.hexdigest()[:16]


def cache_root(course_root: str | Path) -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(course_root) / ".autograder" / "probes")


def probe_cache(assignment: str, root: Path, salt: int = 0) -> Path:
    """The folder with the inputs and expected answers of the assignment's probes, made on
    first use (atomically: parallel graders may race to make it). Its name covers the source
    notebooks too: a hidden test that starts answering a probe makes a new cache, whose making
    checks that the probe is declared (:func:`autograder.course.probes`)."""
    from autograder import course  # the assignment's grading.py imports torch and course_lib: only below

    digest = hashlib.sha256(f"{answers_version()} {salt}".encode())
    for path in sorted((course.course_root() / course.SOURCE_FOLDER / assignment).glob("*.ipynb")):
        digest.update(path.read_bytes())
    folder = Path(root) / f"{assignment}-{digest.hexdigest()[:16]}"
    if (folder / MANIFEST).is_file():
        return folder

    probes = course.probes(assignment)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{assignment}-", dir=folder.parent))
    try:
        for grade_id, probe in probes.items():
            np.savez(inputs_path(scratch, grade_id), **probe.inputs(salted_seed(probe, salt)))
            np.savez(expected_path(scratch, grade_id), **expected_answers(probe, salt))
        # written last: the cells a check must guard (a cache without it guards nothing and is refused)
        (scratch / MANIFEST).write_text(json.dumps(sorted(probes)))
        if folder.is_dir() and not (folder / MANIFEST).is_file():  # a copy cut short: never what rename leaves
            shutil.rmtree(folder)
        scratch.rename(folder)
    except OSError:
        if not (folder / MANIFEST).is_file():  # not made meanwhile by another grader either
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def probed_cells(cache: Path) -> list[str]:
    """The grade ids the cache has probes for, from its manifest (missing: an incomplete cache, refused)."""
    return json.loads((Path(cache) / MANIFEST).read_text())


def probe_inputs(cache: Path) -> dict[str, Path]:
    """{file name in the kernel's folder: file} of the probes' inputs."""
    return {inputs_path(Path("."), grade_id).name: inputs_path(cache, grade_id) for grade_id in probed_cells(cache)}


def probe_outputs(cache: Path) -> dict[str, str]:
    """{grade id: file name the kernel saves its probe results under}."""
    return {grade_id: outputs_path(Path("."), grade_id).name for grade_id in probed_cells(cache)}


def _load_npz(source, unpacked_limit: int) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(source) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > unpacked_limit:
        raise ValueError(f"{unpacked:,} bytes unpacked, more than {unpacked_limit:,}")
    if hasattr(source, "seek"):
        source.seek(0)
    with np.load(source, allow_pickle=False) as data:
        return {key: np.array(data[key]) for key in data.files}


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file of the grader's: no pickles, at most ``MAX_OUTPUT_BYTES`` unpacked."""
    return _load_npz(path, MAX_OUTPUT_BYTES)


def _mismatch(have: np.ndarray | None, want: np.ndarray, rtol: float, atol: float) -> str:
    """Why ``have`` is not ``want`` ('' when it is)."""
    if have is None or have.shape != want.shape:
        return "missing or of the wrong shape"
    if want.dtype.kind == "U":
        return "" if have.dtype.kind == "U" and np.array_equal(have, want) else "differs"
    if have.dtype.kind not in "biuf" or (want.dtype.kind == "f" and have.dtype.kind != "f"):
        return f"of dtype {have.dtype}, expected {'floats' if want.dtype.kind == 'f' else 'numbers'}"
    if want.dtype.kind in "biu":  # counts and sizes: exact, whatever the tolerance of the rest
        return "" if np.array_equal(have, want) else "differs"
    # atol scales with the answer: float32 sums in another order (another thread count, say)
    # differ by about 1e-7 of the largest magnitude, not of each element
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    if not np.allclose(have.astype(np.float64), want, rtol=rtol, atol=atol * scale, equal_nan=False):
        return "differs"
    return ""


def check_probe(expected: dict[str, np.ndarray], outputs: LeftFile | Path) -> str:
    """'' when the student's results match the expected answers on every case, else why not.
    ``outputs``: the results file as the sandbox read it back (or a path, read the same way)."""
    left = outputs if isinstance(outputs, LeftFile) else read_left_file(Path(outputs), MAX_OUTPUT_BYTES)
    if left.problem == "missing":
        return "no probe results (the hidden test did not run to its end)"
    if left.data is None:
        return f"probe results are {left.problem}"
    try:
        got = _load_npz(io.BytesIO(left.data), MAX_OUTPUT_BYTES)
    except Exception as err:
        return f"unreadable probe results ({type(err).__name__}: {err})"[:160]
    rtol, atol = float(expected[RTOL]), float(expected[ATOL])
    answers = sorted((key for key in expected if key not in (RTOL, ATOL)), key=lambda key: int(key.rsplit("_", 1)[1]))
    for key in answers:
        why = _mismatch(got.get(key), expected[key], rtol, atol)
        if why:
            name, k = key.rsplit("_", 1)
            return f"probe {k}: {name!r} {why} (the reference answer)"
    return ""
