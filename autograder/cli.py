"""``autograder``: the course's command line.

    autograder release [ASSIGNMENT ...]   generate notebooks/ (student versions) from solutions/
"""

from __future__ import annotations

import argparse
import sys

from autograder.course import ASSIGNMENTS, ROOT
from autograder.nbgrader_runner import NbgraderError, run_nbgrader


def release(assignments: list[str]) -> None:
    for assignment in assignments:
        run_nbgrader(ROOT, "generate_assignment", assignment, "--force")
        print(f"released notebooks/{assignment}/{ASSIGNMENTS[assignment]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("release", help="generate the student versions in notebooks/ from solutions/")
    p.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help=f"default: all of {', '.join(ASSIGNMENTS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.assignments) - set(ASSIGNMENTS))
    if unknown:
        parser.error(f"unknown assignment(s) {', '.join(unknown)}; the course has {', '.join(ASSIGNMENTS)}")
    try:
        if args.command == "release":
            release(args.assignments or list(ASSIGNMENTS))
    except NbgraderError as err:
        print(f"autograder: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
