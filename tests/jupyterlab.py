"""A real JupyterLab server and Debian's Chromium, driven by Playwright, for tests/test_browser.py.

The server is the project's ``jupyter lab`` on a free loopback port with a random token, in a
temporary course root, with its own settings and workspaces (so nothing of the user's leaks
in) and the notebook shown whole (no windowing: every cell is in the page). Chromium comes
from Debian's package (``make browser`` installs it): Playwright's own browser download needs
the network. The browser reaches only the loopback server and local files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# as the machines' notes prescribe: no sandbox as root, no GPU, nothing fetched in the background
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
LAB_SETTINGS = {
    # every cell in the page, so that the tests see every output (JupyterLab 4 renders only the visible ones)
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def chromium_path() -> str | None:
    """Debian's Chromium (or $CHROMIUM), or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` serving ``root`` (also its working folder: formgrader reads the course's
    ``nbgrader_config.py`` from there)."""

    def __init__(self, root: Path, state: Path):
        self.root, self.state = Path(root), Path(state)
        self.log_path = self.state / "jupyter-lab.log"
        self.token = secrets.token_hex(16)
        self.port = 0
        self.process: subprocess.Popen | None = None

    def start(self, attempts: int = 3) -> JupyterLab:
        settings = self.state / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
                   # as in an activated environment: formgrader creates the gradebook with its `alembic`
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.state / "workspaces"),
                   JUPYTER_RUNTIME_DIR=str(self.state / "runtime"))
        for _ in range(attempts):  # another process may take the free port before the server binds it
            self.port = free_port()
            command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                       f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                       f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                       "--ServerApp.open_browser=False", "--LabApp.news_url=None"]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                command.append("--allow-root")
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            if self._wait_ready(timeout=90):
                return self
            self.stop()
        raise RuntimeError(f"jupyter lab did not start; its log:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        return False

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            return json.loads(body) if body else None

    def log_tail(self, chars: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def shutdown_kernels(self) -> None:
        """Shut down every kernel the server runs (kernels live in sessions of their own: killing
        the server's process group would not reach them)."""
        try:
            for kernel in self.api("kernels"):
                self.api(f"kernels/{kernel['id']}", method="DELETE")
        except (urllib.error.URLError, OSError):
            pass

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.shutdown_kernels()
            try:
                self.api("shutdown", method="POST")
                self.process.wait(timeout=20)
            except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):  # jupyter_server shuts its kernels down on SIGTERM
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.process = None


# --------------------------------------------------------------------------- the page
def open_notebook(page, lab: JupyterLab, relative: str, timeout: float = 120) -> None:
    """Open ``relative`` (to the server's root) in JupyterLab and wait for an idle kernel."""
    # a workspace of its own, reset: nothing opened earlier comes back beside it
    page.goto(lab.url(f"lab/workspaces/{secrets.token_hex(4)}/tree/{relative}?reset"))
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=timeout * 1000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout * 1000)
    if _accept_kernel_choice(page, wait=1000):  # it asked once the notebook showed: now its kernel starts
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout * 1000)


def _accept_kernel_choice(page, wait: float = 0) -> bool:
    """On a busy machine JupyterLab may open a notebook before it has the kernel list and ask
    which kernel to start ("Select Kernel", the notebook's own preselected): accept it, as a
    student would. True when it asked."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    try:
        dialog.first.wait_for(timeout=wait) if wait else None
    except Exception:  # playwright's TimeoutError: it did not ask
        return False
    if not dialog.count():
        return False
    dialog.first.locator(".jp-Dialog-button.jp-mod-accept").first.click()
    dialog.first.wait_for(state="detached", timeout=30000)
    return True


def menu_command(page, menu: str, command: str) -> None:
    """Click ``menu`` in JupyterLab's menu bar, then its entry running ``command``. A dialog
    in the way (it would take the click) may close by itself; if not, the failure quotes it."""
    _accept_kernel_choice(page)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        try:
            dialog.first.wait_for(state="detached", timeout=30000)
        except Exception:  # playwright's TimeoutError
            raise AssertionError(f"JupyterLab shows a dialog: {dialog.first.inner_text()[:500]!r}") from None
    page.locator("li.lm-MenuBar-item", has_text=menu).first.click()
    page.locator(f"li.lm-Menu-item[data-command='{command}']").first.click()


# some cell queued, running or run: its prompt shows [*] or [n]
_STARTED = ("() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')]"
            ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))")


def _busy_cells(page) -> int:
    return page.evaluate("() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                         ".jp-InputPrompt')].filter(e => e.textContent.includes('*')).length")


def run_all_cells(page, timeout: float) -> float:
    """Run → Run All Cells, then wait until no cell is queued or running and the kernel is
    idle (twice in a row); returns the seconds it took."""
    started = time.monotonic()
    for _ in range(3):  # a kernel still connecting ignores the command: ask again
        menu_command(page, "Run", "runmenu:run-all")
        try:
            page.wait_for_function(_STARTED, timeout=20000)
            break
        except Exception:  # playwright's TimeoutError
            page.keyboard.press("Escape")
    else:
        raise TimeoutError("Run All Cells started no cell")
    deadline, idle_seen = started + timeout, 0
    while idle_seen < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Run All Cells did not finish in {timeout:.0f} s ({_busy_cells(page)} cells busy)")
        status = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator").first
        idle = status.get_attribute("data-status") == "idle" and _busy_cells(page) == 0
        idle_seen = idle_seen + 1 if idle else 0
        page.wait_for_timeout(1000)
    return time.monotonic() - started


def save_notebook(page) -> None:
    """File → Save, then wait until the tab is no longer marked unsaved."""
    menu_command(page, "File", "docmanager:save")
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
                           timeout=60000)


def broken_images(page, scope: str = "body") -> list[str]:
    """The images in ``scope`` that did not load (no pixels), by their source's start."""
    return page.evaluate(
        "(scope) => [...document.querySelectorAll(scope + ' img')]"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 80))",
        scope)
