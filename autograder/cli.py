"""``autograder``: the course's command line.

Every command works on the course found as nbgrader finds its config: the folder holding
``nbgrader_config.py`` and ``solutions/``, from the current folder upwards, or ``--course-dir``.

    autograder new ASSIGNMENT [--title TITLE]
        a new assignment in solutions/ASSIGNMENT: a source notebook (parameters cell, one
        exercise with a probed hidden test), its assignment.toml and grading.py
    autograder release [ASSIGNMENT ...]
        generate notebooks/ (student versions) from solutions/ with nbgrader
    autograder grade ASSIGNMENT SUBMISSIONS [--workers N] [--gpus auto|none|0,1] [--timeout S]
                     [--param NAME=VALUE ...] [--force] [--out DIR] [--db URL] [--roster CSV]
                     [--cluster tcp://HOST:PORT | scheduler-file:PATH | slurm]
        autograde every submission with nbgrader; writes autograded/, feedback/, grades.csv,
        status.csv and report.html to --out (default: the course root). Elsewhere than the
        course root, --out also gets an nbgrader_config.py: `jupyter lab` started there shows
        the run in formgrader
    autograder worker SCHEDULER [--workers N] [--gpus auto|none|0,1] [--no-nanny]
        start Dask workers for `autograder grade --cluster SCHEDULER`: one per GPU (pinned to
        it) or per 2 CPU cores, each holding one grading slot, in this course
    autograder config [--json] [--workers N ...]
        the effective settings (course root, c.Autograder.* of nbgrader_config.py, gradebook) and
        where each came from: default, nbgrader_config.py or the command line
    autograder export [--out DIR] [--db URL] [--format canvas --roster CANVAS_EXPORT.csv]
        grades.csv and report.html again from the gradebook, e.g. after manual grading in
        formgrader; --format canvas adds canvas-grades.csv (Canvas's gradebook import) and
        grades-by-question.csv
    autograder collect ASSIGNMENT ZIP --lms canvas|moodle|blackboard|nbgrader [--roster CSV] [--due ISO]
        an LMS's bulk download into submitted/<student>/ASSIGNMENT/ (the latest resubmission,
        late ones flagged, nested zips unpacked); every file's fate in collect-ASSIGNMENT.csv
    autograder execute NOTEBOOK ... [-p NAME VALUE ...] [--out DIR]
        run notebooks with papermill, as CI does
    autograder doctor [--db URL] [--strict] [--json]
        check what this host can enforce (bubblewrap, namespaces, cgroups, GPUs, gradebook);
        exits 1 where grading would be unsafe (--strict: also without a cgroup)

Exit status: 0 when the batch completed (whatever the students' statuses), 2 when the
command was misused (unknown assignment or parameter, missing SUBMISSIONS), 1 when
nbgrader itself failed or a notebook given to ``execute`` failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from autograder import course
from autograder.nbgrader_runner import NbgraderError, run_nbgrader


def release(assignments: list[str]) -> None:
    for assignment in assignments:
        run_nbgrader(course.ROOT, "generate_assignment", assignment, "--force")
        print(f"released notebooks/{assignment}/{course.ASSIGNMENTS[assignment]}")


def _name_value(text: str) -> tuple[str, object]:
    from autograder.execute import parse_value

    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), parse_value(value.strip())


def _assignment_column(text: str) -> tuple[str, str]:
    assignment, sep, column = text.partition("=")
    if not sep or not assignment.strip() or not column.strip():
        raise argparse.ArgumentTypeError(f"expected ASSIGNMENT=COLUMN, got {text!r}")
    return assignment.strip(), column.strip()


def _course_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--course-dir", type=Path, default=None,
                        help="the course root (default: the folder holding nbgrader_config.py and solutions/, "
                             f"from here upwards; or ${course.COURSE_DIR_ENV})")


def _parser() -> argparse.ArgumentParser:
    ASSIGNMENTS, ROOT = course.ASSIGNMENTS, course.ROOT
    parser = argparse.ArgumentParser(prog="autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _course_dir_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    n = commands.add_parser("new", help="scaffold a new assignment in solutions/ (notebook, assignment.toml, grading.py)")
    n.add_argument("assignment", metavar="ASSIGNMENT", help="its name, like 05_edge_maps")
    n.add_argument("--title", default=None, help="the notebook's title (default: from the name)")

    p = commands.add_parser("release", help="generate the student versions in notebooks/ from solutions/")
    p.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help=f"default: all of {', '.join(ASSIGNMENTS)}")

    g = commands.add_parser("grade", help="autograde a batch of submissions")
    g.add_argument("assignment", metavar="ASSIGNMENT", help=", ".join(ASSIGNMENTS))
    g.add_argument("submissions", metavar="SUBMISSIONS", type=Path,
                   help="a folder of <student_id>/ folders, <student_id>.ipynb or <student_id>.zip files")
    _setting_flags(g)
    g.add_argument("--param", dest="parameters", action="append", type=_name_value, default=[],
                   metavar="NAME=VALUE", help="pin a parameter of the notebook (repeatable), e.g. epochs=2")
    g.add_argument("--force", action="store_true", help="re-grade students already graded")
    g.add_argument("--roster", type=Path, default=None,
                   help="nbgrader's roster CSV (id,first_name,last_name,email): the students' names in formgrader")
    g.add_argument("--out", type=Path, default=ROOT, help="output folder (default: the course root)")
    g.add_argument("--db", default=None, help="gradebook URL (default: the course's, $NBGRADER_DB_URL or "
                   "sqlite:///<course root>/gradebook.db; with --out elsewhere, <out>/gradebook.db)")
    g.add_argument("--keep-workspaces", action="store_true", help="keep each submission's private course root")
    g.add_argument("--wait", action="store_true",
                   help="if another run grades into the same --out or gradebook, wait for it (default: refuse)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    w = commands.add_parser("worker", help="start Dask workers that grade for this course (autograder grade --cluster)")
    w.add_argument("scheduler", metavar="SCHEDULER", help="the scheduler: tcp://HOST:PORT or scheduler-file:PATH")
    w.add_argument("--workers", type=int, default=None,
                   help="workers to start (default: one per GPU, else one per 2 CPU cores)")
    w.add_argument("--gpus", default="auto", help="auto (every CUDA device), none (CPU only) or indices/UUIDs like 0,1")
    w.add_argument("--no-nanny", action="store_true", help="no Dask nanny: a worker that dies stays dead")
    w.add_argument("--local-directory", type=Path, default=None, help="the workers' scratch (default: Dask's)")

    c = commands.add_parser("config", help="the effective settings and where each came from")
    c.add_argument("--json", action="store_true", help="print them as JSON")
    _setting_flags(c)

    x = commands.add_parser("export", help="grades.csv and report.html again from the gradebook (after manual grading)")
    x.add_argument("--out", type=Path, default=ROOT, help="the folder a grade run wrote (default: the course root)")
    x.add_argument("--db", default=None, help="gradebook URL (default: that of --out, as `grade` chose it)")
    x.add_argument("--format", choices=("nbgrader", "canvas"), default="nbgrader",
                   help="canvas: also canvas-grades.csv for Canvas's gradebook import (needs --roster) and "
                        "grades-by-question.csv")
    x.add_argument("--roster", type=Path, default=None, help="Canvas's gradebook export (its students and columns)")
    x.add_argument("--column", action="append", default=[], type=_assignment_column, metavar="ASSIGNMENT=COLUMN",
                   help="the Canvas column of an assignment, e.g. '03_dice_iou=Dice and IoU (5555)' (repeatable; "
                        "default: the column named after the assignment)")

    k = commands.add_parser("collect", help="an LMS's bulk download into nbgrader's submitted/ layout")
    k.add_argument("assignment", metavar="ASSIGNMENT", help=", ".join(ASSIGNMENTS))
    k.add_argument("download", metavar="ZIP", type=Path, help="the LMS's bulk download of the submissions")
    k.add_argument("--lms", required=True, choices=("canvas", "moodle", "blackboard", "nbgrader"))
    k.add_argument("--roster", type=Path, default=None,
                   help="the LMS's gradebook export: maps its user ids to student ids (default: the LMS's ids)")
    k.add_argument("--due", default=None, help="the due date (ISO, UTC unless it says; a date alone: its end): "
                   "later submissions are late")
    k.add_argument("--lms-timezone", default="UTC",
                   help="the time zone of the times the LMS writes (Moodle, Blackboard), e.g. Europe/Berlin")
    k.add_argument("--out", type=Path, default=ROOT / "submitted", help="default: the course's submitted/")
    e = commands.add_parser("execute", help="run notebooks with papermill")
    e.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK")
    e.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    e.add_argument("--out", type=Path, default=ROOT / "build" / "executed", help="default: build/executed")
    e.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds")

    d = commands.add_parser("doctor", help="check what this host can enforce for sandboxed grading")
    d.add_argument("--db", default=None, help="gradebook URL (default: the course's, $NBGRADER_DB_URL or "
                   "sqlite:///<course root>/gradebook.db)")
    d.add_argument("--strict", action="store_true", help="also fail when kernels would get only rlimits")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    for sub in commands.choices.values():  # also accepted after the command
        sub.add_argument("--course-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _setting_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per setting of autograder/settings.py (default: the course's nbgrader_config.py, else its default)."""
    from traitlets import Float, Integer

    from autograder.settings import FLAGS, Autograder

    for name in FLAGS:
        trait = Autograder.class_traits()[name]
        kind = int if isinstance(trait, Integer) else float if isinstance(trait, Float) else str
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                            help=f"{trait.help} (c.Autograder.{name}; default {trait.default_value!r})")


def _settings(args):
    from autograder import settings

    return settings.effective({name: getattr(args, name, None) for name in settings.FLAGS})


def grade_command(args, parser) -> int:
    from traitlets import TraitError

    from autograder import gradebook, grading
    from autograder.locks import RunLocked
    from autograder.roster import RosterError

    if args.assignment not in course.ASSIGNMENTS:
        parser.error(f"unknown assignment {args.assignment!r}; the course has {', '.join(course.ASSIGNMENTS)}")
    if not args.submissions.exists():
        parser.error(f"SUBMISSIONS {args.submissions} does not exist")
    parameters = dict(args.parameters)
    try:
        settings, _ = _settings(args)
        grading.check_parameters(args.assignment, parameters)
        slots = grading.make_slots(settings.workers, grading.parse_gpus(settings.gpus))
    except (ValueError, KeyError, TraitError) as err:  # TraitError: a bad c.Autograder value in the config
        parser.error(str(err))
    out = args.out.resolve()
    db_url = _db_url(out, args.db)
    opts = grading.GradingOptions(
        assignment=args.assignment, submissions=args.submissions.resolve(), out=out, db_url=db_url, slots=slots,
        timeout=settings.timeout, cell_timeout=settings.cell_timeout, training_timeout=settings.training_timeout,
        parameters=parameters, force=args.force, progress=not args.no_progress, keep_workspaces=args.keep_workspaces,
        wait=args.wait, roster=args.roster.resolve() if args.roster else None, cluster=settings.cluster or None,
    )
    devices = ", ".join(sorted({s.device for s in slots}))
    where = (f"the Dask cluster at {settings.cluster}" if settings.cluster else
             f"{len(slots)} worker(s) on {devices}, {slots[0].threads} CPU thread(s) each")
    print(f"grading {args.assignment}: {where}; gradebook {gradebook.mask_url(db_url)}", flush=True)
    try:
        result = grading.grade(opts)
    except RosterError as err:
        parser.error(str(err))
    except RunLocked as err:
        print(f"autograder: {err}", file=sys.stderr)
        return 1
    except ImportError as err:  # the cluster's libraries
        print(f"autograder: --cluster needs Dask's distributed (and dask-jobqueue for slurm): {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if not settings.cluster:
            raise
        from autograder.cluster import ClusterError

        if not isinstance(err, (ClusterError, OSError)):
            raise
        print(f"autograder: the cluster at {settings.cluster} cannot grade: {err}", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for o in result.outcomes:
        counts[o["status"]] = counts.get(o["status"], 0) + 1
    done = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing new"
    skipped = f"; {len(result.skipped)} skipped (already graded, unchanged)" if result.skipped else ""
    print(f"{args.assignment}: {done}{skipped} in {result.seconds:.0f} s -> {out / 'status.csv'}, "
          f"{out / 'grades.csv'}, {out / 'report.html'}")
    return 0


def _db_url(out: Path, db: str | None) -> str:
    """The gradebook of a run into ``out``: --db, else the course's for the course root (or with
    $NBGRADER_DB_URL), else ``out/gradebook.db``."""
    from autograder import gradebook

    if db:
        return db
    if out == course.ROOT.resolve() or os.environ.get("NBGRADER_DB_URL"):
        return gradebook.course_db_url()
    return gradebook.sqlite_url(out / "gradebook.db")


def config_command(args) -> int:
    import json

    from traitlets import TraitError

    from autograder import settings

    try:
        rows = settings.describe({name: getattr(args, name, None) for name in settings.FLAGS})
    except (KeyError, TraitError) as err:  # a bad c.Autograder value in the config
        print(f"autograder: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    widths = [max(len(r[k]) for r in rows) for k in ("name", "value", "source")]
    for r in rows:
        print(f"{r['name']:<{widths[0]}}  {r['value']:<{widths[1]}}  {r['source']:<{widths[2]}}  {r['help']}")
    return 0


def new_command(args) -> int:
    from autograder.scaffold import new_assignment

    try:
        folder = new_assignment(args.assignment, args.title)
    except (ValueError, FileExistsError) as err:
        print(f"autograder: {err}", file=sys.stderr)
        return 2
    relative = folder.relative_to(course.ROOT)
    print(f"wrote {relative}/: {', '.join(sorted(p.name for p in folder.iterdir()))}\n"
          f"next: edit them, then `autograder release {args.assignment}`, "
          f"`python -m autograder.examples {args.assignment}` and `make demo` (README, \"Add an assignment\")")
    return 0


def export_command(args) -> int:
    from autograder import grading
    from autograder.locks import RunLocked, exclusive_run
    from autograder.report import write_report

    out = args.out.resolve()
    if not (out / "status.csv").is_file():
        print(f"autograder: {out / 'status.csv'} not found: grade into --out first", file=sys.stderr)
        return 2
    db_url = _db_url(out, args.db)
    try:
        with exclusive_run(out, db_url):  # not beside a grade run writing the same files
            grades = grading.export_grades(out, db_url)
            write_report(grading.read_status_csv(out / "status.csv"), out / "report.html", db_url)
    except RunLocked as err:
        print(f"autograder: {err}", file=sys.stderr)
        return 1
    print(f"wrote {grades} and {out / 'report.html'} (scores from the gradebook, manual grades included)")
    if args.format == "canvas":
        from autograder import lms

        if not args.roster:
            print("autograder: --format canvas needs --roster, Canvas's gradebook export", file=sys.stderr)
            return 2
        try:
            canvas = lms.canvas_csv(db_url, args.roster, out / "canvas-grades.csv", dict(args.column))
        except lms.CollectError as err:
            print(f"autograder: {err}", file=sys.stderr)
            return 2
        questions = lms.question_csv(db_url, out / "grades-by-question.csv")
        print(f"wrote {canvas.path} (Canvas: Grades > Import) and {questions}")
        if canvas.pending:
            print(f"autograder: left empty (manual grading not finished): {', '.join(canvas.pending)}", file=sys.stderr)
        if canvas.not_in_roster:
            print(f"autograder: not in the Canvas roster, not exported: {', '.join(canvas.not_in_roster)}",
                  file=sys.stderr)
    return 0


def collect_command(args, parser) -> int:
    from autograder import lms

    if args.assignment not in course.ASSIGNMENTS:
        parser.error(f"unknown assignment {args.assignment!r}; the course has {', '.join(course.ASSIGNMENTS)}")
    try:
        due = lms.parse_due(args.due) if args.due else None
        result = lms.collect(args.assignment, course.ASSIGNMENTS[args.assignment], args.download, args.lms,
                             args.out.resolve(), args.roster, due, args.lms_timezone)
    except lms.CollectError as err:
        print(f"autograder: {err}", file=sys.stderr)
        return 2
    late = len({r["student"] for r in result.rows if r["status"] == "collected" and r["late"] == "yes"})
    problems = {s: result.count(s) for s in ("unmatched", "ambiguous", "refused") if result.count(s)}
    print(f"collected {len(result.students)} submission(s) of {args.assignment} into {args.out} "
          f"({late} late, {result.count('superseded')} superseded file(s)); every file: {result.report}")
    if problems:
        print("not collected: " + ", ".join(f"{n} {s}" for s, n in problems.items()) + f" (see {result.report})",
              file=sys.stderr)
    return 0


def execute_command(args) -> int:
    from autograder.execute import NotebookFailed, execute_notebook, parse_value

    parameters = {name: parse_value(value) for name, value in args.parameter}
    failed = 0
    for notebook in args.notebooks:
        try:
            output, seconds = execute_notebook(notebook, args.out, parameters, timeout=args.timeout)
            print(f"ok      {notebook} -> {output} ({seconds:.0f} s)")
        except (NotebookFailed, FileNotFoundError, ValueError) as err:
            print(f"FAILED  {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def find_course(argv: list[str] | None) -> str | None:
    """Fix the course root before anything reads it (``--course-dir``, else found from here);
    the error that says why, if there is no course."""
    early = argparse.ArgumentParser(add_help=False)
    _course_dir_option(early)
    known, _ = early.parse_known_args(argv)
    if known.course_dir is not None:
        os.environ[course.COURSE_DIR_ENV] = str(known.course_dir.expanduser().resolve())
    try:
        course.course_root()
        course.assignments()
    except (course.CourseNotFound, course.BadDeclaration) as err:
        return str(err)
    return None


def main(argv: list[str] | None = None) -> int:
    problem = find_course(argv)
    if problem:
        if any(arg in ("-h", "--help") for arg in (sys.argv[1:] if argv is None else argv)):
            print(__doc__)  # the commands, though there is no course here to list assignments of
        print(f"autograder: {problem}", file=sys.stderr)
        return 2
    parser = _parser()
    args = parser.parse_args(argv)
    ASSIGNMENTS = course.ASSIGNMENTS
    try:
        if args.command == "new":
            return new_command(args)
        if args.command == "config":
            return config_command(args)
        if args.command == "release":
            unknown = sorted(set(args.assignments) - set(ASSIGNMENTS))
            if unknown:
                parser.error(f"unknown assignment(s) {', '.join(unknown)}; the course has {', '.join(ASSIGNMENTS)}")
            release(args.assignments or list(ASSIGNMENTS))
        elif args.command == "grade":
            return grade_command(args, parser)
        elif args.command == "export":
            return export_command(args)
        elif args.command == "collect":
            return collect_command(args, parser)
        elif args.command == "worker":
            from autograder.cluster_worker import worker_command

            return worker_command(args, parser)
        elif args.command == "execute":
            return execute_command(args)
        elif args.command == "doctor":
            from autograder.doctor import run_doctor

            return run_doctor(args.db, strict=args.strict, as_json=args.json)
    except NbgraderError as err:
        print(f"autograder: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
