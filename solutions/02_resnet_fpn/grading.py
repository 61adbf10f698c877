"""02_resnet_fpn: the grader's code for the ResNet-FPN, loaded by the harness
(:func:`autograder.course.grading_module`); never released to students.

``PROBES``: the hidden test cells whose answers are checked out of the kernel, each with the
inputs the grader draws and ``course_lib``'s reference answers (:class:`autograder.probes.Probe`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from autograder.probes import Arrays, Probe, as_cases, as_numpy, as_tensor
from course_lib.probes import case_tensors


def _lateral_cases(seed: int) -> Arrays:
    """Weights of a 1×1 conv from c to d channels and an input (N, c, H, W)."""
    rng = np.random.default_rng(seed)
    specs = [(64, 32, 2, 13, 17), (2048, 256, 1, 4, 5), (3, 1, 3, 1, 1), (8, 4, 1, 5, 3)]
    specs += [(int(rng.integers(1, 64)), int(rng.integers(1, 32)), int(rng.integers(1, 4)), *map(int, rng.integers(1, 20, 2)))
              for _ in range(3)]
    return as_cases([{"w": (rng.standard_normal((d, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
                    "b": rng.standard_normal(d).astype(np.float32),
                    "x": rng.standard_normal((n, c, h, w)).astype(np.float32)} for c, d, n, h, w in specs])


def _lateral(inputs: Arrays, k: int) -> Arrays:
    weight, bias = as_tensor(inputs, f"w_{k}"), as_tensor(inputs, f"b_{k}")
    x = as_tensor(inputs, f"x_{k}", grad=True)
    y = F.conv2d(x, weight, bias)
    y.square().sum().backward()
    d, c = weight.shape[:2]
    return {"m": np.array(c * d + d), "y": as_numpy(y), "g": as_numpy(x.grad)}


def _merge_cases(seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    specs = [((2, 3, 4, 5), (8, 10), np.float32), ((2, 16, 4, 5), (7, 9), np.float32), ((1, 5, 1, 1), (1, 1), np.float32),
             ((3, 5, 2, 2), (3, 3), np.float32), ((1, 5, 3, 4), (10, 7), np.float32), ((2, 5, 9, 17), (17, 33), np.float32),
             ((1, 4, 13, 17), (25, 33), np.float64)]
    return as_cases([{"c": rng.standard_normal(shape).astype(dtype), "l": rng.standard_normal((*shape[:2], *size)).astype(dtype)}
                   for shape, size, dtype in specs])


def _merge(inputs: Arrays, k: int) -> Arrays:
    coarser, lateral = as_tensor(inputs, f"c_{k}", grad=True), as_tensor(inputs, f"l_{k}", grad=True)
    y = lateral + F.interpolate(coarser, size=lateral.shape[-2:], mode="nearest")
    y.square().sum().backward()
    return {"y": as_numpy(y), "gc": as_numpy(coarser.grad), "gl": as_numpy(lateral.grad)}


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
    return as_cases(cases)


def _reference_fpn(inputs: Arrays, k: int):
    from course_lib.models import FPN

    channels = [int(c) for c in inputs[f"ch_{k}"]]
    fpn = FPN(channels, int(inputs[f"d_{k}"])).eval()
    fpn.load_state_dict(case_tensors(inputs, "w.", k))
    first = int(inputs[f"first_{k}"])
    features = {f"c{first + i}": as_tensor(inputs, f"f{i}_{k}", grad=True) for i in range(len(channels))}
    return fpn, features


def _fpn_outputs(inputs: Arrays, k: int) -> Arrays:
    fpn, features = _reference_fpn(inputs, k)
    with torch.no_grad():
        out = fpn(features)
    return {"keys": np.array(list(out)), **{f"p{i}": as_numpy(p) for i, p in enumerate(out.values())}}


def _fpn_properties(inputs: Arrays, k: int) -> Arrays:
    """Parameter count, and the gradient of the finest output's squared sum for every input level."""
    fpn, features = _reference_fpn(inputs, k)
    next(iter(fpn(features).values())).square().sum().backward()
    return {"m": np.array(sum(p.numel() for p in fpn.parameters())),
            **{f"g{i}": as_numpy(f.grad) for i, f in enumerate(features.values())}}


PROBES: dict[str, Probe] = {
    "test-ex1-lateral": Probe(_lateral_cases, 21, _lateral, 1e-4, 1e-4),
    "test-ex2-merge": Probe(_merge_cases, 22, _merge, 1e-6, 1e-6),
    "test-ex3-fpn-equivalence": Probe(functools.partial(_fpn_cases, FPN_EQUIVALENCE), 23, _fpn_outputs, 1e-4, 1e-4),
    "test-ex3-fpn-properties": Probe(functools.partial(_fpn_cases, FPN_PROPERTIES), 24, _fpn_properties, 1e-4, 1e-4),
}
