"""Executors: where the per-submission step of a batch runs.

The batch (:func:`autograder.grading.grade_batch`) hands each submission to an executor as
``submit(step, task, opts)`` and gets a :class:`~concurrent.futures.Future` of the finished
task back; it records the results itself, one at a time (the gradebook has one writer), in
the order they finish. An executor only decides *where* ``step`` runs: it gives the task its
slot (a GPU or a CPU share, :mod:`autograder.slots`) and its launcher for nbgrader processes,
and never raises for a submission: ``step`` turns every failure into the task's status.

:class:`LocalExecutor` is the first one: threads on this machine, one per slot, each running
nbgrader in a process forked from the batch's fork server (:mod:`autograder.forkserver`).
"""

from __future__ import annotations

import abc
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from autograder import forkserver
from autograder.slots import Slot


class Executor(abc.ABC):
    """Runs ``step(task, opts)`` for each submitted task, somewhere; a context manager."""

    @abc.abstractmethod
    def submit(self, step: Callable, task, opts) -> Future:
        """Start ``step(task, opts)``; the future's result is the task, finished."""

    @abc.abstractmethod
    def close(self) -> None:
        """Wait for what was submitted, then release everything the executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """A thread per slot on this machine; a task holds a slot while its step runs, and its
    nbgrader is forked from one fork server: ``launcher``, the batch's, which the batch closes;
    else one of its own in ``cwd``, started now (it imports nbgrader while the batch prepares)
    and closed with the executor."""

    def __init__(self, slots: list[Slot], cwd: Path | None = None, launcher: forkserver.ForkServer | None = None):
        if not slots:
            raise ValueError("an executor needs at least one slot")
        if (cwd is None) == (launcher is None):
            raise ValueError("give the executor a fork server or a folder to start its own in")
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in slots:
            self._free.put(slot)
        self._owns_launcher = launcher is None
        self._launcher = launcher or forkserver.ForkServer(cwd=cwd).start()
        self._pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="grader")

    def _run(self, step: Callable, task, opts):
        task.slot, task.launcher = self._free.get(), self._launcher
        try:
            step(task, opts)
        finally:
            self._free.put(task.slot)
        return task

    def submit(self, step: Callable, task, opts) -> Future:
        return self._pool.submit(self._run, step, task, opts)

    def close(self) -> None:
        try:
            self._pool.shutdown(wait=True)
        finally:
            if self._owns_launcher:
                self._launcher.close()
