"""The main job (``make demo``): the whole grading pipeline on the bundled example submissions.

    python -m autograder.demo [--out build/demo] [--workers N]

1. release: regenerate the student versions from ``solutions/`` (nbgrader generate_assignment);
2. grade every assignment's examples (``examples/``) as one batch (one pool of
   workers for all, the final assignment's training started first), each assignment at the
   small setting and timeouts its ``assignment.toml`` declares;
3. leave nbgrader's ``autograded/`` and ``feedback/``, ``gradebook.db``, ``grades.csv``,
   ``status.csv`` and ``report.html`` in ``--out``; print the gradebook as a table and check
   every example got the status and score range its ``assignment.toml`` declares (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from autograder import course, grading
from autograder.cli import release
from autograder.examples import EXAMPLES
from autograder.gradebook import sqlite_url


def check_expectations(rows: list[dict]) -> list[str]:
    """Rows whose status or share of autograded points is not what the assignment's declaration
    (``[examples]`` of its ``assignment.toml``) says the example must get."""
    wrong = []
    for assignment in sorted({row["assignment"] for row in rows}):  # a declared example that was not graded
        graded = {row["student"] for row in rows if row["assignment"] == assignment}
        wrong += [f"{assignment}/{kind}: declared in its assignment.toml, not graded"
                  for kind in sorted(set(course.assignment(assignment).examples) - graded)]
    for row in rows:
        expected = course.assignment(row["assignment"]).examples.get(row["student"])
        if expected is None:
            wrong.append(f"{row['assignment']}/{row['student']}: {row['status']}, but its assignment.toml declares "
                         "nothing for this example")
            continue
        maximum = float(row["auto_max_score"])
        share = float(row["auto_score"]) / maximum if maximum else 0.0
        if row["status"] != expected.status or not expected.low - 1e-9 <= share <= expected.high + 1e-9:
            wrong.append(f"{row['assignment']}/{row['student']}: {row['status']} with {share:.0%} of the autograded "
                         f"points, expected {expected.status} with {expected.low:.0%}-{expected.high:.0%} "
                         f"({row['reason']})")
    return wrong


def run(out: Path, workers: int | None = None, assignments: list[str] | None = None, progress: bool = True,
        release_first: bool = True) -> list[dict]:
    """Release (unless ``release_first`` is false), grade every assignment's examples into a
    fresh ``out``; the status rows."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    assignments = assignments or list(course.ASSIGNMENTS)
    if release_first:
        release(assignments)
    slots = grading.make_slots(workers, grading.parse_gpus("auto"))
    batch = []
    for name in assignments:  # each at its declared small setting and timeouts
        declared = course.assignment(name)
        batch.append(grading.GradingOptions(
            assignment=name, submissions=EXAMPLES / name, out=out, db_url=sqlite_url(out / "gradebook.db"),
            slots=slots, timeout=declared.timeouts.notebook, cell_timeout=declared.timeouts.cell,
            training_timeout=declared.timeouts.training, parameters=declared.small, progress=progress,
            roster=EXAMPLES / "roster.csv"))
    result = grading.grade_batch(batch)  # one pool for all: the final assignment's training starts first
    print(f"{len(result.outcomes)} submissions of {len(batch)} assignments graded in {result.seconds:.0f} s", flush=True)
    return grading.read_status_csv(out / "status.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=course.ROOT / "build" / "demo")
    parser.add_argument("--workers", type=int, default=None, help="default: one per GPU, else one per 2 CPU cores")
    parser.add_argument("--assignment", action="append", choices=list(course.ASSIGNMENTS), help="default: all")
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
