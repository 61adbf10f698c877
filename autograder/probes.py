"""The probes of every assignment: inputs drawn by the grader and references from ``course_lib``.

``PROBES[assignment][grade_id]`` pairs a test cell with a :class:`Probe`. The hidden part of
that cell answers it in the kernel with ``course_lib.probes.answer_probes``; the grader checks
the answers out of the kernel (:mod:`autograder.verdicts`). Inputs stay within what each
exercise's docstring promises, so a correct solution always passes; they include the edge
cases of the visible and hidden tests and fresh random cases.

Each ``inputs(seed)`` returns plain arrays with ``n``, the number of cases; ``reference(inputs,
k)`` returns ``{name: array}``, the answer expected as ``<name>_<k>``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.probes import case_tensors

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Probe:
    """Inputs drawn from ``seed``, course_lib's answers, and how close a float answer must be:
    ``rtol`` of each element, ``atol`` of the answer's largest magnitude (at least 1).
    Counts and sizes (integer answers) must be exact."""

    inputs: Callable[[int], Arrays]
    seed: int
    reference: Callable[[Arrays, int], Arrays]
    rtol: float = 1e-9
    atol: float = 1e-12


def _cases(cases: list[Arrays]) -> Arrays:
    """``[{name: array}, ...]`` → ``{"n": len, "<name>_<k>": array}``."""
    data = {"n": np.array(len(cases))}
    for k, case in enumerate(cases):
        data.update({f"{name}_{k}": np.asarray(value) for name, value in case.items()})
    return data


def _tensor(inputs: Arrays, key: str, grad: bool = False) -> torch.Tensor:
    return torch.from_numpy(np.array(inputs[key])).requires_grad_(grad)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# --------------------------------------------------------------------------- 01_pyramids_vs_fpn


def _images(seed: int) -> Arrays:
    """Images (C, H, W) and batches (N, C, H, W), H, W >= 3, float32 and uint8."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 16, 16), (3, 15, 22), (2, 3, 32, 24), (1, 65, 47), (4, 1, 7, 5), (2, 3, 3, 3), (1, 2, 4, 9)]
    shapes += [tuple(int(s) for s in rng.integers(1, 5, size=rng.integers(1, 3))) + tuple(int(s) for s in rng.integers(3, 41, 2))
               for _ in range(6)]
    cases = [{"x": rng.random(shape, dtype=np.float32)} for shape in shapes]
    cases += [{"x": rng.integers(0, 256, shape, dtype=np.uint8)} for shape in ((3, 21, 20), (2, 1, 9, 12))]
    one_colour = np.zeros((1, 3, 8, 8), np.float32)
    one_colour[:, 0] = rng.random((8, 8))
    return _cases([*cases, {"x": one_colour}])


def _pyramid_down(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    return {"y": _numpy(pyramids.pyramid_down(_tensor(inputs, f"x_{k}")))}


def _conv_arguments(seed: int) -> Arrays:
    """Rows (size, kernel, stride, padding) with size + 2·padding >= kernel."""
    rng = np.random.default_rng(seed)
    rows = [(224, 7, 2, 3), (7, 3, 2, 1), (10, 3, 1, 0), (1, 1, 1, 0), (5, 3, 2, 1), (64, 2, 2, 0), (1001, 7, 2, 3)]
    while len(rows) < 400:
        size, kernel, stride, padding = (int(rng.integers(1, 3000)), int(rng.choice([1, 2, 3, 5, 7, 11])),
                                         int(rng.integers(1, 6)), int(rng.integers(0, 6)))
        if size + 2 * padding >= kernel:
            rows.append((size, kernel, stride, padding))
    return _cases([{"q": np.array(rows, np.int64)}])


def _conv_output_size(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    return {"y": np.array([pyramids.conv_output_size(*map(int, row)) for row in inputs[f"q_{k}"]])}


def _image_sizes(seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    rows = [(1, 1), (224, 224), (97, 130), (67, 45), (33, 65), (513, 511), (800, 1333), (32, 31)]
    rows += [tuple(int(s) for s in rng.integers(1, 1500, 2)) for _ in range(40)]
    return _cases([{"q": np.array(rows, np.int64)}])


def _feature_map_sizes(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    return {"y": np.array([list(pyramids.feature_map_sizes(int(h), int(w)).values()) for h, w in inputs[f"q_{k}"]])}


def _pyramid_levels(seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    rows = [(512, 512, 3), (64, 64, 1), (65, 47, 4), (1, 1, 5), (7, 5, 6), (300, 451, 4), (1024, 1024, 12), (3, 1000, 7)]
    rows += [(int(rng.integers(1, 700)), int(rng.integers(1, 700)), int(rng.integers(1, 11))) for _ in range(20)]
    return _cases([{"q": np.array(rows, np.int64)}])


def _pyramid_pixel_ratio(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    def ratio(h: int, w: int, levels: int) -> float:
        shapes = [t.shape[-2:] for t in pyramids.gaussian_pyramid(torch.zeros(1, 1, h, w), levels)]
        return sum(a * b for a, b in shapes) / (h * w)

    return {"y": np.array([ratio(*map(int, row)) for row in inputs[f"q_{k}"]])}


# --------------------------------------------------------------------------- 02_resnet_fpn


def _lateral_cases(seed: int) -> Arrays:
    """Weights of a 1×1 conv from c to d channels and an input (N, c, H, W)."""
    rng = np.random.default_rng(seed)
    specs = [(64, 32, 2, 13, 17), (2048, 256, 1, 4, 5), (3, 1, 3, 1, 1), (8, 4, 1, 5, 3)]
    specs += [(int(rng.integers(1, 64)), int(rng.integers(1, 32)), int(rng.integers(1, 4)), *map(int, rng.integers(1, 20, 2)))
              for _ in range(3)]
    return _cases([{"w": (rng.standard_normal((d, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
                    "b": rng.standard_normal(d).astype(np.float32),
                    "x": rng.standard_normal((n, c, h, w)).astype(np.float32)} for c, d, n, h, w in specs])


def _lateral(inputs: Arrays, k: int) -> Arrays:
    weight, bias = _tensor(inputs, f"w_{k}"), _tensor(inputs, f"b_{k}")
    x = _tensor(inputs, f"x_{k}", grad=True)
    y = F.conv2d(x, weight, bias)
    y.square().sum().backward()
    d, c = weight.shape[:2]
    return {"m": np.array(c * d + d), "y": _numpy(y), "g": _numpy(x.grad)}


def _merge_cases(seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    specs = [((2, 3, 4, 5), (8, 10), np.float32), ((2, 16, 4, 5), (7, 9), np.float32), ((1, 5, 1, 1), (1, 1), np.float32),
             ((3, 5, 2, 2), (3, 3), np.float32), ((1, 5, 3, 4), (10, 7), np.float32), ((2, 5, 9, 17), (17, 33), np.float32),
             ((1, 4, 13, 17), (25, 33), np.float64)]
    return _cases([{"c": rng.standard_normal(shape).astype(dtype), "l": rng.standard_normal((*shape[:2], *size)).astype(dtype)}
                   for shape, size, dtype in specs])


def _merge(inputs: Arrays, k: int) -> Arrays:
    coarser, lateral = _tensor(inputs, f"c_{k}", grad=True), _tensor(inputs, f"l_{k}", grad=True)
    y = lateral + F.interpolate(coarser, size=lateral.shape[-2:], mode="nearest")
    y.square().sum().backward()
    return {"y": _numpy(y), "gc": _numpy(coarser.grad), "gl": _numpy(lateral.grad)}


# (in_channels, d, image (h, w), batch, first level)
FPN_EQUIVALENCE = [([64, 128, 256, 512], 32, (64, 96), 2, 2), ([64, 128, 256, 512], 32, (97, 131), 2, 2),
                   ([256, 512, 1024, 2048], 16, (33, 47), 1, 2), ([8, 16, 32], 8, (100, 75), 3, 3),
                   ([5, 7], 4, (50, 50), 1, 4), ([6], 4, (40, 40), 2, 5), ([64, 128, 256, 512], 64, (160, 224), 1, 2)]
FPN_PROPERTIES = [([256, 512, 1024, 2048], 64, (61, 45), 1, 2), ([3, 5, 7], 11, (37, 29), 2, 3), ([4], 2, (16, 16), 1, 5),
                  ([8, 16, 32, 64], 8, (97, 131), 1, 2)]


def _fpn_cases(configs: list, seed: int) -> Arrays:
    """An FPN's weights (``w.<parameter name>``, course_lib's names) and its input levels ``f<i>``."""
    from course_lib import pyramids
    from course_lib.models import FPN

    rng = np.random.default_rng(seed)
    cases = []
    for channels, d, (h, w), batch, first in configs:
        with torch.device("meta"):  # names and shapes only
            shapes = {name: tuple(t.shape) for name, t in FPN(channels, d).state_dict().items()}
        case = {"ch": np.array(channels), "d": np.array(d), "first": np.array(first)}
        case.update({f"w.{name}": (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)  # fan-in
                     for name, shape in shapes.items()})
        sizes = pyramids.feature_map_sizes(h, w)
        case.update({f"f{i}": rng.standard_normal((batch, c, *sizes[f"c{first + i}"])).astype(np.float32)
                     for i, c in enumerate(channels)})
        cases.append(case)
    return _cases(cases)


def _reference_fpn(inputs: Arrays, k: int):
    from course_lib.models import FPN

    channels = [int(c) for c in inputs[f"ch_{k}"]]
    fpn = FPN(channels, int(inputs[f"d_{k}"])).eval()
    fpn.load_state_dict(case_tensors(inputs, "w.", k))
    first = int(inputs[f"first_{k}"])
    features = {f"c{first + i}": _tensor(inputs, f"f{i}_{k}", grad=True) for i in range(len(channels))}
    return fpn, features


def _fpn_outputs(inputs: Arrays, k: int) -> Arrays:
    fpn, features = _reference_fpn(inputs, k)
    with torch.no_grad():
        out = fpn(features)
    return {"keys": np.array(list(out)), **{f"p{i}": _numpy(p) for i, p in enumerate(out.values())}}


def _fpn_properties(inputs: Arrays, k: int) -> Arrays:
    """Parameter count, and the gradient of the finest output's squared sum for every input level."""
    fpn, features = _reference_fpn(inputs, k)
    next(iter(fpn(features).values())).square().sum().backward()
    return {"m": np.array(sum(p.numel() for p in fpn.parameters())),
            **{f"g{i}": _numpy(f.grad) for i, f in enumerate(features.values())}}


# --------------------------------------------------------------------------- 03_dice_iou


def _mask_pairs(seed: int) -> Arrays:
    """Pairs of boolean masks of random shapes and densities, with the edge cases."""
    rng = np.random.default_rng(seed)
    pairs = [(np.zeros((4, 5), bool), np.zeros((4, 5), bool)), (np.ones((3, 3), bool), np.zeros((3, 3), bool)),
             (np.ones((2, 7), bool), np.ones((2, 7), bool))]
    for _ in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 16, size=rng.integers(1, 4)))
        pairs.append((rng.random(shape) < rng.random(), rng.random(shape) < rng.random()))
    return _cases([{"a": a, "b": b} for a, b in pairs])


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
    return _cases(cases)


def _score(name: str, inputs: Arrays, k: int) -> Arrays:
    from course_lib import metrics

    return {"y": np.array(float(getattr(metrics, name)(inputs[f"a_{k}"], inputs[f"b_{k}"])))}


def _soft_loss(name: str, inputs: Arrays, k: int) -> Arrays:
    from course_lib import losses

    x = _tensor(inputs, f"x_{k}", grad=True)
    loss = getattr(losses, name)(x, _tensor(inputs, f"t_{k}"), smooth=float(inputs[f"s_{k}"]))
    loss.backward()
    return {"y": _numpy(loss), "g": _numpy(x.grad)}


def _mask_triples(seed: int) -> Arrays:
    """Triples of boolean masks of one shape: random ones, the edge cases (empty masks) and a counterexample."""
    rng = np.random.default_rng(seed)
    two = np.array([[True, False], [True, True], [False, True]])  # {1}, {1, 2}, {2}: d(A,C) = 1 > 2/3
    triples = [tuple(two), (np.zeros((3, 4), bool),) * 3, (np.zeros(5, bool), np.ones(5, bool), np.zeros(5, bool))]
    for _ in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 9, size=rng.integers(1, 4)))
        triples.append(tuple(rng.random(shape) < rng.random() for _ in range(3)))
    return _cases([{"a": a, "b": b, "c": c} for a, b, c in triples])


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
    return _cases([{"q": rows}])


def _dice_gradient(inputs: Arrays, k: int) -> Arrays:
    g, I, P, G, s = inputs[f"q_{k}"].T  # noqa: E741
    return {"y": (2 * g * (P + G + s) - (2 * I + s)) / (P + G + s) ** 2}


def _sorted_targets(seed: int) -> Arrays:
    """0/1 float vectors (P,), P >= 1: the target of one class sorted by error."""
    rng = np.random.default_rng(seed)
    cases = [np.ones(1), np.zeros(1), np.zeros(6), np.ones(5), np.array([1.0, 0, 1, 1, 0]), np.array([0.0, 0, 0, 1])]
    cases += [(rng.random(int(rng.integers(2, 300))) < rng.random()).astype(np.float64) for _ in range(12)]
    return _cases([{"x": x.astype(np.float32 if k % 2 else np.float64)} for k, x in enumerate(cases)])


def _lovasz_grad(inputs: Arrays, k: int) -> Arrays:
    from course_lib import losses

    return {"y": _numpy(losses.lovasz_grad(_tensor(inputs, f"x_{k}")))}


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
    return _cases(cases)


def _lovasz_softmax(inputs: Arrays, k: int) -> Arrays:
    from course_lib import losses

    x = _tensor(inputs, f"x_{k}", grad=True)
    loss = losses.lovasz_softmax(x, _tensor(inputs, f"t_{k}"))
    loss.backward()
    return {"y": _numpy(loss), "g": _numpy(x.grad)}


# --------------------------------------------------------------------------- 04_segmentation_assignment


def _loss_cases(seed: int) -> Arrays:
    """Logits (N, C, H, W), targets (N, H, W) and weights (w_ce, w_dice, w_iou)."""
    from course_lib.data import ShapesDataset

    rng = np.random.default_rng(seed)
    target = rng.integers(0, 4, (2, 8, 8))
    _, masks = ShapesDataset(2, size=32, seed=int(rng.integers(1000))).materialize()
    cases = [(rng.standard_normal((2, 5, 12, 12)), rng.integers(0, 5, (2, 12, 12)), (1.0, 1.0, 1.0)),
             (3 * rng.standard_normal((2, 5, 12, 12)), rng.integers(0, 5, (2, 12, 12)), (1.0, 0.0, 1.5)),
             (rng.standard_normal((3, 5, 9, 7)), 3 * rng.integers(0, 2, (3, 9, 7)), (0.5, 2.0, 0.0)),  # classes absent
             (rng.standard_normal((1, 3, 5, 11)), np.full((1, 5, 11), 2), (2.0, 1.0, 0.5)),        # one class present
             (30.0 * np.eye(4)[target].transpose(0, 3, 1, 2), target, (1.0, 1.0, 1.0)),          # near-perfect
             (rng.standard_normal((2, 5, 32, 32)), masks.numpy(), (1.0, 1.0, 1.0)),               # the dataset's masks
             (rng.standard_normal((2, 2, 6, 6)), rng.integers(0, 2, (2, 6, 6)), (0.0, 0.0, 1.0))]   # IoU only
    return _cases([{"x": x.astype(np.float32), "t": t.astype(np.int64), "w": np.array(w)} for x, t, w in cases])


def _combined_loss(inputs: Arrays, k: int) -> Arrays:
    from course_lib.losses import CombinedLoss

    x = _tensor(inputs, f"x_{k}", grad=True)
    w_ce, w_dice, w_iou = map(float, inputs[f"w_{k}"])
    parts = CombinedLoss(ce=w_ce, dice=w_dice, iou=w_iou)(x, _tensor(inputs, f"t_{k}"))
    parts["loss"].backward()
    return {**{key: _numpy(value) for key, value in parts.items()}, "g": _numpy(x.grad)}


def tiny_segmenter(num_classes: int = 5) -> nn.Module:
    """A small segmenter for the training-step probes: batch norm, so train mode matters; no
    bias before it, whose gradient is rounding noise that AdamW would turn into ±lr steps."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, num_classes, 1))


def _train_step_cases(seed: int) -> Arrays:
    """A tiny segmenter's initial weights, an optimizer (0: SGD, 1: AdamW), loss weights, two batches."""
    from course_lib.data import ShapesDataset

    rng = np.random.default_rng(seed)
    cases = []
    for optimizer, weights in ((0, (1.0, 1.0, 1.0)), (1, (0.5, 1.0, 2.0))):
        with torch.random.fork_rng():
            torch.manual_seed(seed + optimizer)
            case = {f"s.{name}": t.numpy().copy() for name, t in tiny_segmenter().state_dict().items()}
        case.update(opt=np.array(optimizer), w=np.array(weights))
        for step in range(2):
            images, masks = ShapesDataset(3, size=24, seed=int(rng.integers(10_000))).materialize()
            case.update({f"x{step}": images.numpy(), f"y{step}": masks.numpy()})
        cases.append(case)
    return _cases(cases)


def _train_steps(inputs: Arrays, k: int) -> Arrays:
    """Two steps from a model left in eval mode with stale gradients; losses and every weight after."""
    from course_lib.losses import CombinedLoss
    from course_lib.train import train_step

    model = tiny_segmenter()
    model.load_state_dict(case_tensors(inputs, "s.", k))
    model.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2) if int(inputs[f"opt_{k}"])
                 else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    w_ce, w_dice, w_iou = map(float, inputs[f"w_{k}"])
    loss_fn = CombinedLoss(ce=w_ce, dice=w_dice, iou=w_iou)
    values = [train_step(model, _tensor(inputs, f"x{s}_{k}"), _tensor(inputs, f"y{s}_{k}"), loss_fn, optimizer)
              for s in range(2)]
    return {"keys": np.array(sorted(values[0])), "v": np.array([[v[key] for key in sorted(v)] for v in values]),
            **{f"s.{name}": t.detach().numpy() for name, t in model.state_dict().items()}}


PROBES: dict[str, dict[str, Probe]] = {
    "01_pyramids_vs_fpn": {
        "ex1_tests": Probe(_images, 11, _pyramid_down, 1e-5, 1e-4),
        "ex2a_tests": Probe(_conv_arguments, 12, _conv_output_size),
        "ex2b_tests": Probe(_image_sizes, 13, _feature_map_sizes),
        "ex3_tests": Probe(_pyramid_levels, 14, _pyramid_pixel_ratio, 1e-9, 1e-12),
    },
    "02_resnet_fpn": {
        "test-ex1-lateral": Probe(_lateral_cases, 21, _lateral, 1e-4, 1e-4),
        "test-ex2-merge": Probe(_merge_cases, 22, _merge, 1e-6, 1e-6),
        "test-ex3-fpn-equivalence": Probe(functools.partial(_fpn_cases, FPN_EQUIVALENCE), 23, _fpn_outputs, 1e-4, 1e-4),
        "test-ex3-fpn-properties": Probe(functools.partial(_fpn_cases, FPN_PROPERTIES), 24, _fpn_properties, 1e-4, 1e-4),
    },
    "03_dice_iou": {
        "test_dice_score": Probe(_mask_pairs, 31, functools.partial(_score, "dice_score")),
        "test_iou_score": Probe(_mask_pairs, 32, functools.partial(_score, "iou_score")),
        "test_soft_dice_loss": Probe(_logits_targets, 33, functools.partial(_soft_loss, "dice_loss"), 1e-4, 1e-5),
        "test_triangle": Probe(_mask_triples, 35, _triangle_excess, 1e-9, 1e-12),
        "test_dice_gradient": Probe(_gradient_rows, 36, _dice_gradient, 1e-8, 1e-12),
        "test_lovasz_grad": Probe(_sorted_targets, 37, _lovasz_grad, 1e-5, 1e-6),
        "test_lovasz_softmax_loss": Probe(_lovasz_cases, 38, _lovasz_softmax, 1e-4, 1e-5),
    },
    "04_segmentation_assignment": {
        "test_combined_loss": Probe(_loss_cases, 41, _combined_loss, 1e-4, 1e-5),
        "test_my_train_step": Probe(_train_step_cases, 42, _train_steps, 1e-4, 1e-5),
    },
}
