"""The kernel's side of the grader's probes (hidden tests; see ``autograder/verdicts.py``).

While a notebook is autograded, the grader leaves ``probes_in_<grade id>.npz`` in the folder
the kernel runs in: inputs it drew itself. A hidden test calls :func:`answer_probes` with a
function that runs the student's code on case ``k`` of those inputs; the results are saved as
plain arrays in ``probes_out_<grade id>.npz``, which the grader reads back and checks against
``course_lib`` after the kernel has stopped. Outside grading there is no inputs file and
nothing happens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


def inputs_path(folder: str | Path, grade_id: str) -> Path:
    return Path(folder) / f"probes_in_{grade_id}.npz"


def outputs_path(folder: str | Path, grade_id: str) -> Path:
    return Path(folder) / f"probes_out_{grade_id}.npz"


def as_plain_array(value: Any) -> np.ndarray:
    """A result as a numpy array: tensors leave the graph and the device, low-precision
    floats become float32, lists of numbers or tensors become one array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.float()
        return value.numpy()
    if isinstance(value, (list, tuple)):
        return np.asarray([as_plain_array(v) for v in value])
    return np.asarray(value)


def case_tensors(inputs: Mapping[str, np.ndarray], prefix: str, k: int) -> dict[str, torch.Tensor]:
    """The arrays of case ``k`` stored as ``<prefix><name>_<k>``, as tensors by name (a state dict, say)."""
    suffix = f"_{k}"
    return {key[len(prefix):-len(suffix)]: torch.from_numpy(np.array(value)) for key, value in inputs.items()
            if key.startswith(prefix) and key.endswith(suffix)}


def answer_probes(grade_id: str, answer: Callable[[Mapping[str, np.ndarray], int], Mapping[str, Any]],
                  folder: str | Path = ".") -> None:
    """Save ``answer(inputs, k)`` for every case ``k`` of the grader's inputs for ``grade_id``.

    ``answer`` returns ``{name: value}``; each value is stored as ``<name>_<k>``. Does nothing
    when the grader left no inputs, i.e. outside grading. Returns None: it ends hidden test
    cells, whose last value a notebook would show as ``Out[]``.
    """
    source = inputs_path(folder, grade_id)
    if not source.exists():
        return
    with np.load(source, allow_pickle=False) as data:
        inputs = {key: data[key] for key in data.files}
    results = {}
    for k in range(int(inputs["n"])):
        for name, value in answer(inputs, k).items():
            results[f"{name}_{k}"] = as_plain_array(value)
    np.savez(outputs_path(folder, grade_id), **results)
