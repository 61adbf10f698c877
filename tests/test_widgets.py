"""Widgets are live under a Jupyter frontend and a static figure everywhere else."""

import ipywidgets
import matplotlib.pyplot as plt
import pytest

from course_lib.widgets import has_widget_frontend, interact_or_static


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, False),  # papermill / nbconvert / plain python
        ({"JPY_SESSION_NAME": "/home/s/03_dice_iou.ipynb"}, True),  # a kernel started by jupyter_server
        ({"JPY_SESSION_NAME": "x.ipynb", "NBGRADER_EXECUTION": "autograde"}, False),
        ({"JPY_SESSION_NAME": "x.ipynb", "COURSE_LIB_WIDGETS": "0"}, False),
        ({"COURSE_LIB_WIDGETS": "1"}, True),
    ],
)
def test_frontend_detection(monkeypatch, env, expected):
    for name in ("JPY_SESSION_NAME", "VSCODE_PID", "NBGRADER_EXECUTION", "COURSE_LIB_WIDGETS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert has_widget_frontend() is expected


def test_without_a_frontend_the_function_runs_once_at_the_controls_values(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_LIB_WIDGETS", "0")
    calls = []

    def draw(level, scale):
        calls.append((level, scale))
        fig, ax = plt.subplots()
        ax.plot([0, level])
        return fig

    before = plt.get_fignums()
    assert interact_or_static(draw, level=ipywidgets.IntSlider(value=2, min=0, max=4), scale=0.5) is None  # no Out[]
    assert calls == [(2, 0.5)]
    assert plt.get_fignums() == before  # the figure was shown, then closed
    assert "Figure" in capsys.readouterr().out


def test_with_a_frontend_the_controls_are_live_widgets(monkeypatch):
    monkeypatch.setenv("COURSE_LIB_WIDGETS", "1")
    calls = []
    slider = ipywidgets.IntSlider(value=1, min=0, max=3)
    assert interact_or_static(lambda level: calls.append(level), level=slider) is None  # not the function's repr
    assert calls == [1]  # interact draws once at the start...
    slider.value = 3
    assert calls == [1, 3]  # ...and again whenever the control moves


def test_progress_bars_are_text_without_a_frontend_and_widgets_with_one(monkeypatch):
    """A widget bar left by papermill or nbgrader shows as '0%' or a script error in the HTML
    feedback: fit and compare_pyramid_designs draw text bars there."""
    import tqdm.auto
    import tqdm.std

    from course_lib.widgets import progress_bar

    class WidgetBar(tqdm.std.tqdm):
        pass

    monkeypatch.setattr(tqdm.auto, "tqdm", WidgetBar)  # what tqdm.auto picks in a notebook kernel
    monkeypatch.setenv("COURSE_LIB_WIDGETS", "0")
    assert type(progress_bar(range(3), disable=True)) is tqdm.std.tqdm
    monkeypatch.setenv("COURSE_LIB_WIDGETS", "1")
    assert type(progress_bar(range(3), disable=True)) is WidgetBar


def test_a_text_bar_redraws_a_few_times_not_at_every_step(monkeypatch):
    """Each redraw of a text bar is one more output in a saved notebook."""
    import io
    import time

    from course_lib.widgets import progress_bar

    monkeypatch.setenv("COURSE_LIB_WIDGETS", "0")
    written = io.StringIO()
    for _ in progress_bar(range(80), file=written):  # 0.8 s: tqdm's default redraws about 8 times
        time.sleep(0.01)
    assert 1 <= written.getvalue().count("\r") <= 3  # the first draw and the last
    assert "80/80" in written.getvalue()
