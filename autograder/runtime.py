"""Private folders for sandboxed kernels, removed on every path.

Each kernel gets folders of its own under one runtime root (``$AUTOGRADER_RUNTIME_DIR``,
else ``<tmp>/autograder-<uid>``): the folder it runs in and the folder of its ipc sockets.
Their names carry the owner's pid and start time, ``k-<pid>-<start>-<random>``, so that
:func:`reap_stale` can remove what a killed grader (even a SIGKILLed one) left behind, and
only that: a folder whose owner still runs is never touched, whatever became of its pid.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

RUNTIME_ENV = "AUTOGRADER_RUNTIME_DIR"
NAME = re.compile(r"^k-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]+$")


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``
    field 22), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after the command name, which may hold spaces


def owner_tag(pid: int | None = None) -> str:
    """``<pid>-<start time>`` of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{start_time(pid) or 0}"


def owner_alive(tag: str) -> bool:
    """Whether the process named by an :func:`owner_tag` still runs (pid reuse safe)."""
    pid, _, start = tag.partition("-")
    return start_time(int(pid)) == int(start)


def root() -> Path:
    return Path(os.environ.get(RUNTIME_ENV) or Path(tempfile.gettempdir()) / f"autograder-{os.getuid()}")


def _private_root() -> Path:
    """The runtime root, made if needed, and refused unless it is a real folder of this user
    that nobody else may enter (on a shared host, whoever owns it owns every kernel's folder)."""
    base = root()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{base} must be a folder of uid {os.getuid()} with mode 0700 (it holds every kernel's "
                              f"folders): remove it, or point ${RUNTIME_ENV} elsewhere")
    return base


def new_folder() -> Path:
    """A new private folder (mode 0700) owned by this process."""
    base = _private_root()
    folder = base / f"k-{owner_tag()}-{secrets.token_hex(6)}"
    folder.mkdir(mode=0o700)
    return folder


def remove(folder: Path | None) -> None:
    """Remove a private folder, whatever the kernel left in it: links are not followed, and
    folders it made unreadable (``chmod 000``) are opened up first."""
    if folder is None:
        return
    try:
        os.chmod(folder, 0o700)
        for top, dirs, _ in os.walk(folder):
            for name in dirs:  # before os.walk enters them
                path = os.path.join(top, name)
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    os.chmod(path, 0o700)
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def stale_folders() -> list[Path]:
    """The private folders whose owner is gone."""
    try:
        entries = list(root().iterdir())
    except OSError:
        return []
    return [entry for entry in entries
            if (match := NAME.match(entry.name)) and not owner_alive(f"{match['pid']}-{match['start']}")]


def reap_stale() -> list[Path]:
    """Remove the private folders whose owner is gone; returns them."""
    removed = stale_folders()
    for folder in removed:
        remove(folder)
    return removed
