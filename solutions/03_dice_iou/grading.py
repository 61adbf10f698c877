"""03_dice_iou: the grader's code for Dice and IoU, loaded by the harness
(:func:`autograder.course.grading_module`); never released to students.

``PROBES``: the hidden test cells whose answers are checked out of the kernel, each with the
inputs the grader draws and ``course_lib``'s reference answers (:class:`autograder.probes.Probe`).
"""

from __future__ import annotations

import functools

import numpy as np

from autograder.probes import Arrays, Probe, as_cases, as_numpy, as_tensor


def _mask_pairs(seed: int) -> Arrays:
    """Pairs of boolean masks of random shapes and densities, with the edge cases."""
    rng = np.random.default_rng(seed)
    pairs = [(np.zeros((4, 5), bool), np.zeros((4, 5), bool)), (np.ones((3, 3), bool), np.zeros((3, 3), bool)),
             (np.ones((2, 7), bool), np.ones((2, 7), bool))]
    for _ in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 16, size=rng.integers(1, 4)))
        pairs.append((rng.random(shape) < rng.random(), rng.random(shape) < rng.random()))
    return as_cases([{"a": a, "b": b} for a, b in pairs])


def _logits_targets(seed: int) -> Arrays:
    """Logits (N, C, ...) float32/float64, integer targets and a smoothing term."""
    rng = np.random.default_rng(seed)
    cases = []
    for shape, classes, scale, smooth, dtype in (((2, 8, 8), 4, 2.0, 0.0, np.float32), ((3, 5, 7), 2, 1.0, 0.3, np.float32),
                                                  ((1, 9, 4), 5, 1.0, 1.0, np.float32), ((2, 3, 4, 5), 3, 1.0, 0.0, np.float32),
                                                  ((2, 6, 6), 3, 1000.0, 0.0, np.float32), ((1, 5, 5), 6, 1.0, 2.0, np.float64)):
        logits = (scale * rng.standard_normal((shape[0], classes, *shape[1:]))).astype(dtype)
        target = rng.integers(0, min(classes, 3), size=shape).astype(np.int64)  # some classes absent
        cases.append({"x": logits, "t": target, "s": np.array(smooth)})
    return as_cases(cases)


def _score(name: str, inputs: Arrays, k: int) -> Arrays:
    from course_lib import metrics

    return {"y": np.array(float(getattr(metrics, name)(inputs[f"a_{k}"], inputs[f"b_{k}"])))}


def _soft_loss(name: str, inputs: Arrays, k: int) -> Arrays:
    from course_lib import losses

    x = as_tensor(inputs, f"x_{k}", grad=True)
    loss = getattr(losses, name)(x, as_tensor(inputs, f"t_{k}"), smooth=float(inputs[f"s_{k}"]))
    loss.backward()
    return {"y": as_numpy(loss), "g": as_numpy(x.grad)}


def _mask_triples(seed: int) -> Arrays:
    """Triples of boolean masks of one shape: random ones, the edge cases (empty masks) and a counterexample."""
    rng = np.random.default_rng(seed)
    two = np.array([[True, False], [True, True], [False, True]])  # {1}, {1, 2}, {2}: d(A,C) = 1 > 2/3
    triples = [tuple(two), (np.zeros((3, 4), bool),) * 3, (np.zeros(5, bool), np.ones(5, bool), np.zeros(5, bool))]
    for _ in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 9, size=rng.integers(1, 4)))
        triples.append(tuple(rng.random(shape) < rng.random() for _ in range(3)))
    return as_cases([{"a": a, "b": b, "c": c} for a, b, c in triples])


def _triangle_excess(inputs: Arrays, k: int) -> Arrays:
    from course_lib import metrics

    a, b, c = (inputs[f"{name}_{k}"] for name in "abc")
    d = lambda x, y: 1 - metrics.dice_score(x, y)  # noqa: E731
    return {"y": np.array(float(d(a, c) - d(a, b) - d(b, c)))}


def _gradient_rows(seed: int) -> Arrays:
    """Rows (g_k, I, P, G, s) a binary soft Dice can have: g_k in {0, 1}, G >= g_k a count,
    P > 0, 0 <= I <= min(P, G), s >= 0."""
    rng = np.random.default_rng(seed)
    n = 300
    g = (rng.random(n) < 0.5).astype(np.float64)
    G = g + rng.integers(0, 500, n)
    P = rng.uniform(1e-3, 1.0, n) * rng.choice([1.0, 10.0, 1000.0], n)
    I = rng.random(n) * np.minimum(P, G)  # noqa: E741
    s = np.where(rng.random(n) < 0.4, 0.0, rng.choice([1e-5, 0.5, 1.0, 10.0], n))
    rows = np.stack([g, I, P, G, s], axis=1)
    rows[:4] = [[0, 0, 2.5, 0, 1.0], [1, 1, 1, 1, 0], [0, 0.5, 0.5, 1, 0], [1, 0.25, 3, 2, 1e-5]]  # G = 0; perfect
    return as_cases([{"q": rows}])


def _dice_gradient(inputs: Arrays, k: int) -> Arrays:
    g, I, P, G, s = inputs[f"q_{k}"].T  # noqa: E741
    return {"y": (2 * g * (P + G + s) - (2 * I + s)) / (P + G + s) ** 2}


def _sorted_targets(seed: int) -> Arrays:
    """0/1 float vectors (P,), P >= 1: the target of one class sorted by error."""
    rng = np.random.default_rng(seed)
    cases = [np.ones(1), np.zeros(1), np.zeros(6), np.ones(5), np.array([1.0, 0, 1, 1, 0]), np.array([0.0, 0, 0, 1])]
    cases += [(rng.random(int(rng.integers(2, 300))) < rng.random()).astype(np.float64) for _ in range(12)]
    return as_cases([{"x": x.astype(np.float32 if k % 2 else np.float64)} for k, x in enumerate(cases)])


def _lovasz_grad(inputs: Arrays, k: int) -> Arrays:
    from course_lib import losses

    return {"y": as_numpy(losses.lovasz_grad(as_tensor(inputs, f"x_{k}")))}


def _lovasz_cases(seed: int) -> Arrays:
    """Logits (N, C, ...) and integer targets with classes absent; float64 but for two small float32
    cases (float32 errors of many pixels can tie, and a tie may swap two pixels' gradients)."""
    rng = np.random.default_rng(seed)
    cases = []
    for shape, classes, scale, dtype in (((2, 8, 8), 4, 2.0, np.float64), ((3, 5, 7), 2, 1.0, np.float64),
                                         ((1, 9, 4), 5, 1.0, np.float64), ((2, 3, 4, 5), 3, 1.0, np.float64),
                                         ((2, 6, 6), 3, 30.0, np.float64), ((1, 1, 1), 2, 1.0, np.float64),
                                         ((1, 4, 5), 3, 1.0, np.float32), ((2, 3, 3), 4, 3.0, np.float32)):
        logits = (scale * rng.standard_normal((shape[0], classes, *shape[1:]))).astype(dtype)
        target = rng.integers(0, min(classes, 3), size=shape).astype(np.int64)  # some classes absent
        cases.append({"x": logits, "t": target})
    return as_cases(cases)


def _lovasz_softmax(inputs: Arrays, k: int) -> Arrays:
    from course_lib import losses

    x = as_tensor(inputs, f"x_{k}", grad=True)
    loss = losses.lovasz_softmax(x, as_tensor(inputs, f"t_{k}"))
    loss.backward()
    return {"y": as_numpy(loss), "g": as_numpy(x.grad)}


PROBES: dict[str, Probe] = {
    "test_dice_score": Probe(_mask_pairs, 31, functools.partial(_score, "dice_score")),
    "test_iou_score": Probe(_mask_pairs, 32, functools.partial(_score, "iou_score")),
    "test_soft_dice_loss": Probe(_logits_targets, 33, functools.partial(_soft_loss, "dice_loss"), 1e-4, 1e-5),
    "test_triangle": Probe(_mask_triples, 35, _triangle_excess, 1e-9, 1e-12),
    "test_dice_gradient": Probe(_gradient_rows, 36, _dice_gradient, 1e-8, 1e-12),
    "test_lovasz_grad": Probe(_sorted_targets, 37, _lovasz_grad, 1e-5, 1e-6),
    "test_lovasz_softmax_loss": Probe(_lovasz_cases, 38, _lovasz_softmax, 1e-4, 1e-5),
}
