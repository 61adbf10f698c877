"""01_pyramids_vs_fpn: the grader's code for image pyramids versus the FPN, loaded by the harness
(:func:`autograder.course.grading_module`); never released to students.

``PROBES``: the hidden test cells whose answers are checked out of the kernel, each with the
inputs the grader draws and ``course_lib``'s reference answers (:class:`autograder.probes.Probe`).
"""

from __future__ import annotations

import numpy as np
import torch

from autograder.probes import Arrays, Probe, as_cases, as_numpy, as_tensor


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
    return as_cases([*cases, {"x": one_colour}])


def _pyramid_down(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    return {"y": as_numpy(pyramids.pyramid_down(as_tensor(inputs, f"x_{k}")))}


def _conv_arguments(seed: int) -> Arrays:
    """Rows (size, kernel, stride, padding) with size + 2·padding >= kernel."""
    rng = np.random.default_rng(seed)
    rows = [(224, 7, 2, 3), (7, 3, 2, 1), (10, 3, 1, 0), (1, 1, 1, 0), (5, 3, 2, 1), (64, 2, 2, 0), (1001, 7, 2, 3)]
    while len(rows) < 400:
        size, kernel, stride, padding = (int(rng.integers(1, 3000)), int(rng.choice([1, 2, 3, 5, 7, 11])),
                                         int(rng.integers(1, 6)), int(rng.integers(0, 6)))
        if size + 2 * padding >= kernel:
            rows.append((size, kernel, stride, padding))
    return as_cases([{"q": np.array(rows, np.int64)}])


def _conv_output_size(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    return {"y": np.array([pyramids.conv_output_size(*map(int, row)) for row in inputs[f"q_{k}"]])}


def _image_sizes(seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    rows = [(1, 1), (224, 224), (97, 130), (67, 45), (33, 65), (513, 511), (800, 1333), (32, 31)]
    rows += [tuple(int(s) for s in rng.integers(1, 1500, 2)) for _ in range(40)]
    return as_cases([{"q": np.array(rows, np.int64)}])


def _feature_map_sizes(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    return {"y": np.array([list(pyramids.feature_map_sizes(int(h), int(w)).values()) for h, w in inputs[f"q_{k}"]])}


def _pyramid_levels(seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    rows = [(512, 512, 3), (64, 64, 1), (65, 47, 4), (1, 1, 5), (7, 5, 6), (300, 451, 4), (1024, 1024, 12), (3, 1000, 7)]
    rows += [(int(rng.integers(1, 700)), int(rng.integers(1, 700)), int(rng.integers(1, 11))) for _ in range(20)]
    return as_cases([{"q": np.array(rows, np.int64)}])


def _pyramid_pixel_ratio(inputs: Arrays, k: int) -> Arrays:
    from course_lib import pyramids

    def ratio(h: int, w: int, levels: int) -> float:
        shapes = [t.shape[-2:] for t in pyramids.gaussian_pyramid(torch.zeros(1, 1, h, w), levels)]
        return sum(a * b for a, b in shapes) / (h * w)

    return {"y": np.array([ratio(*map(int, row)) for row in inputs[f"q_{k}"]])}


PROBES: dict[str, Probe] = {
    "ex1_tests": Probe(_images, 11, _pyramid_down, 1e-5, 1e-4),
    "ex2a_tests": Probe(_conv_arguments, 12, _conv_output_size),
    "ex2b_tests": Probe(_image_sizes, 13, _feature_map_sizes),
    "ex3_tests": Probe(_pyramid_levels, 14, _pyramid_pixel_ratio, 1e-9, 1e-12),
}
