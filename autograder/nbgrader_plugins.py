"""Pieces the course's ``nbgrader_config.py`` plugs into nbgrader's autograde pipeline.

They act the same whether an instructor runs ``nbgrader autograde`` in the course root or
``autograder grade`` runs it for a batch; both read their settings from the environment:

``AUTOGRADER_PARAMETERS``   JSON object of parameters pinned into the locked
                            ``parameters`` cell, e.g. ``{"epochs": 2}``
``NBGRADER_CELL_TIMEOUT``   seconds a cell may run (default 600)
``NBGRADER_TRAINING_TIMEOUT`` seconds a cell tagged ``training`` may run (default 3600)
"""

from __future__ import annotations

import json
import os

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Dict

from autograder.course import pin_parameters

PARAMETERS_ENV = "AUTOGRADER_PARAMETERS"
CELL_TIMEOUT_ENV = "NBGRADER_CELL_TIMEOUT"
TRAINING_TIMEOUT_ENV = "NBGRADER_TRAINING_TIMEOUT"
DEFAULT_CELL_TIMEOUT = 600
DEFAULT_TRAINING_TIMEOUT = 3600
TRAINING_TAG = "training"


def _env_seconds(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(float(value)) if value else default
    except ValueError as err:
        raise ValueError(f"{name}={value!r} is not a number of seconds") from err


def cell_timeout(cell) -> int:
    """Seconds nbgrader waits for ``cell`` (``Execute.timeout_func``): training cells,
    tagged ``training``, get a budget of their own; every other cell the default."""
    if TRAINING_TAG in cell.get("metadata", {}).get("tags", []):
        return _env_seconds(TRAINING_TIMEOUT_ENV, DEFAULT_TRAINING_TIMEOUT)
    return _env_seconds(CELL_TIMEOUT_ENV, DEFAULT_CELL_TIMEOUT)


def pinned_parameters() -> dict[str, object]:
    """The parameters the grader pinned through ``AUTOGRADER_PARAMETERS`` (may be empty)."""
    text = os.environ.get(PARAMETERS_ENV, "").strip()
    if not text:
        return {}
    values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{PARAMETERS_ENV} must be a JSON object, got {text!r}")
    return values


class PinParameters(NbGraderPreprocessor):
    """Write the grader's parameter values into the locked ``parameters`` cell.

    It runs after ``OverwriteCells``, which restores locked cells from the gradebook,
    so the values the instructor pins (say, the training budget) are the ones that run,
    whatever the student wrote there.
    """

    parameters = Dict(help="name -> value; default: the JSON in $AUTOGRADER_PARAMETERS").tag(config=True)

    def preprocess(self, nb, resources):
        values = dict(self.parameters) or pinned_parameters()
        if values:
            pin_parameters(nb, values)
            self.log.info("Pinned parameters %s", values)
        return nb, resources


class HideHiddenTests(NbGraderPreprocessor):
    """For feedback: drop the hidden part of every test cell, and the tracebacks of test
    cells (a traceback quotes the failing line), keeping ``ename: evalue``.

    nbgrader's feedback otherwise shows the hidden tests to the students (its issues #917,
    #1363); the autograded notebooks the instructor sees keep them.
    """

    def preprocess(self, nb, resources):
        from nbgrader.preprocessors import ClearHiddenTests

        self._hidden = ClearHiddenTests(parent=self)  # its delimiters, as configured for the course
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, cell_index):
        from nbgrader.utils import is_grade

        if cell.cell_type != "code" or not is_grade(cell):
            return cell, resources
        if self._hidden._remove_hidden_test_region(cell):
            cell.source = cell.source.rstrip() + "\n# (hidden tests are not shown)"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


class DeduplicateGradeIds(NbGraderPreprocessor):
    """nbgrader's DeduplicateIds (keep the last cell of a grade id), but a duplicate loses
    its ``nbgrader`` metadata entirely: nbgrader's version leaves ``{}``, on which later
    steps fail with KeyError, so one student's duplicated id stopped their grading."""

    def preprocess(self, nb, resources):
        seen = set()
        for cell in reversed(nb.cells):
            meta = cell.get("metadata", {}).get("nbgrader")
            if not isinstance(meta, dict) or not (meta.get("grade") or meta.get("solution") or meta.get("locked")):
                continue
            grade_id = meta.get("grade_id")
            if grade_id in seen or grade_id is None:
                self.log.warning("Cell with id '%s' exists multiple times!", grade_id)
                del cell.metadata["nbgrader"]
            else:
                seen.add(grade_id)
        return nb, resources


def _submission_of(notebooks) -> tuple[str, str]:
    """(student, assignment) of the submission nbgrader is converting. Its hooks get the
    command line's ids, which are globs ('*') when grading everyone; the notebook paths,
    ``.../submitted/<student>/<assignment>/<name>.ipynb``, name the real ones."""
    from pathlib import Path

    path = Path(sorted(notebooks)[0])
    return path.parent.parent.name, path.parent.name


def pre_autograde_hook(assignment: str, student: str, notebooks, course_root: str) -> None:
    """Before a submission runs: the trusted probe inputs next to the notebook."""
    from pathlib import Path

    from autograder import verdicts

    student, assignment = _submission_of(notebooks)
    cache = verdicts.probe_cache(assignment, verdicts.cache_root(course_root))
    verdicts.write_inputs(cache, Path(course_root) / "autograded" / student / assignment)


def post_autograde_hook(assignment: str, student: str, notebooks, course_root: str, db_url: str) -> None:
    """After a submission ran: check the probes out of the kernel and score the final
    assignment's exported model in a fresh sandbox, overriding the kernel's verdicts."""
    from pathlib import Path

    from autograder import trusted, verdicts

    student, assignment = _submission_of(notebooks)
    folder = Path(course_root) / "autograded" / student / assignment
    notebook = Path(sorted(notebooks)[0]).stem
    cache = verdicts.probe_cache(assignment, verdicts.cache_root(course_root))
    verdicts.check_outputs(assignment, student, folder, db_url, notebook, cache)
    if assignment == trusted.ASSIGNMENT:
        trusted.score_final_assignment(student, folder, db_url)
