"""nbgrader configuration of the course. The repository root is the course root.

    solutions/<assignment>/   nbgrader's source step (instructor notebooks)
    notebooks/<assignment>/   nbgrader's release step (student versions, committed)
    submitted/<student>/<assignment>/, autograded/, feedback/   created by nbgrader
    gradebook.db              the gradebook (SQLite; set NBGRADER_DB_URL for another database)

Run nbgrader from this folder, e.g. ``nbgrader generate_assignment 03_dice_iou --force``
or ``nbgrader autograde 03_dice_iou``.
"""

import functools
import os

ROOT = os.path.dirname(os.path.abspath(__file__))
# The course the harness's modules imported below grade (autograder/course.py): this one,
# unless the process was started for another (a grading worker's private copy of this file).
os.environ.setdefault("AUTOGRADER_COURSE_DIR", ROOT)

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "fpn-segmentation"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.db_url = os.environ.get("NBGRADER_DB_URL", "sqlite:///" + os.path.join(ROOT, "gradebook.db"))
# assignment.toml and grading.py: the harness's declaration of an assignment and its grader code
# (autograder/course.py), never released to students nor copied beside their graded notebooks
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.pt", "assignment.toml",
                            "grading.py"]

# The student version: outputs cleared, solutions replaced by this stub.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# The grading harness's settings (autograder/settings.py; `autograder config` prints them and where
# each came from), e.g.
#   c.Autograder.workers = 4            # parallel notebooks (default: one per GPU, else one per 2 cores)
#   c.Autograder.cell_timeout = 120     # seconds a cell may run (default 600)
#   c.Autograder.training_timeout = 1800  # seconds a locked cell tagged "training" may run (default 3600)
#   c.Autograder.timeout = 3600         # seconds a whole notebook may take
# `autograder grade` flags override them.
# The course's library, which its notebooks import: kernels see it read-only in the sandbox, its code is part of
# the probes' fingerprint, and course_lib.probes answers the probes in the kernel.
c.Autograder.course_library = "course_lib"

# Per-cell timeout while autograding (Execute.timeout, not ExecutePreprocessor.timeout, which
# nbgrader ignores): NBGRADER_CELL_TIMEOUT (the harness sets it), else c.Autograder.cell_timeout
# above, else the default; cells tagged "training" likewise (autograder/nbgrader_plugins.py).
from autograder.nbgrader_plugins import (  # noqa: E402
    DEFAULT_CELL_TIMEOUT,
    DeduplicateGradeIds,
    HideHiddenTests,
    PinParameters,
    RefuseLinkedFiles,
    cell_timeout,
)

c.Execute.timeout = int(os.environ.get("NBGRADER_CELL_TIMEOUT") or c.Autograder.get("cell_timeout") or DEFAULT_CELL_TIMEOUT)

# Restore cells that students deleted, from the gradebook.
c.OverwriteCells.add_missing_cells = True

# Grading-time settings shared by `nbgrader autograde` and `autograder grade`
# (autograder/nbgrader_plugins.py): the grader's pinned parameters are written into the
# locked parameters cell after OverwriteCells restored it, and cells tagged "training"
# get their own timeout (NBGRADER_TRAINING_TIMEOUT) instead of NBGRADER_CELL_TIMEOUT.
from nbgrader.preprocessors import (  # noqa: E402
    CheckCellMetadata,
    ClearOutput,
    OverwriteCells,
    OverwriteKernelspec,
)

c.Autograde.sanitize_preprocessors = [
    RefuseLinkedFiles, ClearOutput, DeduplicateGradeIds, OverwriteKernelspec, OverwriteCells, PinParameters,
    CheckCellMetadata,
]
c.Execute.timeout_func = functools.partial(cell_timeout, cell_default=c.Autograder.get("cell_timeout"),
                                           training_default=c.Autograder.get("training_timeout"))

# Student kernels run sandboxed (autograder/sandbox.py): bubblewrap without network, a
# read-only system, only a private folder writable, an allow-listed environment,
# memory/process/file limits, outputs capped. AUTOGRADER_SANDBOX=off turns it off
# (trusted notebooks only). Every guarded point is decided out of the kernel and kept only
# if that check positively succeeded (autograder/checks.py): the probes' results checked as
# plain data (autograder/verdicts.py) and the final assignment's exported model scored in a
# fresh sandboxed process (its grading.py, through autograder/trusted.py).
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import AssignLatePenalties, IgnorePattern, LimitOutput  # noqa: E402

from autograder.checks import CheckOutOfKernel, SaveVerifiedGrades, kernel_files  # noqa: E402
from autograder.sandbox import SandboxedExecute  # noqa: E402

c.Autograde.autograde_preprocessors = [
    SandboxedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, CheckOutOfKernel, SaveVerifiedGrades,
    AssignLatePenalties, CheckCellMetadata,
]
c.OutOfKernelChecks.course_root = ROOT
c.SandboxedExecute.kernel_files = functools.partial(kernel_files, course_root=ROOT)

# Feedback for students without the source of hidden tests, nor tracebacks quoting it, nor
# any output that reproduces it (whatever cell printed it).
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

c.GenerateFeedback.preprocessors = [HideHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]

# How long the out-of-kernel checks of one submission may take before they fail closed.
if os.environ.get("AUTOGRADER_CHECK_TIMEOUT"):
    c.OutOfKernelChecks.timeout = float(os.environ["AUTOGRADER_CHECK_TIMEOUT"])

# Formulas as MathML at export (autograder/mathml.py): nbconvert's templates load MathJax from a
# CDN, so on an offline server feedback and formgrader pages would show raw $...$. Every HTML
# export reads this: generate_feedback's and formgrader's.
from autograder.mathml import RenderMathAsMathML  # noqa: E402

c.HTMLExporter.preprocessors = [RenderMathAsMathML]

# The exchange that release_assignment / fetch_assignment / submit / collect go through (the
# Assignments tab and formgrader's Release and Collect buttons). A course-local folder by
# default, which works for one user or one shared account; a multi-user JupyterHub needs one
# folder every student can reach, e.g. NBGRADER_EXCHANGE=/srv/nbgrader/exchange created with
# mode 0777 by an administrator, and the same root and course_id in the students' nbgrader
# config (README, "A course on a shared server").
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", os.path.join(ROOT, "exchange"))
if "NBGRADER_EXCHANGE" not in os.environ and not os.path.isdir(c.Exchange.root):
    try:  # nbgrader lists the exchange when formgrader starts: a missing one disables release/collect
        os.mkdir(c.Exchange.root)
        # everyone writes (release_assignment would chmod it 0777 too); sticky, as /tmp: no one
        # removes or renames another's entries
        os.chmod(c.Exchange.root, 0o1777)
    except OSError:
        pass  # a read-only checkout: formgrader says the exchange is missing
