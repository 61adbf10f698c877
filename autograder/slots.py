"""Where submissions are graded: one slot per worker, a GPU (pinned by UUID) or the CPU, and
its share of CPU threads."""

from __future__ import annotations

import os
from dataclasses import dataclass

from autograder import gpus


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a GPU (``GPU-<uuid>`` / ``MIG-<uuid>``, :mod:`autograder.gpus`) or the CPU, and threads."""

    gpu: str | None
    threads: int

    @property
    def device(self) -> str:
        return f"cuda:{self.gpu}" if self.gpu is not None else "cpu"


def parse_gpus(value: str) -> list[str]:
    """``auto`` (all CUDA devices this process may use), ``none`` (CPU only), or indices and
    UUIDs like ``0,1``: the devices to pin workers to, by UUID (:func:`autograder.gpus.pinning_ids`)."""
    try:
        return gpus.pinning_ids(value)
    except ValueError as err:
        raise ValueError(f"--gpus: {err}") from None


def make_slots(workers: int | None, gpus: list[str], cpus: int | None = None) -> list[Slot]:
    """One slot per worker. GPUs are shared out round-robin (default: a worker per GPU);
    on CPU the default is a worker per 2 cores. CPU threads are split between workers so
    that parallel kernels never oversubscribe the cores, and never exceed ``$OMP_NUM_THREADS``
    where the grader's own environment sets it (a machine shared with other jobs)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers is None:
        workers = len(gpus) if gpus else max(1, cpus // 2)
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    threads = max(1, cpus // workers)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    if cap.isdigit() and int(cap) > 0:
        threads = min(threads, int(cap))
    return [Slot(gpus[i % len(gpus)] if gpus else None, threads) for i in range(workers)]
