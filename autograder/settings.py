"""The harness's settings: one configuration, the course's ``nbgrader_config.py``.

Instructors already configure nbgrader there with traitlets; the harness reads the same file::

    c.Autograder.workers = 4
    c.Autograder.cell_timeout = 120

A command-line flag of ``autograder grade`` overrides the file; each default is written once,
below. Environment variables carry settings only to the processes that run nbgrader for one
submission (``NBGRADER_CELL_TIMEOUT``, ``NBGRADER_TRAINING_TIMEOUT``, see
:mod:`autograder.nbgrader_plugins`). ``autograder config`` prints the effective settings and
where each came from.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from traitlets import Float, Integer, Unicode
from traitlets.config import Config, Configurable  # noqa: F401 (Config: for callers)
from traitlets.config.loader import PyFileConfigLoader

from autograder import course


class Autograder(Configurable):
    """Settings of ``autograder grade`` (``c.Autograder.<name>`` in the course's nbgrader_config.py)."""

    workers = Integer(None, allow_none=True,
                      help="parallel notebooks (None: one per GPU, else one per 2 CPU cores)").tag(config=True)
    gpus = Unicode("auto", help="auto (all CUDA devices), none (CPU only) or indices/UUIDs like 0,1").tag(config=True)
    timeout = Float(3600.0, help="wall-clock seconds one notebook may take in all").tag(config=True)
    cell_timeout = Integer(600, help="seconds one cell may run").tag(config=True)
    training_timeout = Integer(3600, help="seconds one locked cell tagged 'training' may run").tag(config=True)
    cluster = Unicode(None, allow_none=True,
                      help="grade on a Dask cluster: tcp://HOST:PORT, scheduler-file:PATH or slurm "
                           "(c.SlurmWorkers); None: this machine's workers").tag(config=True)
    # the course's side of the harness, not a flag of `autograder grade`
    course_library = Unicode(
        None, allow_none=True,
        help="the course's Python package, which its notebooks import: sandboxed kernels see it read-only, "
             "its code is part of the probes' fingerprint, its `probes` module answers probes in the kernel"
    ).tag(config=True, flag=False)


NAMES = tuple(Autograder.class_trait_names(config=True))
FLAGS = tuple(name for name in NAMES if Autograder.class_traits()[name].metadata.get("flag", True))


def default(name: str):
    """The one written default of a setting."""
    return Autograder.class_traits()[name].default_value


def load_course_config(root: Path | None = None) -> Config:
    """The course's ``nbgrader_config.py`` as traitlets loads it (as nbgrader does), leaving this
    process's environment as it was."""
    root = root or course.course_root()
    path = root / course.CONFIG_FILE
    if not path.is_file():
        return Config()
    saved = dict(os.environ)  # the file sets variables for the nbgrader processes it configures, not for us
    try:
        return PyFileConfigLoader(course.CONFIG_FILE, path=str(root)).load_config()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def effective(overrides: dict[str, object] | None = None,
              config: Config | None = None) -> tuple[Autograder, dict[str, str]]:
    """The settings (defaults < the course's nbgrader_config.py < ``overrides``, the flags
    given on the command line; None means not given) and where each came from."""
    config = load_course_config() if config is None else config
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(NAMES))
    if unknown:
        raise KeyError(f"not settings of the harness: {', '.join(unknown)}")
    settings = Autograder(config=config)
    sources = {}
    for name in NAMES:
        if name in given:
            setattr(settings, name, given[name])
            sources[name] = "command line"
        elif name in config.get("Autograder", {}):
            sources[name] = f"{course.CONFIG_FILE} (c.Autograder.{name})"
        else:
            sources[name] = "default"
    return settings, sources


@functools.lru_cache(maxsize=4)
def _course_library(root: str) -> str | None:
    return effective(config=load_course_config(Path(root)))[0].course_library


def course_library() -> str | None:
    """The course's package (``c.Autograder.course_library``); None outside a course or where
    the course names none."""
    try:
        root = course.course_root()
    except course.CourseNotFound:
        return None
    return _course_library(str(root))


def course_library_folder() -> Path | None:
    """Where the course's package lives (found, not imported: it may import torch)."""
    name = course_library()
    spec = importlib.util.find_spec(name) if name else None
    return Path(spec.origin).resolve().parent if spec is not None and spec.origin else None


def describe(overrides: dict[str, object] | None = None) -> list[dict[str, str]]:
    """Rows of ``autograder config``: every setting, its value, where it came from, what it does."""
    config = load_course_config()
    settings, sources = effective(overrides, config)
    rows = [{"name": "course root", "value": str(course.course_root()), "source": course.course_root_source(),
             "help": "the folder holding nbgrader_config.py and solutions/"}]
    for name in NAMES:
        trait = Autograder.class_traits()[name]
        rows.append({"name": f"Autograder.{name}", "value": repr(getattr(settings, name)), "source": sources[name],
                     "help": trait.help})
    from autograder import gradebook

    db_source = ("$NBGRADER_DB_URL" if os.environ.get("NBGRADER_DB_URL") else
                 f"{course.CONFIG_FILE} (c.CourseDirectory.db_url)")
    rows.append({"name": "CourseDirectory.db_url", "value": gradebook.mask_url(gradebook.course_db_url()),
                 "source": db_source, "help": "the course's gradebook (a --out elsewhere gets its own)"})
    from autograder.checks import OutOfKernelChecks

    check = config.get("OutOfKernelChecks", {}).get("timeout")
    trait = OutOfKernelChecks.class_traits()["timeout"]
    rows.append({"name": "OutOfKernelChecks.timeout", "value": repr(check if check is not None else trait.default_value),
                 "source": f"{course.CONFIG_FILE} (c.OutOfKernelChecks.timeout)" if check is not None else "default",
                 "help": trait.help})
    return rows
