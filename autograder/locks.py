"""One grading run at a time per output folder and per gradebook.

Two ``autograder grade`` runs into the same ``--out`` (or the same gradebook from two
folders) would interleave their journals, files and gradebook writes: the harness's
single-writer guarantee holds per run. :func:`exclusive_run` takes an exclusive
``flock`` on ``<out>/.autograder/run.lock`` and on a lock file of the gradebook (beside an
SQLite file; for a server URL, in ``~/.cache/autograder/locks``, which covers runs on this
host; on PostgreSQL also an advisory lock in the server, which covers every host). The kernel releases a flock when its holder dies, so a killed run never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path


class RunLocked(RuntimeError):
    """Another run holds the lock; the message says which and what to do."""


def gradebook_lock_path(db_url: str) -> Path:
    if db_url.startswith("sqlite:///"):  # one lock per file, however the URL spells it
        path = Path(db_url.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
        return path.with_name(path.name + ".autograder-lock")
    # never the URL itself in a file name: it may hold a password
    digest = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autograder" / "locks" / f"{digest}.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "another run"
    return f"another run (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


@contextlib.contextmanager
def _flock(path: Path, what: str, wait: bool, poll: float = 1.0) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise RunLocked(f"{_holder(path)} is grading into {what}; wait for it to end, "
                                    "or pass --wait to start once it has") from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


RUN_LOCK = int.from_bytes(b"autograd", "big") & (2**63 - 1)  # pg_advisory_lock's key of a grading run


@contextlib.contextmanager
def _server_lock(db_url: str, wait: bool, poll: float = 1.0) -> Iterator[None]:
    """On a PostgreSQL gradebook, a session advisory lock held for the run: it covers runs on
    other hosts, which the lock file under ``~/.cache`` cannot; the server releases it when the
    run's connection closes, also when the run is killed."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    if make_url(db_url).get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            while not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": RUN_LOCK}).scalar():
                if not wait:
                    raise RunLocked("another run is grading into the same gradebook (its PostgreSQL server holds "
                                    "the run's lock); wait for it to end, or pass --wait to start once it has")
                time.sleep(poll)
            conn.commit()
            yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def exclusive_run(out: Path, db_url: str, wait: bool = False) -> Iterator[None]:
    """Hold the locks of ``out`` and of the gradebook for the duration of a run; raises
    :class:`RunLocked` at once when another run holds one (or waits, with ``wait``)."""
    with _flock(Path(out) / ".autograder" / "run.lock", str(out), wait), \
            _flock(gradebook_lock_path(db_url), "the same gradebook", wait), _server_lock(db_url, wait):
        yield
