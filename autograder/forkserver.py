"""A fork server for grading workers: one process that has imported nbgrader forks a fresh
child per submission, so no submission pays the interpreter start and nbgrader's imports
(about 2.5 s, a fifth of a short notebook's grading).

The server (``python -m autograder.forkserver``) reads one JSON request a line on stdin and
writes JSON events on stdout::

    {"id": 1, "args": [...], "cwd": "...", "env": {...}, "log": "..."}   request
    {"id": 1, "pid": 4242}                                                 forked
    {"id": 1, "returncode": 0}                                             exited (negative: signal)

Each child starts a session of its own (the harness kills its whole tree at a timeout), dies
with the server, which dies with the harness (``PR_SET_PDEATHSIG``), and runs
:func:`autograder.worker.main` with its own working directory, environment and log, exactly
as ``python -m autograder.worker`` would. The server itself never starts a thread, so forking
it is safe. :class:`ForkServer` is the harness's side, shared by its worker threads.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

WARM_MODULES = ("nbgrader.apps", "nbgrader.converters", "nbgrader.preprocessors", "nbconvert", "jupyter_client")


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_child(request: dict, server: int) -> int:
    """In the forked child: become the worker the request describes, return its exit status."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh Python: the server
    # ignores SIGINT, and an ignored signal stays ignored across exec, in the kernels too
    die_with_parent()
    if os.getppid() != server:  # the server died before the line above
        return 1
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    random.seed()  # not the server's state, shared by every child
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # also closes the server's request pipe in the child
    os.dup2(log, 1)  # and its event pipe
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    from autograder import worker

    return worker.main(request["args"])


def _fork(request: dict) -> int:
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _run_child(request, server)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The server's loop: fork on each request, report each exit; at end of input, kill
    what is left and exit."""
    for name in WARM_MODULES:
        __import__(name)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness decides when grading stops
    requests = sys.stdin.buffer
    events = sys.stdout
    children: dict[int, int] = {}  # pid -> request id

    def emit(event: dict) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in children:
                emit({"id": children.pop(pid), "returncode": os.waitstatus_to_exitcode(status)})

    pending = b""
    while True:
        ready, _, _ = select.select([requests], [], [], 0.05)
        reap()
        if not ready:
            continue
        chunk = os.read(requests.fileno(), 1 << 16)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            request = json.loads(line)
            pid = _fork(request)
            children[pid] = request["id"]
            emit({"id": request["id"], "pid": pid})
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


class ServerDied(RuntimeError):
    """The fork server is gone: the submissions it was running have no exit status."""


class ForkServer:
    """The harness's side: start workers through the server from any thread.

    ``run(args, cwd, env, log)`` returns a :class:`Worker` with the child's pid and its exit
    status to wait for. A server that died is started again on the next call. ``cwd`` is the
    server's own working directory (first on its ``sys.path``, as for ``python -m``)."""

    def __init__(self, cwd: Path) -> None:
        self._cwd = cwd
        self._lock = threading.Lock()  # the server and the pending requests
        self._write_lock = threading.Lock()  # a request is one whole line
        self._proc: subprocess.Popen | None = None
        self._next_id = 0
        self._pending: dict[int, tuple[Future, Future, subprocess.Popen]] = {}

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autograder.forkserver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=self._cwd, start_new_session=True, preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._read_events, args=(proc,), daemon=True, name="forkserver-events").start()
        return proc

    def _read_events(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            event = json.loads(line)
            with self._lock:
                started, exited, _ = self._pending[event["id"]]
                if "pid" in event:
                    started.set_result(event["pid"])
                else:
                    del self._pending[event["id"]]
                    exited.set_result(event["returncode"])
        proc.wait()
        with self._lock:  # the server died: nothing it ran will report
            for request_id, (started, exited, owner) in list(self._pending.items()):
                if owner is proc:
                    del self._pending[request_id]
                    for future in (started, exited):
                        if not future.done():
                            future.set_exception(ServerDied(f"the fork server exited ({proc.returncode})"))

    def start(self) -> ForkServer:
        """Start the server now (its imports then overlap with the caller's other work).
        The server dies with the thread that starts it (``PR_SET_PDEATHSIG``): start it
        from a thread that outlives the batch; a restart from a grader thread is fine too,
        as grader threads live until the batch ends."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
        return self

    def run(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> Worker:
        self.start()
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            started, exited = Future(), Future()
            proc = self._proc
            self._pending[request_id] = (started, exited, proc)
        request = {"id": request_id, "args": args, "cwd": str(cwd), "env": env, "log": str(log)}
        try:
            with self._write_lock:  # not under _lock: the event reader must never wait on a write
                proc.stdin.write((json.dumps(request) + "\n").encode())
                proc.stdin.flush()
        except OSError as error:
            with self._lock:
                self._pending.pop(request_id, None)
            raise ServerDied(f"the fork server is gone: {error}") from None
        return Worker(started.result(), exited)

    def close(self) -> None:
        """End the server (it kills any child still running) and wait for it."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.wait()


class Worker:
    """One forked worker: its ``pid`` (a session leader) and its exit status."""

    def __init__(self, pid: int, exited: Future) -> None:
        self.pid = pid
        self._exited = exited

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; raises ``concurrent.futures.TimeoutError`` after ``timeout`` s."""
        return self._exited.result(timeout=timeout)

    def kill(self) -> None:
        """Kill the worker and everything it started (kernels run in sessions of their own),
        and wait for it."""
        import psutil

        try:
            family = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.wait()


if __name__ == "__main__":
    serve()
