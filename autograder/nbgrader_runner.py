"""Run nbgrader's command-line apps the way an instructor would, from a course root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path


class NbgraderError(RuntimeError):
    """An nbgrader command exited with an error; the message holds the end of its log."""


def scripts_first_path() -> str:
    """PATH with this Python's scripts first: nbgrader runs ``alembic`` from PATH when it
    creates a gradebook."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@contextlib.contextmanager
def alembic_on_path():
    """For nbgrader's API in this process (a ``Gradebook`` on a new database runs ``alembic``)."""
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = scripts_first_path()
    try:
        yield
    finally:
        os.environ["PATH"] = path


def nbgrader_env(course_root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for nbgrader: this Python's scripts first on PATH, headless widgets, and
    the course being graded (``course_root`` may be a private copy of its config)."""
    from autograder import course

    env = dict(os.environ, PATH=scripts_first_path(), COURSE_LIB_WIDGETS="0")
    env[course.COURSE_DIR_ENV] = str(course.course_root())
    env.update(extra or {})
    return env


def run_nbgrader(course_root: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float | None = None, launcher=None) -> subprocess.CompletedProcess | None:
    """``nbgrader ARGS...`` in ``course_root``; raises :class:`NbgraderError` on failure.
    With ``launcher`` (a :class:`autograder.forkserver.ForkServer`, whose server has imported
    nbgrader) the app runs in a process forked from it, about 2.5 s sooner than a new
    interpreter; its log is ``course_root/nbgrader-<app>.log`` and nothing is returned."""
    if launcher is not None:
        return _run_forked(launcher, course_root, args, env or nbgrader_env(course_root), timeout)
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course_root, capture_output=True, text=True,
        env=env or nbgrader_env(course_root), timeout=timeout,
    )
    if result.returncode != 0:
        log = (result.stdout + result.stderr)[-4000:]
        raise NbgraderError(f"nbgrader {' '.join(args)} failed (exit {result.returncode}):\n{log}")
    return result


def _run_forked(launcher, course_root: Path, args: tuple[str, ...], env: dict[str, str], timeout: float | None) -> None:
    from concurrent.futures import TimeoutError as WaitTimeout

    log = Path(course_root) / f"nbgrader-{args[0]}.log"
    worker = launcher.run(["--app", *args], Path(course_root), env, log)
    try:
        returncode = worker.wait(timeout=timeout)
    except WaitTimeout:
        worker.kill()
        raise NbgraderError(f"nbgrader {' '.join(args)} took over {timeout:g} s") from None
    if returncode != 0:
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise NbgraderError(f"nbgrader {' '.join(args)} failed (exit {returncode}):\n{tail}")
    return None
