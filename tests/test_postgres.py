"""A PostgreSQL gradebook, on a real server (tests/postgres.py): its schema is made once when
several processes open an empty database at the same moment, and plain nbgrader (generate,
autograde, export) works on it with the password in PGPASSFILE only. The harness grading into
PostgreSQL, compared with SQLite, is tests/test_cluster.py's batch."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

from autograder.course import ROOT, SMALL_PARAMETERS
from autograder.examples import completed
from autograder.nbgrader_runner import nbgrader_env, run_nbgrader

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DICE, NAME = "03_dice_iou", "dice_iou.ipynb"
OPEN = """import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
from autograder import gradebook
gradebook.ensure_schema(sys.argv[1])
"""


def test_several_processes_opening_an_empty_database_at_once_make_its_schema_once(postgres, tmp_path):
    url = postgres.create_database("race")
    go = tmp_path / "go"
    # each process imports the harness first, then all wait for the same signal to open the database
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, url, str(go)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    time.sleep(3)
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    with postgres.connect("race") as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM course").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM pg_type WHERE typtype = 'e'").fetchone()[0] >= 1  # its enums


@pytest.mark.slow
def test_plain_nbgrader_autogrades_and_exports_with_a_postgres_gradebook(postgres, tmp_path):
    url = postgres.create_database("plain")
    assert postgres.password not in url  # libpq reads it from PGPASSFILE
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / DICE, course / "solutions" / DICE)
    env = nbgrader_env(course, {"NBGRADER_DB_URL": url, "AUTOGRADER_PARAMETERS": json.dumps(SMALL_PARAMETERS[DICE])})
    assert env["PGPASSFILE"] == str(postgres.passfile)
    logs = [run_nbgrader(course, "generate_assignment", DICE, "--force", env=env, timeout=600)]
    (course / "submitted" / "ada" / DICE).mkdir(parents=True)
    nbformat.write(completed(DICE), course / "submitted" / "ada" / DICE / NAME)
    logs.append(run_nbgrader(course, "autograde", DICE, "--force", env=env, timeout=900))
    logs.append(run_nbgrader(course, "export", f"--to={tmp_path / 'grades.csv'}", env=env, timeout=600))
    with open(tmp_path / "grades.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["student_id"] == "ada" and float(row["raw_score"]) >= 16.0  # every autograded point of 03
    for log in logs:
        assert postgres.password not in log.stdout + log.stderr
    with postgres.connect("plain") as conn:  # the grades are in the server, not in a file beside the course
        assert conn.execute("SELECT count(*) FROM submitted_assignment").fetchone()[0] == 1
    assert not (course / "gradebook.db").exists()
    assert "PGPASSWORD" not in os.environ


def test_a_second_run_into_the_same_postgres_gradebook_from_another_host_is_refused(postgres, tmp_path, monkeypatch):
    from autograder.locks import RunLocked, exclusive_run

    url = postgres.create_database("locked")
    with exclusive_run(tmp_path / "out-a", url):
        # another host: its own folders and its own ~/.cache, so only the server can tell
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-host-cache"))
        with pytest.raises(RunLocked, match="PostgreSQL server"):
            with exclusive_run(tmp_path / "out-b", url):
                pass
    with exclusive_run(tmp_path / "out-b", url):  # released when the first run ended
        pass
