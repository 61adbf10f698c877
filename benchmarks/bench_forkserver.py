"""How to start the nbgrader processes of a batch: a new interpreter each time, the harness's
fork server (autograder/forkserver.py), or multiprocessing's "forkserver" context with the same
modules preloaded. Each start runs one real nbgrader app (``export`` of a small gradebook) in a
private folder, with its own session, environment and log, as a grading worker runs.

    python benchmarks/bench_forkserver.py [--runs 5] [--out build/bench_forkserver.json]

Prints the median seconds of each way and its ratio to the harness's fork server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder import forkserver, gradebook  # noqa: E402
from autograder.nbgrader_runner import nbgrader_env, run_nbgrader  # noqa: E402


def _child(args: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    """In a multiprocessing child: what autograder.forkserver's children do, then the app."""
    os.setsid()
    forkserver.die_with_parent()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from autograder import worker

    sys.exit(worker.main(args))


def _course(scratch: Path, n: int) -> tuple[Path, dict[str, str], str]:
    course = gradebook.make_course_copy(scratch / f"course-{n}")
    db = gradebook.sqlite_url(scratch / "gradebook.db")
    return course, nbgrader_env(course, {"NBGRADER_DB_URL": db}), str(course / "grades.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("build/bench_forkserver.json"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {"new interpreter": [], "autograder fork server": [],
                                     "multiprocessing forkserver": []}
    with tempfile.TemporaryDirectory(prefix="bench-forkserver-") as scratch:
        scratch = Path(scratch)
        server = forkserver.ForkServer(cwd=scratch).start()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(forkserver.WARM_MODULES))
        context.Process(target=time.sleep, args=(0,)).start()  # start the server and its imports now
        time.sleep(8)  # both servers have imported nbgrader before the first timed start
        n = 0
        for _ in range(args.runs):
            for way in times:
                n += 1
                course, env, target = _course(scratch, n)
                started = time.perf_counter()
                if way == "new interpreter":
                    run_nbgrader(course, "export", f"--to={target}", env=env, timeout=300)
                elif way == "autograder fork server":
                    run_nbgrader(course, "export", f"--to={target}", env=env, timeout=300, launcher=server)
                else:
                    process = context.Process(target=_child, args=(["--app", "export", f"--to={target}"], str(course),
                                                                    env, str(course / "export.log")))
                    process.start()
                    process.join(300)
                    assert process.exitcode == 0, (course / "export.log").read_text()[-2000:]
                times[way].append(time.perf_counter() - started)
                assert Path(target).is_file(), way
        server.close()
    base = statistics.median(times["autograder fork server"])
    result = {way: {"median_s": round(statistics.median(t), 3), "ratio_to_fork_server": round(statistics.median(t) / base, 2)}
              for way, t in times.items()}
    for way, row in result.items():
        print(f"{way:28s} {row['median_s']:6.2f} s  x{row['ratio_to_fork_server']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "results": result}, indent=2))


if __name__ == "__main__":
    main()
