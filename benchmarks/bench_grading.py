"""Benchmark of the grading harness (``make bench`` runs it after the model benchmark).

1. Overhead: seconds per submission through ``autograder grade --workers 1`` against plain
   ``nbgrader autograde`` of the same submissions in a plain course root (same notebooks,
   same pinned small setting, all cores for the one kernel), for every assignment. The
   harness also stages, writes feedback, exports grades.csv and the report; the ratio is
   harness / plain (1.0 = no overhead), also against plain autograde + generate_feedback.
   Each side is also run on an empty class: its fixed cost per batch (the harness: adding
   the assignment to a new gradebook, the probes' answers, export, report; plain nbgrader:
   the start of autograde and generate_feedback), so the cost of one more submission is
   (batch - fixed) / n on each side.
2. Parallelism: throughput (submissions per minute) of ``autograder grade`` with 1 and with
   2 workers on the same class of submissions (CPU; threads are split between workers).

    python benchmarks/bench_grading.py [--out build/bench_grading.json] [--class-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder import grading  # noqa: E402
from autograder.course import ASSIGNMENTS, SMALL_PARAMETERS, pin_parameters  # noqa: E402
from autograder.examples import GRADED_KINDS, write_class  # noqa: E402
from autograder.gradebook import make_course_copy, sqlite_url  # noqa: E402
from autograder.nbgrader_runner import NbgraderError, nbgrader_env, run_nbgrader  # noqa: E402


def _class(folder: Path, assignment: str, students: list[str]) -> Path:
    """A SUBMISSIONS folder of <student>.ipynb: complete, partial and untouched in turn."""
    return write_class(folder, assignment, {s: GRADED_KINDS[i % 3] for i, s in enumerate(students)})


def plain_nbgrader(assignment: str, submissions: Path, work: Path) -> tuple[float, float]:
    """Seconds of one ``nbgrader autograde ASSIGNMENT`` over every submission (gradebook ready),
    and of the ``nbgrader generate_feedback ASSIGNMENT`` after it."""
    course = make_course_copy(work, assignment)
    source = course / "solutions" / assignment / ASSIGNMENTS[assignment]
    nb = nbformat.read(source, as_version=4)
    pin_parameters(nb, SMALL_PARAMETERS[assignment])
    nbformat.write(nb, source)
    env = nbgrader_env(course, {"NBGRADER_DB_URL": sqlite_url(course / "gradebook.db")})
    run_nbgrader(course, "generate_assignment", assignment, "--force", env=env)
    for path in sorted(submissions.glob("*.ipynb")):
        target = course / "submitted" / path.stem / assignment
        target.mkdir(parents=True)
        shutil.copy(path, target / ASSIGNMENTS[assignment])
    started = time.perf_counter()
    run_nbgrader(course, "autograde", assignment, "--force", env=env, timeout=3600)
    autograded = time.perf_counter()
    run_nbgrader(course, "generate_feedback", assignment, "--force", env=env, timeout=3600)
    return autograded - started, time.perf_counter() - autograded


def plain_start(assignment: str, work: Path) -> float:
    """Seconds of plain nbgrader's fixed cost per batch: ``autograde`` and ``generate_feedback``
    with no submission get as far as finding none (nbgrader then exits with an error)."""
    course = make_course_copy(work, assignment)
    env = nbgrader_env(course, {"NBGRADER_DB_URL": sqlite_url(course / "gradebook.db")})
    run_nbgrader(course, "generate_assignment", assignment, "--force", env=env)
    started = time.perf_counter()
    for command in ("autograde", "generate_feedback"):
        try:
            run_nbgrader(course, command, assignment, "--force", env=env, timeout=600)
        except NbgraderError as error:
            assert "No notebooks were matched" in str(error) or "No submissions" in str(error), error
    return time.perf_counter() - started


def harness(assignment: str, submissions: Path, out: Path, workers: int) -> float:
    """Seconds of ``autograder grade`` (prepare, grade, feedback, record, export, report)."""
    opts = grading.GradingOptions(
        assignment=assignment, submissions=submissions, out=out, db_url=sqlite_url(out / "gradebook.db"),
        slots=grading.make_slots(workers, []), parameters=SMALL_PARAMETERS[assignment], progress=False,
    )
    started = time.perf_counter()
    result = grading.grade(opts)
    seconds = time.perf_counter() - started
    bad = [o for o in result.outcomes if o["status"] != "graded"]
    assert not bad, f"benchmark submissions must grade cleanly: {bad}"
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/bench_grading.json"))
    parser.add_argument("--assignment", action="append", choices=list(ASSIGNMENTS), help="default: all")
    parser.add_argument("--class-size", type=int, default=8, help="submissions in the 1-vs-2-workers run")
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    results: dict = {"machine": {"cpus": cpus, "processor": platform.processor() or platform.machine(),
                                 "gpus": grading.parse_gpus("auto")}, "overhead": {}, "workers": {}}
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        for assignment in args.assignment or list(ASSIGNMENTS):
            students = [f"student{i}" for i in range(len(GRADED_KINDS))]
            subs = _class(tmp / assignment / "class", assignment, students)
            empty = tmp / assignment / "empty"
            empty.mkdir(parents=True)
            plain, feedback = plain_nbgrader(assignment, subs, tmp / assignment / "plain")
            plain_fixed = plain_start(assignment, tmp / assignment / "plain-empty")
            ours = harness(assignment, subs, tmp / assignment / "harness", workers=1)
            ours_fixed = harness(assignment, empty, tmp / assignment / "harness-empty", workers=1)
            n = len(students)
            each_plain = (plain + feedback - plain_fixed) / n
            each_ours = (ours - ours_fixed) / n
            row = {"submissions": n, "plain_nbgrader_s_per_submission": round(plain / n, 2),
                   "plain_feedback_s_per_submission": round(feedback / n, 2),
                   "harness_1_worker_s_per_submission": round(ours / n, 2), "harness_vs_plain_ratio": round(ours / plain, 3),
                   "harness_vs_plain_with_feedback_ratio": round(ours / (plain + feedback), 3),
                   "plain_fixed_s": round(plain_fixed, 2), "harness_fixed_s": round(ours_fixed, 2),
                   "plain_s_per_extra_submission": round(each_plain, 2),
                   "harness_s_per_extra_submission": round(each_ours, 2),
                   "extra_submission_ratio": round(each_ours / each_plain, 3)}
            results["overhead"][assignment] = row
            print(f"{assignment}: plain nbgrader {plain / n:.1f} s/submission (+{feedback / n:.1f} s feedback), harness "
                  f"{ours / n:.1f} s/submission -> ratio {ours / plain:.2f} ({ours / (plain + feedback):.2f} against "
                  f"autograde + feedback); fixed per batch: plain {plain_fixed:.1f} s, harness {ours_fixed:.1f} s; "
                  f"each further submission: plain {each_plain:.1f} s, harness {each_ours:.1f} s -> ratio "
                  f"{each_ours / each_plain:.2f}", flush=True)

        assignment = "03_dice_iou"
        students = [f"s{i:02d}" for i in range(args.class_size)]
        subs = _class(tmp / "workers" / "class", assignment, students)
        for workers in (1, 2):
            seconds = harness(assignment, subs, tmp / "workers" / f"out{workers}", workers=workers)
            per_minute = 60 * len(students) / seconds
            results["workers"][str(workers)] = {"seconds": round(seconds, 1), "submissions_per_minute": round(per_minute, 2)}
            print(f"{assignment}, {len(students)} submissions, {workers} worker(s): {seconds:.0f} s, "
                  f"{per_minute:.1f} submissions/min", flush=True)
        w1, w2 = results["workers"]["1"], results["workers"]["2"]
        results["workers"]["speedup_2_vs_1"] = round(w2["submissions_per_minute"] / w1["submissions_per_minute"], 3)
        print(f"2 workers vs 1: x{results['workers']['speedup_2_vs_1']:.2f} throughput")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
