"""Interactive controls that degrade to a static figure where no frontend shows widgets.

Under JupyterLab, Jupyter Notebook 7 or VS Code the controls are live ipywidgets; under
papermill, nbconvert, nbgrader and CI nothing would render them, so the function runs
once with the controls' current values and its figure is shown as a plain output.
``COURSE_LIB_WIDGETS=1`` or ``=0`` forces either behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def has_widget_frontend() -> bool:
    """Whether a frontend that renders ipywidgets is attached to this kernel."""
    forced = os.environ.get("COURSE_LIB_WIDGETS")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes", "on")
    if os.environ.get("NBGRADER_EXECUTION"):
        return False
    # jupyter_server names the session of every kernel it starts; nbclient/papermill do not.
    return bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID"))


def interact_or_static(fn: Callable[..., Any], **controls: Any) -> None:
    """``ipywidgets.interact(fn, **controls)`` with a frontend; else ``fn`` at the controls' values.

    ``controls`` are ipywidgets widgets (e.g. ``IntSlider(value=1, min=0, max=4)``): their
    ``value`` is what the static call uses. Figures returned by ``fn`` are displayed. Returns
    None, so that a cell ending in this call shows the figure and not ``Out: <function ...>``.
    """
    if has_widget_frontend():
        import ipywidgets

        ipywidgets.interact(_showing(fn), **controls)  # displays the controls and their output itself
        return
    values = {name: getattr(control, "value", control) for name, control in controls.items()}
    result = _showing(fn)(**values)
    if result is not None:  # as interact shows it in its output area
        from IPython.display import display

        display(result)


def _showing(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` so that a matplotlib figure it returns is displayed and closed."""
    import functools

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        result = fn(**kwargs)
        from matplotlib.figure import Figure

        if isinstance(result, Figure):
            import matplotlib.pyplot as plt
            from IPython.display import display

            display(result)
            plt.close(result)
            return None
        return result

    return wrapper


def progress_bar(*args: Any, **kwargs: Any):
    """A tqdm bar: the widget bar where a frontend renders widgets, else the text bar (a widget
    bar saved by papermill or nbgrader shows as '0%', an empty block, or a script error in
    nbconvert's HTML). Takes what ``tqdm.tqdm`` takes. The text bar redraws every
    ``TEXT_BAR_SECONDS`` at most: each redraw is an output a saved notebook keeps (a bar redrawn
    at every step of a 256-step fit made a graded notebook of a thousand outputs)."""
    if has_widget_frontend():
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", TEXT_BAR_SECONDS)
    return tqdm(*args, **kwargs)


TEXT_BAR_SECONDS = 2.0
