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
* a filesystem of the system and the Python environment read-only, the course's library
  read-only, a private ``/tmp`` (tmpfs, size-capped) and, writable, only a private folder
  the kernel runs in and the folder of its ipc sockets, both made for this kernel under
  :mod:`autograder.runtime` and removed after it. The kernel's folder holds the
  submission's other files and the grader's probe inputs, never a notebook (nbgrader's
  copy with the hidden tests restored stays outside); after the kernel stopped, only the
  files the grader declared (probe results, an exported model) are read back, as regular
  files of bounded size, and nothing else the kernel wrote reaches nbgrader's folders,
  the feedback or the grader. The course root, ``solutions/``, the gradebooks, other
  submissions and nbgrader's copies are simply not there;
* an environment made from an allow-list (:data:`KERNEL_ENV`): the grader's tokens,
  passwords and database URLs never reach student code;
* limits: memory and number of processes through a cgroup when one can be created
  (cgroup v2 or v1; root or a delegated subtree), else ``RLIMIT_AS`` on CPU-only kernels
  and ``RLIMIT_NPROC`` (documented fallback; ``RLIMIT_NPROC`` does not bind root); file
  size (``RLIMIT_FSIZE``), no core dumps; total bytes written in the notebook's folder
  and total output kept in the notebook are capped by nbgrader's side;
* GPUs: only the device nodes of the GPUs in ``CUDA_VISIBLE_DEVICES`` (indices, ``GPU-<uuid>``
  or ``MIG-<uuid>``, mapped to their nodes by :mod:`autograder.gpus`).

Settings (environment): ``AUTOGRADER_SANDBOX`` (``on``; ``off`` grades without isolation,
unsafe), ``AUTOGRADER_MEMORY_LIMIT`` (default ``6G``), ``AUTOGRADER_MAX_PROCESSES`` (256),
``AUTOGRADER_MAX_FILE_SIZE`` (``256M``), ``AUTOGRADER_MAX_WRITTEN`` (``512M`` in the
notebook's folder), ``AUTOGRADER_TMP_SIZE`` (``512M``), ``AUTOGRADER_MAX_OUTPUT``
(``8M`` of outputs per notebook).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Any, DottedObjectName, Integer, Type

from autograder import gpus, runtime
from autograder import limits as kernel_limits

SANDBOX_ENV = "AUTOGRADER_SANDBOX"
REPORT_ENV = "AUTOGRADER_SANDBOX_REPORT"  # where the kernel manager reports enforcement and limits hit (JSON lines)
EXTRA_ENV = "AUTOGRADER_KERNEL_ENV"  # more variable names a course lets through, comma-separated
# What Python, Jupyter, PyTorch and the course need, and nothing else: an instructor's
# shell holds LMS tokens, database passwords, cloud credentials and agent sockets.
KERNEL_ENV = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED", "PYTHONWARNINGS", "PYDEVD_DISABLE_FILE_VALIDATION", "VIRTUAL_ENV", "CONDA_PREFIX",
    "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_HOME", "CUDA_PATH",
    "NBGRADER_EXECUTION", "COURSE_LIB_WIDGETS", "MPLBACKEND",
})
KERNEL_ENV_PREFIXES = ("LC_",)
# bytes of one message from a kernel: a figure is well under 1 MB, but ipykernel coalesces a
# flood of prints into messages of hundreds of MB; a larger one drops the connection (and fails the notebook)
MAX_MESSAGE = 512 * 2**20
MAX_LEFT_FILE = 256 * 2**20  # bytes read back of one file a kernel left (the largest allowed model export fits)
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


def kernel_environment(env: dict[str, str]) -> dict[str, str]:
    """The part of ``env`` a student kernel may see (:data:`KERNEL_ENV`, ``LC_*`` and the
    names in ``$AUTOGRADER_KERNEL_ENV``)."""
    extra = {name.strip() for name in os.environ.get(EXTRA_ENV, "").split(",") if name.strip()}
    return {name: value for name, value in env.items()
            if name in KERNEL_ENV or name in extra or name.startswith(KERNEL_ENV_PREFIXES)}


def report(event: dict) -> None:
    """Tell the harness (outside the sandbox) about this kernel: a JSON line in ``$AUTOGRADER_SANDBOX_REPORT``."""
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(event) + "\n")


def read_reports(path: Path) -> list[dict]:
    """The events :func:`report` wrote (torn or foreign lines are skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


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
    """Folders of this Python: the environment, its base installation, the course's library
    (an editable install's lives in the course, which the sandbox hides)."""
    from autograder import settings

    library = settings.course_library_folder()
    roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, *([str(library)] if library else [])}
    for entry in sys.path:
        if "site-packages" in entry or "dist-packages" in entry:
            roots.add(entry)
    executable = Path(sys.executable)
    roots.add(str(executable.resolve().parent))
    return sorted(r for r in roots if r and os.path.exists(r))


def _inside(path: str, folder: str) -> bool:
    return path != folder and path.startswith(folder.rstrip("/") + "/")


def bwrap_command(cmd: list[str], cwd: str, writable: list[str], env: dict[str, str], limits: Limits,
                  devices: list[str] | None = None, hidden: list[str] | None = None) -> list[str]:
    """``cmd`` wrapped in bubblewrap, with ``cwd`` and ``writable`` the only writable host
    folders, ``devices`` the only device nodes beyond bwrap's minimal ``/dev``, and the
    grader's own folders (``hidden``: the course root, its secrets, the probe cache) masked
    where they lie inside a folder the sandbox binds (a course root under ``/usr/src``, say).
    Every writable mount is bounded: ``/tmp`` and ``/dev/shm`` are size-capped tmpfs,
    ``/var/tmp`` is ``/tmp``, and the sandbox's root is read-only."""
    args = [check_bwrap(), "--unshare-all", "--die-with-parent", "--hostname", "sandbox",
            "--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_size), "--tmpfs", "/tmp",
            "--size", str(limits.tmp_size), "--tmpfs", "/dev/shm", "--symlink", "/tmp", "/var/tmp"]
    bound = []
    for path in SYSTEM_DIRS:
        if os.path.exists(path):
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            else:
                args += ["--ro-bind", path, path]
                bound.append(path)
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    roots = _python_roots()
    for root in roots:
        args += ["--ro-bind", root, root]
    bound += roots
    masked = sorted({os.path.realpath(h) for h in hidden or [] if h})
    masked = [h for h in masked if any(_inside(h, b) for b in bound) and os.path.isdir(h)]
    for path in masked:  # an empty folder where the grader's files are (read-only below)
        args += ["--tmpfs", path]
        args += [a for root in roots if _inside(root, path) for a in ("--ro-bind", root, root)]
    for node in devices if devices is not None else gpus.device_nodes(env.get("CUDA_VISIBLE_DEVICES")):
        args += ["--dev-bind", node, node]  # only the GPU the kernel was given
    for path in [cwd, *writable]:
        args += ["--bind", path, path]
    for path in masked:
        args += ["--remount-ro", path]
    args += ["--chdir", cwd, "--setenv", "HOME", "/tmp", "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "AUTOGRADER_SANDBOXED", "1", "--remount-ro", "/",
             # jupyter_client's launcher sets it after our allow-list: inside the PID namespace the
             # kernel's parent is PID 1, which ipykernel's parent poller reads as "the parent exited"
             "--unsetenv", "JPY_PARENT_PID"]
    return [*args, "--", *cmd]


def confine(cmd: list[str], cwd: str, writable: list[str], env: dict[str, str], limits: Limits,
            stdio: str) -> tuple[list[str], kernel_limits.KernelLimits]:
    """The command that runs ``cmd`` confined, and its memory/process enforcement (remove it
    when done): the launcher joins the cgroup (or sets the rlimit fallback) and sends stdout
    and stderr to ``stdio``, then bubblewrap (unless the sandbox is off) runs ``cmd``."""
    devices = gpus.device_nodes(env.get("CUDA_VISIBLE_DEVICES"))
    enforcement = kernel_limits.create(limits.memory, limits.processes)
    try:
        spec = {"cgroup_procs": enforcement.procs_files, "rlimits": enforcement.rlimits, "file_size": limits.file_size,
                "processes": limits.processes, "memory": limits.memory, "gpu": bool(devices), "stdio": stdio}
        inner = bwrap_command(cmd, cwd, writable, env, limits, devices, grader_folders()) if enabled() else cmd
        return [sys.executable, "-m", "autograder.sandbox_launcher", json.dumps(spec), "--", *enforcement.wrap(inner)], \
            enforcement
    except BaseException:
        enforcement.remove()
        raise


def grader_folders() -> list[str]:
    """Folders of the grader's that no kernel may see: the course root nbgrader runs in and the
    course being graded (its solutions and grader code), its secrets, the probe cache, the
    runtime root of all kernels' folders."""
    folders = [os.getcwd(), str(runtime.root())]
    if os.environ.get("AUTOGRADER_COURSE_DIR"):  # autograder.course.COURSE_DIR_ENV
        folders.append(os.environ["AUTOGRADER_COURSE_DIR"])
    for name in ("AUTOGRADER_SECRETS", "AUTOGRADER_PROBE_CACHE"):
        if os.environ.get(name):
            folders.append(os.path.dirname(os.environ[name]) if name == "AUTOGRADER_SECRETS" else os.environ[name])
    return folders


# ----------------------------------------------------------------------------- the kernel's folder
@dataclass(frozen=True)
class LeftFile:
    """A file the kernel left where the grader expects one: its bytes, or why they are not read."""

    data: bytes | None
    problem: str = ""


def read_left_file(path: Path, max_bytes: int) -> LeftFile:
    """Read a file the kernel wrote, trusting nothing about it: links are not followed, a
    FIFO does not block, folders, sockets and devices are refused, and so is anything
    larger than ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return LeftFile(None, "missing")
    except OSError as err:  # ELOOP: a symbolic link
        return LeftFile(None, f"not a regular file ({os.strerror(err.errno)})")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return LeftFile(None, "not a regular file (a folder, FIFO, socket or device)")
        if info.st_size > max_bytes:
            return LeftFile(None, f"larger than {max_bytes // 2**20} MB")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            return LeftFile(None, f"larger than {max_bytes // 2**20} MB")
        return LeftFile(data)
    finally:
        os.close(fd)


def stage_kernel_folder(source: Path, target: Path, inputs: dict[str, Path]) -> None:
    """The kernel's folder: the regular files of ``source`` (nbgrader's folder of the
    submission) but its notebooks, and the grader's ``inputs`` ({name: file})."""
    target.mkdir(mode=0o700)
    for path in sorted(Path(source).rglob("*")):
        relative = path.relative_to(source)
        if path.suffix == ".ipynb" or not stat.S_ISREG(path.lstat().st_mode):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / relative, follow_symlinks=False)
    for name, path in inputs.items():
        shutil.copyfile(path, target / name)


# ----------------------------------------------------------------------------- jupyter side
IPC_FILES = ("connection.json",)  # besides the kernel's sockets, all its ipc folder may hold


def _measure(folder: str, ipc: str, stdio: str) -> tuple[int, str, str]:
    """(bytes in the kernel's folders and its stdio log, a non-socket in its ipc folder, a
    folder the grader cannot read): what the watch of a running kernel looks at."""
    try:
        total = os.lstat(stdio).st_size
    except OSError:
        total = 0
    foreign, hidden = "", []
    for top in (folder, ipc):
        for root, dirs, files in os.walk(top, onerror=lambda err: hidden.append(err.filename)):
            for name in files + dirs:
                try:
                    info = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                total += info.st_size
                if top == ipc and not stat.S_ISSOCK(info.st_mode) and name not in IPC_FILES:
                    foreign = name
    return total, foreign, os.path.basename(hidden[0]) if hidden else ""


@functools.lru_cache(maxsize=1)
def _reap_once() -> None:
    """Once per process: remove the folders and cgroups of graders that died (even by SIGKILL)."""
    runtime.reap_stale()
    kernel_limits.reap_stale()


class SandboxedKernelManager(AsyncKernelManager):
    """Starts the kernel inside bubblewrap with limits, over ipc sockets."""

    client_class = DottedObjectName("autograder.sandbox.SandboxedKernelClient")
    client_factory = Type(klass="autograder.sandbox.SandboxedKernelClient")

    sandbox_limits: Limits | None = None
    _runtime: Path | None = None
    _limits: kernel_limits.KernelLimits | None = None
    _watch: asyncio.Task | None = None
    violation: str = ""
    _reported: bool = False

    async def _async_pre_start_kernel(self, **kw):
        self.sandbox_limits = Limits.from_env()
        check_bwrap()
        _reap_once()  # what killed graders left behind
        # SIGINT from outside does not reach a kernel in its own namespaces: interrupt it by
        # a message on the control channel (ipykernel then signals itself)
        self.kernel_spec.interrupt_mode = "message"
        self._runtime = runtime.new_folder()  # short: unix socket paths are limited to 107 bytes
        ipc = self._runtime / "ipc"
        ipc.mkdir(mode=0o700)
        self.transport = "ipc"
        self.ip = str(ipc / "ipc")
        self.connection_file = str(ipc / "connection.json")
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        limits = self.sandbox_limits
        cwd = os.path.abspath(kw.get("cwd") or os.getcwd())
        kw["env"] = env = kernel_environment(kw.get("env") or dict(os.environ))
        ipc = str(self._runtime / "ipc")
        stdio = str(self._runtime / "stdio.log")  # outside the folders the kernel can see
        try:
            wrapped, self._limits = confine(kernel_cmd, cwd, [ipc], env, limits, stdio)
            if self._limits.rlimits:
                self.log.warning("No cgroup can be made here: the kernel's memory and processes are limited by "
                                 "rlimits only (RLIMIT_NPROC does not bind root; GPU kernels get no memory limit). "
                                 "`autograder doctor` says why.")
            self.log.info("Sandboxed kernel: cwd %s, limits by %s", cwd, self._limits.describe())
            report({"enforcement": self._limits.kind})
            await super()._async_launch_kernel(wrapped, **kw)
        except BaseException:  # no cgroup or folder outlives a kernel that did not start
            self._cleanup_sandbox()
            raise
        self._watch = asyncio.ensure_future(self._watch_folders(cwd, ipc, stdio, limits.written))

    async def _watch_folders(self, folder: str, ipc: str, stdio: str, limit: int) -> None:
        """Kill the kernel if the files in its folders and its stdout/stderr log grow past
        ``limit`` bytes, or if its ipc folder holds anything but its sockets."""
        while True:
            await asyncio.sleep(1.0)
            total, foreign, hidden = await asyncio.to_thread(_measure, folder, ipc, stdio)
            if total > limit or foreign or hidden:
                self.violation = (f"the notebook wrote more than {limit // 2**20} MB of files" if total > limit
                                  else f"the kernel wrote {foreign!r} into its ipc folder, which holds sockets only"
                                  if foreign else f"the kernel made {hidden!r} unreadable to the grader")
                self.log.error("Killing the kernel: %s", self.violation)
                self._limits.kill_all()
                await self._async_kill_kernel()
                return

    def _cleanup_sandbox(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._limits is not None:
            if self._limits.oom_killed() and not self.violation:
                self.violation = f"out of memory (limit {self.sandbox_limits.memory // 2**20} MB)"
            self._limits.remove()
            self._limits = None
        runtime.remove(self._runtime)
        self._runtime = None
        if self.violation and not self._reported:  # for the harness, outside the sandbox
            self._reported = True
            report({"violation": self.violation})

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            self._cleanup_sandbox()

    # AsyncKernelManager binds this name to the base class's coroutine function, which
    # would skip the override above when nbclient cleans up after a dead kernel
    cleanup_resources = _async_cleanup_resources


class SandboxedExecute(Execute):
    """nbgrader's Execute with kernels in the sandbox, in a private folder, and the
    notebook's outputs capped.

    ``kernel_files(resources)`` (config) names what the grader exchanges with the kernel:
    ``(inputs, outputs)``, ``{name: file}`` copied into the kernel's folder before it
    starts and the names read back after it stopped, into
    ``resources["autograder"]["kernel_files"]`` as :class:`LeftFile` (for
    :mod:`autograder.checks`)."""

    kernel_files = Any(None, allow_none=True, help="callable(resources) -> (inputs, outputs)").tag(config=True)
    max_left_file = Integer(MAX_LEFT_FILE, help="bytes read back of one file the kernel left").tag(config=True)

    def __init__(self, *args, **kwargs):
        if enabled():
            kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(*args, **kwargs)
        # a cell that floods its output finishes before the flood is read: give the
        # reader time to drain (and drop) it instead of failing the notebook after 4 s
        self.iopub_timeout = max(self.iopub_timeout, 120)
        self._output_budget = Limits.from_env().output
        self._output_dropped = False

    def preprocess(self, nb, resources=None, km=None):
        resources = resources if resources is not None else {}
        metadata = resources.setdefault("metadata", {})
        notebook_folder = Path(metadata.get("path") or os.getcwd())
        inputs, outputs = self.kernel_files(resources) if self.kernel_files else ({}, [])
        if not enabled():
            self.log.warning("%s=off: the kernel runs without any isolation or limits", SANDBOX_ENV)
            report({"enforcement": "none"})
        left: dict[str, LeftFile] = {}
        resources.setdefault("autograder", {})["kernel_files"] = left
        private = runtime.new_folder()
        try:
            work = private / "work"
            stage_kernel_folder(notebook_folder, work, inputs)
            metadata["path"] = str(work)
            try:
                return super().preprocess(nb, resources, km)
            finally:  # the kernel has stopped: read back what the grader asked for, nothing else
                metadata["path"] = str(notebook_folder)
                left.update({name: read_left_file(work / name, self.max_left_file) for name in outputs})
        finally:
            runtime.remove(private)

    def process_message(self, msg, cell, cell_index):
        """Count every message that carries output (streams, displays and their updates,
        results, errors, widget state) against the notebook's output budget; past it, drop
        them (errors are kept, shortened: grading needs them)."""
        msg_type = msg.get("msg_type", "")
        if msg_type in OUTPUT_MESSAGES:
            self._output_budget -= _size(msg.get("content")) + sum(len(b) for b in msg.get("buffers") or [])
            if self._output_budget < 0:
                if not self._output_dropped:  # say it once, where it happened
                    self._output_dropped = True
                    cell.outputs.append(NotebookNode(
                        output_type="stream", name="stderr",
                        text="[autograder] output limit reached: later output of this notebook was dropped\n"))
                if msg_type != "error":
                    return None
                content = msg["content"]
                content["evalue"] = str(content.get("evalue", ""))[:2000]
                content["traceback"] = [str(line)[:2000] for line in content.get("traceback", [])[-20:]]
        return super().process_message(msg, cell, cell_index)


OUTPUT_MESSAGES = frozenset({"stream", "display_data", "update_display_data", "execute_result", "error",
                             "comm_open", "comm_msg"})


def _size(value) -> int:
    """Roughly the bytes of a message's content (strings and containers, recursively)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    return 8


class SandboxedKernelClient(AsyncKernelClient):
    """The client's sockets refuse any single message over :data:`MAX_MESSAGE` bytes
    (``zmq.MAXMSGSIZE``), so a kernel cannot make nbgrader hold gigabytes at once."""

    def _context_default(self) -> zmq.asyncio.Context:
        self._created_context = True
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        return context
