"""Pieces the course's ``nbgrader_config.py`` plugs into nbgrader's autograde pipeline.

They act the same whether an instructor runs ``nbgrader autograde`` in the course root or
``autograder grade`` runs it for a batch; both read their settings from the environment:

``AUTOGRADER_PARAMETERS``   JSON object of parameters pinned into the locked
                            ``parameters`` cell, e.g. ``{"epochs": 2}``
``NBGRADER_CELL_TIMEOUT``   seconds a cell may run (else ``c.Autograder.cell_timeout`` of the course config, 600)
``NBGRADER_TRAINING_TIMEOUT`` seconds a cell tagged ``training`` may run (else ``c.Autograder.training_timeout``, 3600)
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
import unicodedata

from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Dict, Integer

from autograder import settings
from autograder.course import pin_parameters

PARAMETERS_ENV = "AUTOGRADER_PARAMETERS"
CELL_TIMEOUT_ENV = "NBGRADER_CELL_TIMEOUT"
TRAINING_TIMEOUT_ENV = "NBGRADER_TRAINING_TIMEOUT"
DEFAULT_CELL_TIMEOUT = settings.default("cell_timeout")  # written once, in autograder/settings.py
DEFAULT_TRAINING_TIMEOUT = settings.default("training_timeout")
TRAINING_TAG = "training"


def _env_seconds(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(float(value)) if value else default
    except ValueError as err:
        raise ValueError(f"{name}={value!r} is not a number of seconds") from err


def cell_timeout(cell, cell_default: int | None = None, training_default: int | None = None) -> int:
    """Seconds nbgrader waits for ``cell`` (``Execute.timeout_func``): training cells,
    tagged ``training``, get a budget of their own; every other cell the default. Only a
    locked cell of the assignment counts (nbgrader restored its source; a tag alone is the
    student's metadata and buys no time). The environment (set by ``autograder grade``) wins,
    then the course config's ``c.Autograder`` values (``*_default``, for plain ``nbgrader
    autograde``), then the defaults of :mod:`autograder.settings`."""
    meta = cell.get("metadata", {})
    locked = meta.get("nbgrader", {}).get("locked") and meta.get("nbgrader", {}).get("grade_id")
    if locked and TRAINING_TAG in meta.get("tags", []):
        return _env_seconds(TRAINING_TIMEOUT_ENV, training_default or DEFAULT_TRAINING_TIMEOUT)
    return _env_seconds(CELL_TIMEOUT_ENV, cell_default or DEFAULT_CELL_TIMEOUT)


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
            pin_parameters(nb, values, graded=True)
            self.log.info("Pinned parameters %s", values)
        return nb, resources


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SPACE = re.compile(r"\s+")
HIDDEN_OUTPUT = "[autograder] this output is not shown: it reproduces hidden test code\n"


TAG = re.compile(r"<[^<>]*>")


def _squeeze(text: str) -> str:
    """Text as compared with hidden tests: no colour codes, HTML tags or escapes, invisible
    (format) characters or whitespace."""
    text = html.unescape(TAG.sub("", ANSI.sub("", text)))
    return "".join(ch for ch in SPACE.sub("", text) if unicodedata.category(ch) != "Cf")


def _output_text(output) -> str:
    parts = [output.get("text", ""), output.get("ename", ""), output.get("evalue", ""), *output.get("traceback", [])]
    for value in (output.get("data") or {}).values():
        parts.append(value if isinstance(value, str) else json.dumps(value) if not isinstance(value, bytes) else "")
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


class HideHiddenTests(NbGraderPreprocessor):
    """For feedback: drop the hidden part of every test cell, the tracebacks of test cells
    (a traceback quotes the failing line), keeping ``ename: evalue``, and every output of
    any cell that reproduces a line of hidden test code (a notebook can read the cells it
    runs, or echo them, and print them; lines are compared without whitespace, colour
    codes, HTML tags and escapes or invisible characters, over each output and over all
    outputs of a cell together, and only those of at least ``min_line`` characters that
    appear nowhere else in the notebook).

    nbgrader's feedback otherwise shows the hidden tests to the students (its issues #917,
    #1363); the autograded notebooks the instructor sees keep them. What this cannot catch
    is a reproduction the student encoded (base64, an image of the code): the hidden tests
    therefore hold no secret of the grader (:mod:`autograder.course_secrets`).
    """

    min_line = Integer(12, help="shortest hidden-test line (without whitespace) whose reproduction is hidden").tag(config=True)

    def preprocess(self, nb, resources):
        from nbgrader.preprocessors import ClearHiddenTests

        self._hidden = ClearHiddenTests(parent=self)  # its delimiters, as configured for the course
        self._lines = self._hidden_lines(nb)
        return super().preprocess(nb, resources)

    def _hidden_lines(self, nb) -> set[str]:
        begin, end = self._hidden.begin_test_delimeter, self._hidden.end_test_delimeter
        hidden, visible = set(), set()
        for cell in nb.cells:
            inside = False
            for line in cell.source.splitlines():
                if begin in line:
                    inside = True
                elif end in line:
                    inside = False
                else:
                    (hidden if inside else visible).add(_squeeze(line))
        return {line for line in hidden - visible if len(line) >= self.min_line}

    def preprocess_cell(self, cell, resources, cell_index):
        from nbgrader.utils import is_grade

        if cell.cell_type != "code":
            return cell, resources
        texts = [_squeeze(_output_text(output)) for output in cell.get("outputs", [])]
        leaks = [any(line in text for line in self._lines) for text in texts]
        if not any(leaks) and any(line in "".join(texts) for line in self._lines):
            leaks = [True] * len(texts)  # a line split over several outputs (stdout and stderr, say)
        for i, leak in enumerate(leaks):
            if leak:
                cell.outputs[i] = NotebookNode(output_type="stream", name="stdout", text=HIDDEN_OUTPUT)
        if not is_grade(cell):
            return cell, resources
        if self._hidden._remove_hidden_test_region(cell):
            cell.source = cell.source.rstrip() + "\n# (hidden tests are not shown)"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


class RefuseLinkedFiles(NbGraderPreprocessor):
    """First sanitizing step: a submission folder holding symbolic links (or FIFOs, sockets,
    devices) is not graded. nbgrader copies a submission's files by following links, so a
    link to the course's secrets or another student's work would reach the kernel; raising
    here makes nbgrader drop the submission's autograded folder before any kernel starts
    (``autograder grade`` refuses such submissions already when it stages them)."""

    def preprocess(self, nb, resources):
        folder = resources.get("metadata", {}).get("path") or "."
        for top, dirs, files in os.walk(folder):
            for name in dirs + files:
                mode = os.lstat(os.path.join(top, name)).st_mode
                if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise ValueError(f"{os.path.join(top, name)} is not a regular file or folder: the submission "
                                     "is not graded (links are followed when nbgrader copies files)")
        return nb, resources


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
