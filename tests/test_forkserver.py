"""The fork server that starts grading workers: each child gets its own directory,
environment and log, reports its exit status, and dies with the server."""

from __future__ import annotations

import signal
import time
from concurrent.futures import TimeoutError as WaitTimeout

import psutil
import pytest

from autograder.forkserver import ForkServer, ServerDied

# nbgrader runs the course config in its working directory: a config with side effects
# shows where and with what environment the worker ran, or keeps it busy.
PROBE_CONFIG = """
import os, pathlib, time
pathlib.Path("seen.txt").write_text(os.getcwd() + "\\n" + os.environ.get("FORK_PROBE", "unset"))
time.sleep(float(os.environ.get("FORK_SLEEP", "0")))
"""


@pytest.fixture
def server(tmp_path):
    launcher = ForkServer(cwd=tmp_path).start()
    yield launcher
    launcher.close()


def _course(folder):
    folder.mkdir()
    (folder / "nbgrader_config.py").write_text(PROBE_CONFIG)
    return folder


def test_each_worker_runs_in_its_directory_with_its_environment_and_log(server, tmp_path):
    workers = []
    for name in ("a", "b"):
        course = _course(tmp_path / name)
        env = {"FORK_PROBE": f"value-{name}", "PATH": "/usr/bin:/bin"}
        workers.append((course, server.run(["no_such_assignment", "nobody"], course, env, course / "log.txt")))
    for course, worker in workers:
        assert worker.wait(timeout=120) != 0  # nbgrader autograde of an assignment that is not there
        seen_dir, seen_value = (course / "seen.txt").read_text().splitlines()
        assert seen_dir == str(course) and seen_value == f"value-{course.name}"
        assert "no_such_assignment" in (course / "log.txt").read_text()


def test_a_dead_server_fails_its_workers_which_die_with_it_and_a_new_one_starts(server, tmp_path):
    course = _course(tmp_path / "slow")
    busy = server.run(["a", "b"], course, {"FORK_SLEEP": "60"}, course / "log.txt")
    with pytest.raises(WaitTimeout):
        busy.wait(timeout=1)
    child = psutil.Process(busy.pid)
    ignored = int(next(line for line in open(f"/proc/{busy.pid}/status") if line.startswith("SigIgn:")).split()[1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1))  # kernels it starts can be interrupted at a cell timeout
    server._proc.kill()
    with pytest.raises(ServerDied):
        busy.wait(timeout=30)
    deadline = time.time() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.1)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    again = _course(tmp_path / "again")
    assert server.run(["x", "y"], again, {"FORK_PROBE": "after"}, again / "log.txt").wait(timeout=120) != 0
    assert (again / "seen.txt").read_text().endswith("after")


def test_an_nbgrader_app_runs_forked_and_its_failure_quotes_its_log(server, tmp_path):
    """What the batch runs besides the workers (``generate_assignment``, ``export``):
    forked from the same server, an error raised with the end of the app's log."""
    from autograder import gradebook
    from autograder.nbgrader_runner import NbgraderError, nbgrader_env, run_nbgrader

    course = gradebook.make_course_copy(tmp_path / "course")
    env = nbgrader_env(course, {"NBGRADER_DB_URL": gradebook.sqlite_url(tmp_path / "gradebook.db")})
    run_nbgrader(course, "export", f"--to={tmp_path / 'grades.csv'}", env=env, timeout=120, launcher=server)
    assert (tmp_path / "grades.csv").read_text().startswith("assignment,")  # nbgrader's header, no rows
    with pytest.raises(NbgraderError, match="generate_assignment 99_missing failed") as failed:
        run_nbgrader(course, "generate_assignment", "99_missing", env=env, timeout=120, launcher=server)
    assert "99_missing" in str(failed.value).split("failed", 1)[1]  # the log's end, which names it
