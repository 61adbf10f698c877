"""Confine student kernels: bubblewrap, resource limits, capped outputs.

The course's ``nbgrader_config.py`` replaces nbgrader's ``Execute`` by
:class:`SandboxedExecute`, so plain ``nbgrader autograde`` and ``autograder grade`` both
start every kernel through :class:`SandboxedKernelManager`. Only the kernel is confined;
nbgrader, the harness and the gradebook stay outside.

Inside the sandbox (``bwrap``, Debian package ``bubblewrap``):

* no network (own network namespace; the kernel talks to nbgrader over ZeroMQ **ipc**
  sockets in a private folder bound into the sandbox, since TCP on the host's loopback is
  unreachable from there);
* its own PID namespace (``--die-with-parent``: nothing outlives the kernel; the
  kernel's parent poller is disabled because its parent's PID means nothing inside);
* a filesystem of the system and the Python environment read-only, ``course_lib``
  read-only, a private ``/tmp`` (tmpfs, size-capped) and, writable, only the folder the
  notebook runs in (the private copy of the submission). The course root, ``solutions/``,
  the gradebooks, other submissions and nbgrader's copies are simply not there;
* limits: memory and number of processes through a cgroup when one can be created
  (cgroup v2 or v1; root or a delegated subtree), else ``RLIMIT_AS`` on CPU-only kernels
  and ``RLIMIT_NPROC`` (documented fallback; ``RLIMIT_NPROC`` does not bind root); file
  size (``RLIMIT_FSIZE``), no core dumps; total bytes written in the notebook's folder
  and total output kept in the notebook are capped by nbgrader's side;
* GPUs: only the device nodes of the GPUs in ``CUDA_VISIBLE_DEVICES``.

Settings (environment): ``AUTOGRADER_SANDBOX`` (``on``; ``off`` grades without isolation,
unsafe), ``AUTOGRADER_MEMORY_LIMIT`` (default ``6G``), ``AUTOGRADER_MAX_PROCESSES`` (256),
``AUTOGRADER_MAX_FILE_SIZE`` (``256M``), ``AUTOGRADER_MAX_WRITTEN`` (``512M`` in the
notebook's folder), ``AUTOGRADER_TMP_SIZE`` (``512M``), ``AUTOGRADER_MAX_OUTPUT``
(``8M`` of outputs per notebook).
"""

from __future__ import annotations

import asyncio
import functools
import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute

SANDBOX_ENV = "AUTOGRADER_SANDBOX"
VIOLATION_ENV = "AUTOGRADER_VIOLATION_FILE"  # where the kernel manager reports limits hit
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# what the kernel needs from /etc (not all of it: /etc/shadow and friends stay out)
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf",
             "hosts", "fonts", "ssl", "alternatives", "matplotlibrc", "mime.types", "os-release")
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/opt/conda")


class SandboxUnavailable(RuntimeError):
    """Kernels cannot be confined here; the message says what to install or change."""


def parse_size(text: str) -> int:
    text = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in UNITS else ""
    return int(float(text[: len(text) - len(unit)]) * UNITS[unit])


@dataclass(frozen=True)
class Limits:
    memory: int = 6 * 2**30
    processes: int = 256
    file_size: int = 256 * 2**20
    written: int = 512 * 2**20
    tmp_size: int = 512 * 2**20
    output: int = 8 * 2**20

    @classmethod
    def from_env(cls) -> Limits:
        env = os.environ.get
        return cls(
            memory=parse_size(env("AUTOGRADER_MEMORY_LIMIT", "6G")),
            processes=int(env("AUTOGRADER_MAX_PROCESSES", "256")),
            file_size=parse_size(env("AUTOGRADER_MAX_FILE_SIZE", "256M")),
            written=parse_size(env("AUTOGRADER_MAX_WRITTEN", "512M")),
            tmp_size=parse_size(env("AUTOGRADER_TMP_SIZE", "512M")),
            output=parse_size(env("AUTOGRADER_MAX_OUTPUT", "8M")),
        )


def enabled() -> bool:
    return os.environ.get(SANDBOX_ENV, "on").strip().lower() not in ("off", "0", "no", "false")


@functools.lru_cache(maxsize=1)
def check_bwrap() -> str:
    """The path of a working ``bwrap``; :class:`SandboxUnavailable` with the fix otherwise."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "bubblewrap is not installed, so student kernels cannot be sandboxed. Install it "
            "(`sudo apt-get install bubblewrap`; `make install` does it where apt-get and root are available) "
            f"or, only for trusted notebooks, set {SANDBOX_ENV}=off.")
    probe = subprocess.run([path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot create namespaces here ({probe.stderr.strip()}); enable unprivileged user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1, or the AppArmor profile for bwrap on Ubuntu) "
            f"or, only for trusted notebooks, set {SANDBOX_ENV}=off.")
    return path


def _python_roots() -> list[str]:
    """Folders of this Python: the environment, its base installation, the editable course_lib."""
    course_lib = importlib.util.find_spec("course_lib")  # found, not imported (that would import torch)
    roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             str(Path(course_lib.origin).resolve().parent)}
    for entry in sys.path:
        if "site-packages" in entry or "dist-packages" in entry:
            roots.add(entry)
    executable = Path(sys.executable)
    roots.add(str(executable.resolve().parent))
    return sorted(r for r in roots if r and os.path.exists(r))


def gpu_devices(visible: str | None) -> list[str]:
    """Device nodes for the GPUs in ``CUDA_VISIBLE_DEVICES`` (none when it is empty)."""
    if not visible:
        return []
    nodes = [p for p in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
             if os.path.exists(p)]
    nodes += [f"/dev/nvidia{i.strip()}" for i in visible.split(",") if i.strip().isdigit()
              and os.path.exists(f"/dev/nvidia{i.strip()}")]
    nodes += glob.glob("/dev/nvidia-caps/*")
    return nodes


def bwrap_command(cmd: list[str], cwd: str, writable: list[str], env: dict[str, str], limits: Limits) -> list[str]:
    """``cmd`` wrapped in bubblewrap, with ``cwd`` and ``writable`` the only writable host folders."""
    args = [check_bwrap(), "--unshare-all", "--die-with-parent", "--hostname", "sandbox",
            "--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_size), "--tmpfs", "/tmp",
            "--dir", "/var/tmp"]
    for path in SYSTEM_DIRS:
        if os.path.exists(path):
            args += ["--ro-bind", path, path] if not os.path.islink(path) else ["--symlink", os.readlink(path), path]
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for root in _python_roots():
        args += ["--ro-bind", root, root]
    for node in gpu_devices(env.get("CUDA_VISIBLE_DEVICES")):
        args += ["--dev-bind", node, node]
    for path in [cwd, *writable]:
        args += ["--bind", path, path]
    args += ["--chdir", cwd, "--setenv", "HOME", "/tmp", "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib",
             "--setenv", "TMPDIR", "/tmp", "--unsetenv", "JPY_PARENT_PID", "--setenv", "AUTOGRADER_SANDBOXED", "1"]
    return [*args, "--", *cmd]


# ----------------------------------------------------------------------------- limits
class Cgroup:
    """A cgroup for one kernel with memory and pids limits (v2, or v1 controllers)."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths  # controller ("memory", "pids", or "" for v2) -> folder

    @classmethod
    def create(cls, limits: Limits) -> Cgroup | None:
        """A new cgroup below ours, or None where we may not create one (the fallback applies)."""
        name = f"autograder-{uuid.uuid4().hex[:12]}"
        base = Path("/sys/fs/cgroup")
        try:
            mine = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        if (base / "cgroup.controllers").exists():  # v2: one folder, both controllers
            path = next((line.split(":", 2)[2] for line in mine if line.startswith("0::")), None)
            if path is None:
                return None
            paths = {"": base / path.lstrip("/") / name}
            settings = {"memory.max": limits.memory, "memory.swap.max": 0, "pids.max": limits.processes}
        else:  # v1: a folder per controller
            paths = {}
            for line in mine:
                _, controllers, path = line.split(":", 2)
                for controller in ("memory", "pids"):
                    if controller in controllers.split(","):
                        paths[controller] = base / controller / path.lstrip("/") / name
            if set(paths) != {"memory", "pids"}:
                return None
            settings = {"memory/memory.limit_in_bytes": limits.memory, "memory/memory.memsw.limit_in_bytes": limits.memory,
                        "pids/pids.max": limits.processes}
        group = cls({})
        try:
            for controller, path in paths.items():
                path.mkdir()
                group.paths[controller] = path
            for key, value in settings.items():
                controller, _, knob = key.rpartition("/")
                target = group.paths[controller] / knob
                if "swap" in knob or "memsw" in knob:  # exist only with swap accounting
                    if target.exists():
                        target.write_text(str(value))
                else:  # a missing memory/pids knob means no limit: fall back instead
                    target.write_text(str(value))
            return group
        except OSError:  # not ours to create (no root, no delegation): the rlimit fallback applies
            group.remove()
            return None

    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths.values()]

    def oom_killed(self) -> bool:
        for controller, path in self.paths.items():
            events = path / ("memory.events" if controller == "" else "memory.oom_control")
            try:
                text = events.read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value or 0) > 0:
                    return True
        return False

    def kill_all(self) -> None:
        for _ in range(20):
            pids = set()
            for procs in self.procs_files():
                try:
                    pids |= {int(p) for p in Path(procs).read_text().split()}
                except OSError:
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def remove(self) -> None:
        self.kill_all()
        for path in self.paths.values():
            try:
                path.rmdir()
            except OSError:
                pass


# ----------------------------------------------------------------------------- jupyter side
class SandboxedKernelManager(AsyncKernelManager):
    """Starts the kernel inside bubblewrap with limits, over ipc sockets."""

    sandbox_limits: Limits | None = None
    _ipc_dir: str | None = None
    _cgroup: Cgroup | None = None
    _watch: asyncio.Task | None = None
    violation: str = ""
    _reported: bool = False

    async def _async_pre_start_kernel(self, **kw):
        self.sandbox_limits = Limits.from_env()
        check_bwrap()
        # SIGINT from outside does not reach a kernel in its own namespaces: interrupt it by
        # a message on the control channel (ipykernel then signals itself)
        self.kernel_spec.interrupt_mode = "message"
        self._ipc_dir = tempfile.mkdtemp(prefix="kernel-")  # short: unix socket paths are limited to 107 bytes
        self.transport = "ipc"
        self.ip = os.path.join(self._ipc_dir, "ipc")
        self.connection_file = os.path.join(self._ipc_dir, "connection.json")
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        limits = self.sandbox_limits
        cwd = os.path.abspath(kw.get("cwd") or os.getcwd())
        env = kw.get("env") or dict(os.environ)
        self._cgroup = Cgroup.create(limits)
        spec = {"cgroup_procs": self._cgroup.procs_files() if self._cgroup else [], "file_size": limits.file_size,
                "processes": limits.processes, "memory": limits.memory, "gpu": bool(env.get("CUDA_VISIBLE_DEVICES")),
                "stdio": os.path.join(self._ipc_dir, "kernel-stdio.log")}
        wrapped = [sys.executable, "-m", "autograder.sandbox_launcher", json.dumps(spec), "--",
                   *bwrap_command(kernel_cmd, cwd, [self._ipc_dir], env, limits)]
        self.log.info("Sandboxed kernel: cwd %s, cgroup %s", cwd, "yes" if self._cgroup else "no (rlimits)")
        await super()._async_launch_kernel(wrapped, **kw)
        self._watch = asyncio.ensure_future(self._watch_folder(cwd, limits.written))

    async def _watch_folder(self, folder: str, limit: int) -> None:
        """Kill the kernel if the files in its folder grow past ``limit`` bytes."""
        while True:
            await asyncio.sleep(1.0)
            total = 0
            for root, _, files in os.walk(folder):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(root, name)).st_size
                    except OSError:
                        pass
            if total > limit:
                self.violation = f"the notebook wrote more than {limit // 2**20} MB of files"
                self.log.error("Killing the kernel: %s", self.violation)
                if self._cgroup:
                    self._cgroup.kill_all()
                await self._async_kill_kernel()
                return

    def _cleanup_sandbox(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._cgroup is not None:
            if self._cgroup.oom_killed() and not self.violation:
                self.violation = f"out of memory (limit {self.sandbox_limits.memory // 2**20} MB)"
            self._cgroup.remove()
            self._cgroup = None
        if self._ipc_dir:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None
        report = os.environ.get(VIOLATION_ENV)
        if self.violation and report and not self._reported:  # for the harness, outside the sandbox
            self._reported = True
            with open(report, "a") as fh:
                fh.write(self.violation + "\n")

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            self._cleanup_sandbox()

    # AsyncKernelManager binds this name to the base class's coroutine function, which
    # would skip the override above when nbclient cleans up after a dead kernel
    cleanup_resources = _async_cleanup_resources


class SandboxedExecute(Execute):
    """nbgrader's Execute with kernels in the sandbox and the notebook's outputs capped."""

    def __init__(self, *args, **kwargs):
        if enabled():
            kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(*args, **kwargs)
        # a cell that floods its output finishes before the flood is read: give the
        # reader time to drain (and drop) it instead of failing the notebook after 4 s
        self.iopub_timeout = max(self.iopub_timeout, 60)
        self._output_budget = Limits.from_env().output
        self._output_dropped = False

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        text = content.get("text")
        size = len(text) if isinstance(text, str) else len(json.dumps(content, default=str))
        self._output_budget -= size
        if self._output_budget >= 0:
            return super().output(outs, msg, display_id, cell_index)
        if not self._output_dropped:  # say it once, where it happened
            self._output_dropped = True
            note = NotebookNode(output_type="stream", name="stderr",
                                text="[autograder] output limit reached: later output of this notebook was dropped\n")
            outs.append(note)
        return None
