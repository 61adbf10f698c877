"""The grader's secrets, made once per course installation and kept out of git.

What a student must not know in advance (the final assignment's hidden-split seed, the
salt of the probes' inputs) is drawn here with :mod:`secrets` the first time it is needed
and kept in ``<course root>/.autograder/secrets.json`` (mode 0600; ``.autograder/`` is
ignored by git), or in ``$AUTOGRADER_SECRETS``. Only the grader's side reads it: no cell
that runs in a student's kernel holds any of it, so a public copy of the course reveals
nothing about how a given installation grades.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

SECRETS_ENV = "AUTOGRADER_SECRETS"
KEYS = ("hidden_seed", "probe_salt")


def secrets_path(course_root: str | Path) -> Path:
    return Path(os.environ.get(SECRETS_ENV) or Path(course_root) / ".autograder" / "secrets.json")


def _draw() -> dict[str, int]:
    return {"hidden_seed": secrets.randbits(62), "probe_salt": secrets.randbits(62)}


def load(course_root: str | Path) -> dict[str, int]:
    """The installation's secrets, drawn and saved on first use (atomically: parallel
    graders agree on one draw)."""
    path = secrets_path(course_root)
    try:
        values = json.loads(path.read_text())
        if all(isinstance(values.get(key), int) for key in KEYS):
            return values
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(_draw(), fh)
    try:
        os.link(scratch, path)  # fails if another grader saved its draw first: then use that one
    except FileExistsError:
        pass
    finally:
        scratch.unlink()
    values = json.loads(path.read_text())
    if not all(isinstance(values.get(key), int) for key in KEYS):
        raise ValueError(f"{path} is not a secrets file of this course (keys {', '.join(KEYS)}); remove it to draw new ones")
    return values


def fingerprint(course_root: str | Path) -> str:
    """A digest of the secrets (never the secrets): changes when they are drawn anew."""
    return hashlib.sha256(json.dumps(load(course_root), sort_keys=True).encode()).hexdigest()[:12]
