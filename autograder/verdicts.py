"""Verdicts the student's code cannot forge: probes checked as plain data, out of the kernel.

A test cell runs in the student's kernel after the student's code, so everything it calls
(``course_lib``, numpy, ``torch.allclose``, an object whose ``==`` is always true, even a
hook that rewrites later cells) may have been replaced. For the cells in ``PROBES``:

1. before the notebook runs, :func:`write_inputs` (nbgrader's pre-convert hook) writes
   inputs drawn here, in trusted code, to ``probes_in_<grade id>.npz`` next to the notebook;
2. the hidden part of the test cell calls the student's function on them and saves the
   results as arrays, ``probes_out_<grade id>.npz``;
3. after the notebook ran, :func:`check_outputs` (the post-convert hook, in nbgrader's
   process) loads those arrays with ``allow_pickle=False``, recomputes every reference with
   ``course_lib`` on its own copy of the inputs, and takes the cell's points away unless all
   match. The kernel's verdict still counts (both must pass), but a forged one alone
   no longer earns points: the student's function must produce the right numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _mask_pairs(seed: int) -> dict[str, np.ndarray]:
    """Pairs of boolean masks of random shapes and densities, with the edge cases."""
    rng = np.random.default_rng(seed)
    pairs = [(np.zeros((4, 5), bool), np.zeros((4, 5), bool)), (np.ones((3, 3), bool), np.zeros((3, 3), bool)),
             (np.ones((2, 7), bool), np.ones((2, 7), bool))]
    for _ in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 16, size=rng.integers(1, 4)))
        pairs.append((rng.random(shape) < rng.random(), rng.random(shape) < rng.random()))
    data = {"n": np.array(len(pairs))}
    for k, (a, b) in enumerate(pairs):
        data[f"a_{k}"], data[f"b_{k}"] = a, b
    return data


def _logits_targets(seed: int) -> dict[str, np.ndarray]:
    """Logits (N, C, ...) float32/float64, integer targets and a smoothing term."""
    rng = np.random.default_rng(seed)
    cases = []
    for shape, classes, scale, smooth, dtype in (((2, 8, 8), 4, 2.0, 0.0, np.float32), ((3, 5, 7), 2, 1.0, 0.3, np.float32),
                                                  ((1, 9, 4), 5, 1.0, 1.0, np.float32), ((2, 3, 4, 5), 3, 1.0, 0.0, np.float32),
                                                  ((2, 6, 6), 3, 1000.0, 0.0, np.float32), ((1, 5, 5), 6, 1.0, 2.0, np.float64)):
        logits = (scale * rng.standard_normal((shape[0], classes, *shape[1:]))).astype(dtype)
        target = rng.integers(0, min(classes, 3), size=shape).astype(np.int64)  # some classes absent
        cases.append((logits, target, smooth))
    data = {"n": np.array(len(cases))}
    for k, (x, t, s) in enumerate(cases):
        data[f"x_{k}"], data[f"t_{k}"], data[f"s_{k}"] = x, t, np.array(s)
    return data


def _score_reference(name: str) -> Callable[[dict, int], dict[str, np.ndarray]]:
    def reference(inputs: dict, k: int) -> dict[str, np.ndarray]:
        from course_lib import metrics

        return {"y": np.array(float(getattr(metrics, name)(inputs[f"a_{k}"], inputs[f"b_{k}"])))}
    return reference


def _loss_reference(name: str) -> Callable[[dict, int], dict[str, np.ndarray]]:
    def reference(inputs: dict, k: int) -> dict[str, np.ndarray]:
        import torch

        from course_lib import losses

        x = torch.from_numpy(np.array(inputs[f"x_{k}"])).requires_grad_()
        loss = getattr(losses, name)(x, torch.from_numpy(np.array(inputs[f"t_{k}"])), smooth=float(inputs[f"s_{k}"]))
        loss.backward()
        return {"y": loss.detach().double().numpy(), "g": x.grad.double().numpy()}
    return reference


@dataclass(frozen=True)
class Probe:
    inputs: Callable[[int], dict[str, np.ndarray]]
    seed: int
    reference: Callable[[dict, int], dict[str, np.ndarray]]
    rtol: float
    atol: float


PROBES: dict[str, dict[str, Probe]] = {
    "03_dice_iou": {
        "test_dice_score": Probe(_mask_pairs, 31, _score_reference("dice_score"), 1e-9, 1e-12),
        "test_iou_score": Probe(_mask_pairs, 32, _score_reference("iou_score"), 1e-9, 1e-12),
        "test_soft_dice_loss": Probe(_logits_targets, 33, _loss_reference("dice_loss"), 1e-4, 1e-5),
        "test_soft_iou_loss": Probe(_logits_targets, 34, _loss_reference("iou_loss"), 1e-4, 1e-5),
    },
}


def inputs_path(folder: Path, grade_id: str) -> Path:
    return Path(folder) / f"probes_in_{grade_id}.npz"


def outputs_path(folder: Path, grade_id: str) -> Path:
    return Path(folder) / f"probes_out_{grade_id}.npz"


def write_inputs(assignment: str, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for grade_id, probe in PROBES.get(assignment, {}).items():
        np.savez(inputs_path(folder, grade_id), **probe.inputs(probe.seed))


def check_probe(probe: Probe, outputs: Path) -> str:
    """'' when the student's outputs match the references on every input, else why not."""
    inputs = probe.inputs(probe.seed)  # our own copy: the kernel may have rewritten its file
    try:
        with np.load(outputs, allow_pickle=False) as data:
            got = {key: np.array(data[key]) for key in data.files}
    except Exception as err:
        return f"no usable probe results ({type(err).__name__})"
    for k in range(int(inputs["n"])):
        for key, want in probe.reference(inputs, k).items():
            have = got.get(f"{key}_{k}")
            if have is None or have.shape != want.shape or not np.issubdtype(have.dtype, np.number):
                return f"probe {k}: missing or malformed result {key!r}"
            if not np.allclose(have.astype(np.float64), want, rtol=probe.rtol, atol=probe.atol, equal_nan=False):
                return f"probe {k}: {key} differs from course_lib's"
    return ""


def check_outputs(assignment: str, student: str, folder: Path, db_url: str, notebook: str) -> dict[str, str]:
    """Zero the points of probe cells whose results do not check out; {grade id: reason}."""
    from nbgrader.api import Gradebook

    failures = {}
    for grade_id, probe in PROBES.get(assignment, {}).items():
        try:
            reason = check_probe(probe, outputs_path(folder, grade_id))
        except Exception as err:  # a failing check never leaves the kernel's verdict standing
            reason = f"check failed: {err}"
        if reason:
            failures[grade_id] = reason
    if failures:
        with Gradebook(db_url) as gb:
            for grade_id in failures:
                grade = gb.find_grade(grade_id, notebook, assignment, student)
                grade.auto_score = 0.0
            gb.db.commit()
    for grade_id, reason in failures.items():
        log.warning("Trusted check of %s: %s gets 0 points (%s)", student, grade_id, reason)
    return failures
