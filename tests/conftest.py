import os
import shutil
import tempfile

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Test processes run side by side: one thread each, in them and in the kernels they start
    # (two 2-thread PyTorch jobs on 2 cores spin against each other and run 10x slower).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")
# Each test process (pytest-xdist runs several, which inherit the controller's environment)
# keeps its kernels' private folders apart, so that a test asserting "nothing was left
# behind" sees its own leftovers only.
os.environ["AUTOGRADER_RUNTIME_DIR"] = tempfile.mkdtemp(
    prefix=f"autograder-runtime-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")


def pytest_unconfigure(config):
    """The test process's runtime folder goes with it (each run would leave one in /tmp)."""
    shutil.rmtree(os.environ["AUTOGRADER_RUNTIME_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


# The longest modules first: test processes take tests in this order, so the long ones do
# not start last and leave one process working alone at the end.
LONGEST_FIRST = ("test_harness", "test_browser", "test_notebooks", "test_adversarial", "test_cluster",
                 "test_adversarial_grader", "test_trusted", "test_postgres")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist hands out the modules
def pytest_collection_modifyitems(config, items):
    """Longest modules first (``--dist loadscope`` gives each process whole modules, in this
    order); tests marked ``gpu`` need CUDA: skip them, saying why, where torch sees no GPU."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))  # stable
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_tests and not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here); "
                                       "`make gpu-check` runs these on a GPU host")
        for item in gpu_tests:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used the JupyterLab server (tests/test_browser.py) gets the server's
    log in its report, and the browser's console errors."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        lab = getattr(item, "funcargs", {}).get("lab")
        if lab is not None and hasattr(lab, "log_tail"):
            report.sections.append(("jupyter lab log (last 20000 characters)", lab.log_tail()))
        page = getattr(item, "funcargs", {}).get("page")
        if page is not None and getattr(page, "console_errors", None):
            report.sections.append(("browser console errors", "\n".join(page.console_errors[-50:])))


def pytest_collection_finish(session):
    """The assignments whose solution runs in JupyterLab this session (Chromium here and that
    browser test chosen, after -m/-k): they run there only, nothing executed twice."""
    from tests.jupyterlab import chromium_path
    from tests.solution_runs import SOLUTIONS_RUN_IN_BROWSER

    chosen = frozenset(item.callspec.params["assignment"] for item in session.items
                       if "test_browser.py::test_student_runs_all_cells" in item.nodeid and hasattr(item, "callspec"))
    session.config.stash[SOLUTIONS_RUN_IN_BROWSER] = chosen if chromium_path() is not None else frozenset()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (tests/postgres.py) for this test process; ``PGPASSFILE`` holds
    its password, so that no URL, command line or log carries it."""
    from tests.postgres import PostgresServer, binaries

    if binaries() is None:
        pytest.skip("PostgreSQL's server is not installed (Debian's 'postgresql' package: `make test` installs it)")
    server = PostgresServer().start()
    saved = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(server.passfile)
    try:
        yield server
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = saved
