"""One configuration: the harness's settings in the course's nbgrader_config.py (traitlets),
command-line flags over them, each default written once, ``autograder config`` saying where
each value came from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import course, grading, nbgrader_plugins, settings

ROOT = Path(__file__).resolve().parents[1]


def test_each_default_is_written_once_and_read_from_there():
    assert nbgrader_plugins.DEFAULT_CELL_TIMEOUT == settings.default("cell_timeout")
    assert nbgrader_plugins.DEFAULT_TRAINING_TIMEOUT == settings.default("training_timeout")
    assert grading.GradingOptions.__dataclass_fields__["timeout"].default == settings.default("timeout")
    values, sources = settings.effective({}, config=settings.Config())
    assert {name: getattr(values, name) for name in settings.NAMES} == {n: settings.default(n) for n in settings.NAMES}
    assert set(sources.values()) == {"default"}
    with pytest.raises(KeyError, match="workerz"):
        settings.effective({"workerz": 2}, config=settings.Config())


@pytest.fixture(scope="module")
def configured_course(tmp_path_factory) -> Path:
    """A copy of the course whose nbgrader_config.py sets two of the harness's settings."""
    root = tmp_path_factory.mktemp("configured") / "course"
    shutil.copytree(ROOT / "solutions", root / "solutions")
    text = (ROOT / "nbgrader_config.py").read_text()
    (root / "nbgrader_config.py").write_text(text + "\nc.Autograder.cell_timeout = 45\nc.Autograder.workers = 3\n")
    return root


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != course.COURSE_DIR_ENV}
    return subprocess.run([sys.executable, "-m", "autograder.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def test_autograder_config_shows_each_value_and_where_it_came_from(configured_course):
    done = _cli(configured_course, "config", "--json", "--training-timeout", "99")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert Path(rows["course root"]["value"]) == configured_course.resolve()
    assert rows["course root"]["source"] == "found from the current folder"
    assert (rows["Autograder.cell_timeout"]["value"], rows["Autograder.cell_timeout"]["source"]) == (
        "45", "nbgrader_config.py (c.Autograder.cell_timeout)")
    assert (rows["Autograder.workers"]["value"], rows["Autograder.workers"]["source"]) == (
        "3", "nbgrader_config.py (c.Autograder.workers)")
    assert (rows["Autograder.training_timeout"]["value"], rows["Autograder.training_timeout"]["source"]) == (
        "99", "command line")
    assert (rows["Autograder.timeout"]["value"], rows["Autograder.timeout"]["source"]) == ("3600.0", "default")
    assert "gradebook.db" in rows["CourseDirectory.db_url"]["value"]


def test_grade_takes_the_course_config_and_flags_override_it(configured_course, tmp_path):
    """What `autograder grade` hands the grading pipeline (the pipeline itself is replaced by a
    recorder: the settings are what is tested here)."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import json, sys\nfrom autograder import cli, grading\n"
        "def record(opts):\n"
        "    print(json.dumps({'cell': opts.cell_timeout, 'training': opts.training_timeout, 'timeout': opts.timeout,"
        " 'workers': len(opts.slots)}))\n"
        "    raise SystemExit(0)\n"
        "grading.grade = record\n"
        "sys.exit(cli.main(sys.argv[1:]))\n")
    (tmp_path / "class").mkdir()
    env = {k: v for k, v in os.environ.items() if k != course.COURSE_DIR_ENV}
    seen = []
    for flags in ([], ["--cell-timeout", "7", "--workers", "1"]):
        done = subprocess.run([sys.executable, str(driver), "grade", "03_dice_iou", str(tmp_path / "class"),
                               "--out", str(tmp_path / "out"), "--gpus", "none", *flags],
                              cwd=configured_course, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        seen.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert seen[0] == {"cell": 45, "training": settings.default("training_timeout"),
                       "timeout": settings.default("timeout"), "workers": 3}
    assert seen[1]["cell"] == 7 and seen[1]["workers"] == 1


def test_the_course_names_its_library_and_the_harness_names_none():
    """The course's package is the course's to declare (c.Autograder.course_library): the
    harness's code neither imports it nor names it, outside its docstrings."""
    import ast
    import re

    library = re.compile(r"\bcourse_lib\b")
    assert settings.course_library() == "course_lib"
    assert settings.course_library_folder() == ROOT / "course_lib"
    assert "course_library" in settings.NAMES and "course_library" not in settings.FLAGS  # not a grading flag
    named = []
    for path in sorted((ROOT / "autograder").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            imported = [a.name for a in getattr(node, "names", [])] + [getattr(node, "module", None) or ""]
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if any(library.search(name) for name in imported) or (library.search(text) and id(node) not in docstrings):
                named.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert named == []


def test_reading_the_course_config_leaves_the_environment_as_it_was(monkeypatch):
    """The config sets $AUTOGRADER_COURSE_DIR for the nbgrader processes it configures; read by
    the harness, it must not send this process's later subprocesses to that course."""
    monkeypatch.delenv(course.COURSE_DIR_ENV, raising=False)
    before = dict(os.environ)
    config = settings.load_course_config(ROOT)
    assert config.Autograder.course_library == "course_lib"  # the file was read...
    assert dict(os.environ) == before  # ...and left nothing behind
