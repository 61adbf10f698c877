"""``autograder worker``: Dask workers that grade for this course (``autograder grade --cluster``).

One ``dask worker`` process per slot (:func:`autograder.slots.make_slots`: a worker per GPU,
pinned to it by UUID, or per 2 CPU cores), each with one thread and one ``grading_slot``
resource, so that a worker grades one submission at a time; started in the course root, so
that it grades this course. Equivalent ``dask worker`` flags, for a worker started by hand::

    AUTOGRADER_WORKER_GPU=<uuid|none> AUTOGRADER_WORKER_THREADS=<n> AUTOGRADER_COURSE_DIR=<course> \\
        dask worker SCHEDULER --nthreads 1 --resources grading_slot=1
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from autograder import course
from autograder.cluster import SLOT_RESOURCE, WORKER_GPU_ENV, WORKER_THREADS_ENV
from autograder.slots import make_slots, parse_gpus


def worker_commands(scheduler: str, workers: int | None, gpus: str, nanny: bool = True,
                    local_directory: str | None = None) -> list[tuple[list[str], dict[str, str]]]:
    """The ``dask worker`` command and environment of each worker to start."""
    slots = make_slots(workers, parse_gpus(gpus))
    host = socket.gethostname()
    address = (["--scheduler-file", scheduler.removeprefix("scheduler-file:")]
               if scheduler.startswith("scheduler-file:") else [scheduler])
    started = []
    for index, slot in enumerate(slots):
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", *address, "--nthreads", "1", "--nworkers", "1",
               "--resources", f"{SLOT_RESOURCE}=1", "--name", f"{host}-{os.getpid()}-{slot.device}-{index}",
               "--nanny" if nanny else "--no-nanny"]
        if local_directory:
            cmd += ["--local-directory", local_directory]
        env = dict(os.environ, **{WORKER_GPU_ENV: slot.gpu or "none", WORKER_THREADS_ENV: str(slot.threads),
                                  course.COURSE_DIR_ENV: str(course.course_root())})
        started.append((cmd, env))
    return started


def worker_command(args, parser) -> int:
    try:
        commands = worker_commands(args.scheduler, args.workers, args.gpus, nanny=not args.no_nanny,
                                   local_directory=str(args.local_directory) if args.local_directory else None)
    except ValueError as err:
        parser.error(str(err))
    procs = [subprocess.Popen(cmd, env=env, cwd=course.course_root()) for cmd, env in commands]
    print(f"autograder: {len(procs)} Dask worker(s) for {args.scheduler}, grading {course.course_root()}", flush=True)

    def stop(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while any(proc.poll() is None for proc in procs):
        time.sleep(0.5)
    return max((proc.returncode or 0) for proc in procs) if procs else 0
