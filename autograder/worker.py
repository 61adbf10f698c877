"""``python -m autograder.worker ASSIGNMENT STUDENT``: what one grading worker runs in a
submission's private course root: ``nbgrader autograde`` then ``nbgrader generate_feedback``
for that student, in one process (nbgrader's apps, as its own tests drive them), which saves
an interpreter start and nbgrader's imports per submission.

``python -m autograder.worker --app NBGRADER_ARGS...``: one nbgrader app (what
``nbgrader NBGRADER_ARGS...`` runs), for the batch's own ``generate_assignment`` and
``export`` forked from the same server (:func:`autograder.nbgrader_runner.run_nbgrader`).

Exit status: 0 graded with feedback; 3 graded, feedback failed; else autograde's failure.
"""

from __future__ import annotations

import sys

FEEDBACK_FAILED = 3


def run_app(args: list[str]) -> int:
    from jupyter_core.application import NoStart
    from nbgrader.apps import NbGraderApp

    app = NbGraderApp.instance()
    try:
        app.initialize(args)
        app.start()
        return 0
    except NoStart:  # what the app raises after its subcommand ran
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        app.reset()
        NbGraderApp.clear_instance()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--app"]:
        return run_app(argv[1:])
    assignment, student = argv
    code = run_app(["autograde", assignment, "--student", student, "--force"])
    if code != 0:
        return code
    if run_app(["generate_feedback", assignment, "--student", student, "--force"]) != 0:
        return FEEDBACK_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
