"""Probes: hidden tests whose answers are checked out of the kernel, on inputs the grader draws.

Each assignment declares its own in the ``PROBES`` of its ``solutions/<assignment>/grading.py``
(:func:`autograder.course.probes`), ``{grade_id: Probe}``: a test cell and the :class:`Probe`
it answers. The hidden part of that cell answers it in the kernel with
``course_lib.probes.answer_probes``; the grader checks the answers out of the kernel
(:mod:`autograder.verdicts`). Inputs should stay within what each exercise's docstring
promises, so a correct solution always passes, and include the edge cases of the visible and
hidden tests and fresh random cases.

Each ``inputs(seed)`` returns plain arrays with ``n``, the number of cases (:func:`as_cases`);
``reference(inputs, k)`` returns ``{name: array}``, the answer expected as ``<name>_<k>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

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


def as_cases(cases: list[Arrays]) -> Arrays:
    """``[{name: array}, ...]`` → ``{"n": len, "<name>_<k>": array}``."""
    data = {"n": np.array(len(cases))}
    for k, case in enumerate(cases):
        data.update({f"{name}_{k}": np.asarray(value) for name, value in case.items()})
    return data


def as_tensor(inputs: Arrays, key: str, grad: bool = False) -> torch.Tensor:
    return torch.from_numpy(np.array(inputs[key])).requires_grad_(grad)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()
