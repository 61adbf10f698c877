"""The course the way students and instructors use it: JupyterLab, widgets, nbgrader's
Validate button, formgrader and the exchange, in a real browser (Debian's Chromium driven by
Playwright) against a real ``jupyter lab`` serving a temporary copy of the course.

``make browser-test`` runs only these. One server and one browser for the module; the
notebooks run at the small setting. Screenshots go to build/browser/.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import course as course_declarations
from autograder.course import ASSIGNMENTS, ROOT, SMALL_PARAMETERS, solution_path, student_path
from autograder.examples import EXAMPLES
from tests.jupyterlab import (
    CHROMIUM_ARGS,
    JupyterLab,
    broken_images,
    chromium_path,
    menu_command,
    open_notebook,
    run_all_cells,
    save_notebook,
)
from tests.solution_runs import check_solution_run, echoed_values, stage_solution

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = ROOT / "build" / "browser"
RUN_ALL_TIMEOUT = 300  # seconds


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed and `make browser` could not install it (Debian's `chromium` "
                    "package; or set CHROMIUM=/path/to/chromium): the browser tests need a real browser")
    return path


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A temporary course root: the repository's tracked files (solutions, notebooks, the
    library, the harness, its examples and config), without the builds and the gradebook."""
    target = tmp_path_factory.mktemp("browser") / "course"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
    else:  # not a git checkout
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
            ".venv*", "build", ".git", "gradebook.db*", "submitted", "autograded", "feedback", "exchange",
            ".gpu-bundle", "__pycache__", ".pytest_cache"))
    return target


@pytest.fixture(scope="module")
def lab(course, tmp_path_factory):
    server = JupyterLab(course, tmp_path_factory.mktemp("lab-state")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _new_page(browser):
    """A fresh browser tab that reaches only the loopback server and local files; the
    requests it refused are in ``page.refused``, its console errors in ``page.console_errors``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.refused = []
    page.console_errors = []

    def route(r):
        url = r.request.url
        if url.startswith(("http://127.0.0.1", "file:", "data:", "blob:")):
            r.continue_()
        else:
            page.refused.append(url)
            r.abort()

    context.route("**/*", route)
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: page.console_errors.append(f"page error: {err}"))
    return page


@pytest.fixture
def page(browser, lab):
    page = _new_page(browser)
    yield page
    page.context.close()
    lab.shutdown_kernels()  # a notebook's kernel (04's holds a trained model) does not outlive its test


def _shot(page, name: str, **kwargs) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), **kwargs)
    return path


def _with_small_setting(source: Path, target: Path, assignment: str, quick: bool = False) -> Path:
    """``source`` with the small setting (``quick``: the quick one, for the mechanics only)
    injected after its parameters cell, as papermill does."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    declared = course_declarations.assignment(assignment)
    setting = declared.quick_setting if quick else SMALL_PARAMETERS[assignment]
    nb = parameterize_notebook(load_notebook_node(str(source)), setting)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def _autograder(course: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m autograder.cli`` with the temporary course as its root."""
    done = subprocess.run([sys.executable, "-m", "autograder.cli", *args], cwd=course, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"autograder {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _nbgrader(course: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


# --------------------------------------------------------------------------- the student
def _interact_cells(nb) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and "interact_or_static(" in cell.source
            and "import" not in cell.source.split("interact_or_static(")[0].splitlines()[-1]]


TRAINED_CELLS = ("train_fpn", "train_baseline", "loss_ablation")  # 04's cells that call fit (pets: only with the data)


def _cells_by_grade_id(nb, grade_ids) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if cell.metadata.get("nbgrader", {}).get("grade_id") in grade_ids]


def _errors(nb) -> list[str]:
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb.cells)
            if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def _unrun(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None
            and c.source.strip()]


def _move_control(page, output) -> str:
    """Move the first slider or dropdown of an interact one step; returns what was moved."""
    dropdown = output.locator(".widget-dropdown select")
    if dropdown.count():
        select = dropdown.first
        options = select.locator("option").all_inner_texts()
        current = select.input_value()
        other = next(o for o in options if o != current)
        select.select_option(other)
        return f"dropdown {current} -> {other}"
    handle = output.locator(".widget-slider .noUi-handle").first
    now, high = float(handle.get_attribute("aria-valuenow")), float(handle.get_attribute("aria-valuemax"))
    handle.focus()
    key = "ArrowRight" if now < high else "ArrowLeft"
    page.keyboard.press(key)
    return f"slider {now:g} {key}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_runs_all_cells_in_jupyterlab_with_live_widgets(assignment, course, lab, page):
    """The student's notebook completed (the assignment's source: the released notebook with its
    answers, plus the hidden tests and the probes the grader adds, so that the suite executes
    each notebook once), its quick setting injected as papermill injects it (the mechanics: 04
    trains for a few steps; its model is trained at the small setting once per suite, by the
    main job's grading in tests/test_harness.py), run with Run → Run All Cells: no error, every
    figure an image, every interact a live widget whose figure follows its control, fit's
    progress bars widgets at 100 %, and every check a papermill run gets (tests/solution_runs.py)
    but the trained model's score."""
    name = ASSIGNMENTS[assignment]
    relative = f"student/{assignment}/{name}"
    folder = course / "student" / assignment
    cache = stage_solution(assignment, folder)  # what nbgrader ships beside it, and the probes' inputs
    _with_small_setting(solution_path(assignment), course / relative, assignment, quick=True)
    open_notebook(page, lab, relative)
    seconds = run_all_cells(page, RUN_ALL_TIMEOUT)
    save_notebook(page)
    saved = nbformat.read(course / relative, as_version=4)
    if _unrun(saved) and not _errors(saved):
        # on a busy machine JupyterLab may start the first kernel twice and drop the one the first
        # cells went to: nothing failed, nothing ran; once more, as a student would press it again
        print(f"{assignment}: cells {_unrun(saved)} did not run and nothing failed: Run All Cells again")
        seconds += run_all_cells(page, RUN_ALL_TIMEOUT)
        save_notebook(page)
        saved = nbformat.read(course / relative, as_version=4)
    _shot(page, f"{assignment}-run-all")
    print(f"{assignment}: Run All Cells in {seconds:.0f} s")

    code = [c for c in saved.cells if c.cell_type == "code"]
    assert not _errors(saved), _errors(saved)
    assert not _unrun(saved), f"cells never ran: {_unrun(saved)}"
    assert len(code) > 5
    assert echoed_values(saved) == []

    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Notebook-cell")
    assert cells.count() == len(saved.cells)
    scope = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea"
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    shown = page.locator(f"{scope} img").count()
    assert pngs > 0 and shown >= pngs, f"{pngs} figures saved, {shown} images in the page"
    assert broken_images(page, scope) == []
    text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").inner_text()
    for failure in ("Error displaying widget", "Loading widget...", "Traceback"):
        assert failure not in text

    interacts = _interact_cells(saved)
    assert interacts, "each notebook has an interactive figure"
    for index in interacts:
        output = cells.nth(index).locator(".jp-Cell-outputArea")
        assert output.locator(".widget-interact").count() == 1, f"cell {index}: not a live ipywidgets interact"
        image = output.locator(".widget-interact img").first
        image.wait_for(timeout=30000)
        before = image.get_attribute("src")
        cells.nth(index).scroll_into_view_if_needed()
        moved = _move_control(page, output)
        page.wait_for_function(
            "([el, before]) => { const i = el.querySelector('img'); return i && i.getAttribute('src') !== before; }",
            arg=[output.element_handle(), before], timeout=60000)
        assert broken_images(page, scope) == [], moved
    cells.nth(interacts[0]).locator(".widget-interact img").first.scroll_into_view_if_needed()
    _shot(page, f"{assignment}-widget")

    bars = page.locator(f"{scope} .widget-hprogress")
    if assignment == "04_segmentation_assignment":
        fits = _cells_by_grade_id(saved, TRAINED_CELLS)
        assert len(fits) == len(TRAINED_CELLS)
        for i in fits:
            assert cells.nth(i).locator(".widget-hprogress").count() >= 1, f"cell {i}: fit shows no widget progress bar"
        for i in fits:
            box = cells.nth(i).locator(".widget-hbox", has=page.locator(".widget-hprogress")).first
            assert "100%" in box.inner_text(), f"cell {i}: {box.inner_text()!r}"
            width = box.locator(".progress-bar").first.evaluate("e => e.style.width")
            assert width == "100%", f"cell {i}: the bar is at {width}"
        cells.nth(fits[0]).scroll_into_view_if_needed()
        _shot(page, f"{assignment}-progress")
    for i in range(bars.count()):  # any bar left on the page ended
        assert "100%" in bars.nth(i).locator("xpath=..").inner_text()
    # what a papermill run must show (tests/test_notebooks.py), but a score: this model trained for a few steps
    check_solution_run(assignment, saved, folder, cache, trained=False)


# --------------------------------------------------------------------------- Validate
def _validate(page, lab, relative: str) -> str:
    """Open ``relative``, press nbgrader's Validate button, return the dialog's text."""
    open_notebook(page, lab, relative)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar").get_by_text("Validate").first.click()
    dialog = page.locator(".jp-Dialog .validation-success, .jp-Dialog .validation-failed, .jp-Dialog pre")
    dialog.first.wait_for(timeout=300000)  # nbgrader runs the whole notebook on the server
    text = page.locator(".jp-Dialog").first.inner_text()
    return text


def test_validate_button_passes_a_solution_and_lists_the_failing_tests_of_an_untouched_notebook(course, lab, page):
    assignment = "03_dice_iou"
    name = ASSIGNMENTS[assignment]
    solved = _with_small_setting(solution_path(assignment), course / "validate" / "solved" / name, assignment)
    untouched = _with_small_setting(student_path(assignment), course / "validate" / "untouched" / name, assignment)

    text = _validate(page, lab, str(solved.relative_to(course)))
    assert page.locator(".jp-Dialog .validation-success").count() == 1, text
    assert "Success! Your notebook passes all the tests." in text
    _shot(page, "validate-success")
    page.locator(".jp-Dialog button", has_text="Ok").first.click()

    text = _validate(page, lab, str(untouched.relative_to(course)))
    assert page.locator(".jp-Dialog .validation-failed").count() == 1, text
    failing = [c for c in nbformat.read(untouched, as_version=4).cells
               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
    assert "cell failed" in text and "NotImplementedError" in text, text
    shown = sum(1 for c in failing if c.source.strip() and c.source.strip().splitlines()[0][:40] in text)
    assert shown >= 1, "the dialog quotes the failing test cells"
    _shot(page, "validate-failed")


# --------------------------------------------------------------------------- the instructor
GRADED = "03_dice_iou"  # released, submitted, collected and graded (fast, with written answers for formgrader)


def _modal_succeeds(frame) -> str:
    """Wait for formgrader's result dialog, close it; its title ('Success') and text."""
    title = frame.locator(".modal-title").first
    title.wait_for(timeout=120000)
    seen = f"{title.inner_text()}: {frame.locator('.modal-body').first.inner_text()[:2000]}"
    frame.locator(".modal .close").first.click()
    frame.locator(".modal-title").first.wait_for(state="detached", timeout=10000)
    return seen


@pytest.fixture(scope="module")
def round_trip(course, lab, browser, tmp_path_factory) -> dict:
    """The course on one server: the instructor generates and releases 03 in formgrader, the
    student fetches it in the Assignments tab, completes it (the `complete` example) and
    submits it, the instructor collects it, and ``autograder grade 03_dice_iou submitted`` grades
    what was collected, with a roster naming the student. What each step showed is returned for
    the tests to check."""
    import pwd

    seen: dict = {"student": pwd.getpwuid(os.getuid()).pw_name}  # as nbgrader's exchange names submissions
    name = ASSIGNMENTS[GRADED]
    page = _new_page(browser)
    try:
        frame = _formgrader(page, lab)
        row = frame.locator("tr", has_text=GRADED)
        seen["exchange warning"] = frame.locator("#warning-exchange").count()
        for step in ("assign", "release"):  # Generate, then Release
            row.locator(f"td.{step} a").click()
            seen[step] = _modal_succeeds(frame)
        seen["status"] = row.locator("td.status").inner_text()

        menu_command(page, "Nbgrader", "nbgrader:open-assignment-list")
        page.locator("#released_assignments_list").locator("button", has_text="Fetch").first.click()
        fetched = page.locator("#fetched_assignments_list")
        fetched.locator("button", has_text="Submit").first.wait_for(timeout=60000)
        local = course / GRADED / name
        seen["fetched"] = local.is_file()
        shutil.copy(EXAMPLES / GRADED / "complete" / name, local)  # the student's work
        fetched.locator("button", has_text="Submit").first.click()
        page.locator("#submitted_assignments_list .list_item").first.wait_for(timeout=60000)
        _shot(page, "assignments-tab")

        frame = _formgrader(page, lab)
        frame.locator("tr", has_text=GRADED).locator("td.collect a").click()
        seen["collect"] = _modal_succeeds(frame)
    finally:
        page.context.close()
    collected = course / "submitted" / seen["student"]
    seen["submitted == collected"] = (collected / GRADED / name).read_bytes() == local.read_bytes()
    before = {p: p.read_bytes() for p in collected.rglob("*") if p.is_file()}

    roster = tmp_path_factory.mktemp("roster") / "roster.csv"
    roster.write_text(f"id,first_name,last_name,email\n{seen['student']},Ada,Okafor,ada.okafor@example.org\n")
    params = [f"--param={k}={v}" for k, v in SMALL_PARAMETERS[GRADED].items()]
    _autograder(course, "grade", GRADED, str(course / "submitted"), "--workers", "1", "--no-progress",
                "--roster", str(roster), *params)
    seen["collected files unchanged"] = before == {p: p.read_bytes() for p in collected.rglob("*") if p.is_file()}
    return seen


def test_release_fetch_submit_collect_round_trip_then_autograde(round_trip, course):
    """The round trip through the UI (the exchange is the course-local one nbgrader_config.py
    sets up), then `autograder grade` of what formgrader collected."""
    seen, student = round_trip, round_trip["student"]
    assert seen["exchange warning"] == 0, "formgrader sees the exchange"
    for step in ("assign", "release", "collect"):
        assert seen[step].startswith("Success"), seen[step]
    assert "released" in seen["status"]
    assert (course / "exchange" / "fpn-segmentation" / "outbound" / GRADED / ASSIGNMENTS[GRADED]).is_file()
    assert seen["fetched"], "fetched into the student's folder"
    assert seen["submitted == collected"]
    status = {r["student"]: r for r in _csv_rows(course / "status.csv") if r["assignment"] == GRADED}
    assert list(status) == [student] and status[student]["status"] == "graded", status
    assert float(status[student]["auto_score"]) == float(status[student]["auto_max_score"]) > 0
    assert seen["collected files unchanged"], "graded in place: the collected files stay as they came"
    assert (course / "autograded" / student / GRADED / ASSIGNMENTS[GRADED]).is_file()


def _formgrader(page, lab):
    """JupyterLab, then Nbgrader → Formgrader: the formgrader frame."""
    page.goto(lab.url(f"lab/workspaces/formgrader-{id(page)}?reset"))
    page.wait_for_selector(".jp-LabShell", timeout=60000)
    menu_command(page, "Nbgrader", "nbgrader:open-formgrader")
    frame = page.frame_locator(".jp-MainAreaWidget:not(.lm-mod-hidden) iframe").first
    frame.locator("h1", has_text="Manage Assignments").wait_for(timeout=60000)
    return frame


def _written_answers(assignment: str) -> list[str]:
    nb = nbformat.read(solution_path(assignment), as_version=4)
    return [c.metadata.nbgrader["grade_id"] for c in nb.cells if c.cell_type == "markdown"
            and c.metadata.get("nbgrader", {}).get("grade") and c.metadata.nbgrader.get("solution")]


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_formgrader_manual_grade_lands_in_gradebook_grades_csv_and_feedback(round_trip, course, lab, page):
    from nbgrader.api import Gradebook

    notebook, student = Path(ASSIGNMENTS[GRADED]).stem, round_trip["student"]
    answer = _written_answers(GRADED)[0]
    db_url = f"sqlite:///{course / 'gradebook.db'}"
    with Gradebook(db_url) as gb:
        before = gb.find_submission(GRADED, student).score
        max_points = gb.find_grade(answer, notebook, GRADED, student).max_score
    points, comment = max_points - 1, "Right idea; say why the gap is largest at IoU = sqrt(2) - 1."

    frame = _formgrader(page, lab)
    for link in ("Manual Grading", GRADED, notebook):  # each click loads a page: wait until it is the one asked for
        exact = re.compile(rf"^\s*{re.escape(link)}\s*$")
        frame.locator("a").filter(has_text=exact).first.click()
        frame.locator("ol.breadcrumb li.active").filter(has_text=exact).wait_for(timeout=60000)
    table = frame.locator("table").first
    table.locator("a.name-hidden").first.wait_for(timeout=30000)  # students anonymous until asked
    frame.locator("#toggle_names").click()
    table.locator("text=Okafor, Ada").wait_for(timeout=30000)  # the roster's names, not "None, None"
    assert "None, None" not in table.inner_text()
    _shot(page, "formgrader-submissions")
    table.locator("a.name-shown", has_text="Okafor, Ada").click()

    score = frame.locator(f"input.score[id='{answer}']")
    score.wait_for(timeout=60000)
    score.scroll_into_view_if_needed()
    score.fill(str(points))
    score.press("Tab")  # formgrader saves a score on change
    box = frame.locator(f"textarea[id='{answer}-comment']")
    box.fill(comment)
    box.press("Tab")
    page.wait_for_timeout(500)
    _shot(page, "formgrader-manual-grade")

    grade = None
    for _ in range(60):  # saved through formgrader's REST API
        with Gradebook(db_url) as gb:
            grade = gb.find_grade(answer, notebook, GRADED, student).manual_score
            saved = gb.find_comment(answer, notebook, GRADED, student).manual_comment
            after = gb.find_submission(GRADED, student).score
        if grade == points and saved == comment:
            break
        page.wait_for_timeout(500)
    assert (grade, saved) == (points, comment)
    assert after == pytest.approx(before + points)

    _autograder(course, "export")
    row = next(r for r in _csv_rows(course / "grades.csv") if r["student_id"] == student and r["assignment"] == GRADED)
    assert float(row["score"]) == pytest.approx(after)
    report = (course / "report.html").read_text()
    assert f"{after:g} / " in report.split("<h3>All submissions</h3>")[1], "report.html takes the gradebook's score"

    _nbgrader(course, "generate_feedback", GRADED, f"--student={student}", "--force")
    feedback = course / "feedback" / student / GRADED / f"{notebook}.html"
    html = feedback.read_text()
    assert comment in html
    total = re.search(r"Score: ([0-9.]+) / ([0-9.]+)", html)  # the page's first score is the notebook's total
    assert total and float(total.group(1)) == pytest.approx(after), "the feedback's total has the manual points"
    assert "BEGIN SOLUTION" not in html and "END SOLUTION" not in html  # markers stripped from written answers too

    page.goto(feedback.as_uri())
    page.wait_for_load_state("load")
    assert broken_images(page) == []
    assert page.locator("math").count() > 10, "formulas rendered at export (MathML), no MathJax needed"
    prose = page.evaluate("() => { const b = document.body.cloneNode(true);"
                          " b.querySelectorAll('.input_area, .input, pre, code, .highlight').forEach(e => e.remove());"
                          " return b.textContent; }")  # the text outside code
    assert "$" not in prose.replace("\\$", ""), "a formula left as raw $...$"
    assert not [e for e in page.console_errors if "$ is not defined" in e]
    page.get_by_text(comment).first.scroll_into_view_if_needed()
    _shot(page, "feedback")


def test_grading_report_renders_without_broken_images(round_trip, course, page):
    page.goto((course / "report.html").as_uri())
    page.wait_for_load_state("load")
    assert broken_images(page) == []
    text = page.locator("body").inner_text()
    assert round_trip["student"] in text and GRADED in text
    assert not page.console_errors, page.console_errors
    _shot(page, "report", full_page=True)
