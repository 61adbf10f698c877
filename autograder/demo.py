"""The main job (``make demo``): the whole grading pipeline on the bundled example submissions.

    python -m autograder.demo [--out build/demo] [--workers N]

1. release: regenerate the student versions from ``solutions/`` (nbgrader generate_assignment);
2. grade every assignment's examples (``autograder/examples/``) with ``autograder grade``, the
   notebooks' small setting pinned (the final assignment's training budget included);
3. leave nbgrader's ``autograded/`` and ``feedback/``, ``gradebook.db``, ``grades.csv``,
   ``status.csv`` and ``report.html`` in ``--out``; print the gradebook as a table and check
   every example got the status and score range it is meant to get (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from autograder import grading
from autograder.cli import release
from autograder.course import ASSIGNMENTS, ROOT, SMALL_PARAMETERS
from autograder.examples import EXAMPLES, EXPECTED
from autograder.gradebook import sqlite_url

# Budgets of the demo: cells get 30 s (the looping example is interrupted then), the
# training cells of the final assignment 300 s, a whole notebook 600 s.
CELL_TIMEOUT, TRAINING_TIMEOUT, NOTEBOOK_TIMEOUT = 30, 300, 600.0


def check_expectations(rows: list[dict]) -> list[str]:
    """Rows whose status or share of autograded points is not what the example is meant to get."""
    wrong = []
    for row in rows:
        status, (low, high) = EXPECTED[row["student"]]
        share = float(row["auto_score"]) / float(row["auto_max_score"])
        if row["status"] != status or not low - 1e-9 <= share <= high + 1e-9:
            wrong.append(f"{row['assignment']}/{row['student']}: {row['status']} with {share:.0%} of the autograded "
                         f"points, expected {status} with {low:.0%}-{high:.0%} ({row['reason']})")
    return wrong


def run(out: Path, workers: int | None = None, assignments: list[str] | None = None, progress: bool = True,
        release_first: bool = True) -> list[dict]:
    """Release (unless ``release_first`` is false), grade every assignment's examples into a
    fresh ``out``; the status rows."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    assignments = assignments or list(ASSIGNMENTS)
    if release_first:
        release(assignments)
    slots = grading.make_slots(workers, grading.parse_gpus("auto"))
    for assignment in assignments:
        opts = grading.GradingOptions(
            assignment=assignment, submissions=EXAMPLES / assignment, out=out, db_url=sqlite_url(out / "gradebook.db"),
            slots=slots, timeout=NOTEBOOK_TIMEOUT, cell_timeout=CELL_TIMEOUT, training_timeout=TRAINING_TIMEOUT,
            parameters=SMALL_PARAMETERS[assignment], progress=progress, roster=EXAMPLES / "roster.csv",
        )
        result = grading.grade(opts)
        print(f"{assignment}: {len(result.outcomes)} submissions graded in {result.seconds:.0f} s", flush=True)
    return grading.read_status_csv(out / "status.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "demo")
    parser.add_argument("--workers", type=int, default=None, help="default: one per GPU, else one per 2 CPU cores")
    parser.add_argument("--assignment", action="append", choices=list(ASSIGNMENTS), help="default: all")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(args.out.resolve(), args.workers, args.assignment)
    print()
    print(grading.summary_table(rows))
    print(f"\n{len(rows)} submissions in {time.perf_counter() - started:.0f} s; in {args.out}: report.html, "
          "status.csv, grades.csv, gradebook.db, autograded/, feedback/")
    wrong = check_expectations(rows)
    for line in wrong:
        print(f"UNEXPECTED {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
