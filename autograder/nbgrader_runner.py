"""Run nbgrader's command-line apps the way an instructor would, from a course root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class NbgraderError(RuntimeError):
    """An nbgrader command exited with an error; the message holds the end of its log."""


def nbgrader_env(course_root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for nbgrader: this Python's scripts first on PATH (nbgrader runs
    ``alembic`` from PATH when it creates a gradebook) and headless widgets."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, COURSE_LIB_WIDGETS="0")
    env.update(extra or {})
    return env


def run_nbgrader(course_root: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float | None = None) -> subprocess.CompletedProcess:
    """``nbgrader ARGS...`` in ``course_root``; raises :class:`NbgraderError` on failure."""
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course_root, capture_output=True, text=True,
        env=env or nbgrader_env(course_root), timeout=timeout,
    )
    if result.returncode != 0:
        log = (result.stdout + result.stderr)[-4000:]
        raise NbgraderError(f"nbgrader {' '.join(args)} failed (exit {result.returncode}):\n{log}")
    return result
