"""``autograder execute``: run notebooks with papermill, as CI does.

The device is chosen automatically (the notebooks' ``device="auto"``); figures are
static (no widget frontend under papermill). A failing cell raises
:class:`NotebookFailed`, whose message names the notebook, the cell and the error.
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import papermill
from papermill.exceptions import PapermillExecutionError


class NotebookFailed(RuntimeError):
    pass


def parse_value(text: str) -> object:
    """A parameter value as a Python literal (``2``, ``3e-3``, ``'small'``, ``None``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def execute_notebook(notebook: Path, out_dir: Path, parameters: dict[str, object] | None = None,
                     timeout: float | None = None, progress: bool = False) -> tuple[Path, float]:
    """Execute ``notebook`` (working directory: its folder) into ``out_dir/<name>``.

    Returns the output path and the seconds it took.
    """
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: no such notebook")
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir.resolve() / notebook.name
    if output == notebook:
        raise ValueError(f"{output} would overwrite the notebook itself; choose another --out")
    os.environ.setdefault("COURSE_LIB_WIDGETS", "0")  # the kernel inherits it: static figures
    started = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {},
                                   cwd=str(notebook.parent), kernel_name="python3", progress_bar=progress,
                                   execution_timeout=timeout)
    except PapermillExecutionError as err:
        raise NotebookFailed(f"{notebook.name}: cell {err.cell_index} (execution count {err.exec_count}) raised "
                             f"{err.ename}: {err.evalue}; the executed notebook is {output}") from None
    return output, time.perf_counter() - started
