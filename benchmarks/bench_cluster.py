"""Benchmark of the cluster path (``make bench`` runs it after the grading benchmark).

The same class of submissions of one assignment is graded three ways, side by side on this
machine: the local pool with N workers, and a real ``dask scheduler`` with 1 and with N
``autograder worker`` processes (``autograder grade --cluster``). Reported: each run's wall
time and throughput, the ratio cluster / local pool at the same number of workers, and the
cluster path's overhead per submission (its wall time minus the local pool's, over the class
size: shipping the submission and its results, the worker's checks).

    python benchmarks/bench_cluster.py [--assignment 03_dice_iou] [--class-size 6] [--workers 2]
                                       [--out build/bench_cluster.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.course import SMALL_PARAMETERS  # noqa: E402
from autograder.examples import GRADED_KINDS, write_class  # noqa: E402


def _grade(assignment: str, folder: Path, out: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "autograder.cli", "grade", assignment, str(folder), "--out", str(out), "--no-progress",
           *[f"--param={k}={v!r}" for k, v in SMALL_PARAMETERS[assignment].items()], *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"autograder grade failed: {done.stderr[-2000:]}")
    seconds = time.perf_counter() - started
    print(f"  {' '.join(extra)}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


def _cluster(work: Path, workers: int):
    """A scheduler and ``workers`` grading workers; returns (address, stop)."""
    work.mkdir(parents=True, exist_ok=True)
    file = work / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", str(file),
                                  "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (file.exists() and file.read_text()):
        time.sleep(0.2)
    if not (file.exists() and file.read_text()):
        scheduler.kill()
        raise RuntimeError(f"the scheduler wrote no {file}")
    address = f"scheduler-file:{file}"
    pool = subprocess.Popen([sys.executable, "-m", "autograder.cli", "worker", address, "--workers", str(workers),
                             "--gpus", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            start_new_session=True)
    from distributed import Client

    with Client(scheduler_file=str(file), timeout="60s") as client:
        client.wait_for_workers(workers, timeout=120)

    def stop():
        for proc in (pool, scheduler):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)

    return address, stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignment", default="03_dice_iou")
    parser.add_argument("--class-size", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench_cluster.json")
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as scratch:
        work = Path(scratch)
        students = [f"s{i:02d}" for i in range(args.class_size)]
        folder = write_class(work / "class", args.assignment,
                             {s: GRADED_KINDS[i % 3] for i, s in enumerate(students)})
        runs = {}
        runs[f"local pool, {args.workers} workers"] = _grade(
            args.assignment, folder, work / "local", "--workers", str(args.workers), "--gpus", "none")
        for n in sorted({1, args.workers}):
            address, stop = _cluster(work / f"dask-{n}", n)
            try:
                runs[f"dask, {n} worker(s)"] = _grade(args.assignment, folder, work / f"cluster-{n}", "--cluster", address)
            finally:
                stop()
    local = runs[f"local pool, {args.workers} workers"]
    same = runs[f"dask, {args.workers} worker(s)"]
    result = {
        "machine": f"{platform.node()} ({cpus} CPUs, {platform.processor() or platform.machine()})",
        "assignment": args.assignment, "class_size": args.class_size,
        "seconds": {k: round(v, 1) for k, v in runs.items()},
        "submissions_per_minute": {k: round(60 * args.class_size / v, 2) for k, v in runs.items()},
        f"dask {args.workers} / local pool {args.workers} (time ratio)": round(same / local, 2),
        f"dask 1 / dask {args.workers} (speed-up from workers)": round(runs["dask, 1 worker(s)"] / same, 2),
        "cluster overhead per submission (s)": round((same - local) / args.class_size, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
