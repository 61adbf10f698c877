"""Memory and process limits for one sandboxed kernel, on the hosts instructors run.

:func:`create` picks the first of these that works here and returns a :class:`KernelLimits`:

1. ``cgroup-v1``: a ``memory`` and a ``pids`` group below our own (this project's machines);
2. ``cgroup-v2``: a group in the subtree delegated to us (our cgroup lists ``memory`` and
   ``pids`` in ``cgroup.controllers``). v2 enables controllers for children only in a cgroup
   without processes, so ours' processes first move to a leaf, ``autograder-supervisor``
   (as runc and crun do in a delegated cgroup);
3. systemd (``cgroup-v2`` or ``cgroup-v1`` by the host): ``systemd-run --scope`` with
   ``MemoryMax``/``TasksMax`` wraps the command; in scope mode systemd-run execs the command
   itself, so the kernel stays our descendant. ``--user`` when not root, which needs the
   user manager to have ``memory`` and ``pids`` delegated;
4. ``rlimit``: no cgroup; the launcher applies ``RLIMIT_AS``/``RLIMIT_NPROC`` instead (weaker:
   ``RLIMIT_NPROC`` does not bind root, ``RLIMIT_AS`` is not applied to GPU kernels).

An OSError on the way falls through to the next option and leaves nothing behind. Group
names carry the owner's pid and start time, so :func:`reap_stale` removes only what a dead
(say SIGKILLed) harness left, never the groups of one that still runs.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from autograder.runtime import start_time

PREFIX = "autograder-"
SUPERVISOR = "autograder-supervisor"  # v2: the leaf our own processes move to
NAME = re.compile(r"^autograder-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]+(?:\.scope)?$")
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
KILL_WAIT = 2.0  # seconds kill_all keeps killing before it gives up
_systemd_ok: dict[tuple[str, bool], str] = {}  # (systemd-run, --user) -> "" if it works, else why not


# ----------------------------------------------------------------------------- helpers
def owner_alive(pid: int, start: int) -> bool:
    """Whether process ``pid`` started at ``start`` still runs (a reused pid does not count)."""
    return start_time(pid) == start


def group_name(owner_pid: int) -> str:
    return f"{PREFIX}{owner_pid}-{start_time(owner_pid) or 0}-{secrets.token_hex(4)}"


def _write(path: Path, value: object, append: bool = False) -> None:
    """One write of ``value`` (cgroupfs takes one value per write); tests record these calls."""
    with open(path, "a" if append else "w") as fh:
        fh.write(str(value))


def _mkdir(path: Path, exist_ok: bool = False) -> None:
    """mkdir of a cgroup (the kernel adds its control files); tests of fake trees replace this."""
    path.mkdir(exist_ok=exist_ok)


def _rmdir(path: Path) -> None:
    """rmdir of a cgroup (its control files go with it); tests of fake trees replace this."""
    os.rmdir(path)


def _own_cgroups(self_cgroup: Path) -> dict[str, str]:
    """Controller -> our path from /proc/self/cgroup; ``""`` is the v2 (``0::``) path."""
    own: dict[str, str] = {}
    for line in self_cgroup.read_text().splitlines():
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and not controllers:
            own[""] = path
        for controller in controllers.split(","):
            if controller:
                own[controller] = path
    return own


def _below(root: Path, path: str) -> Path:
    """Our cgroup folder; without a cgroup namespace a container's /proc/self/cgroup shows the
    host's path while its own cgroup is mounted at the root: then the root is ours."""
    folder = root / path.lstrip("/")
    return folder if folder.is_dir() else root


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _pids(groups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for group in groups:
        try:
            pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            pass
    return {p for p in pids if _alive(p)}


def _kill_groups(groups: list[Path]) -> None:
    """SIGKILL every process in ``groups`` (v2: ``cgroup.kill`` first) until none is left."""
    deadline = time.monotonic() + KILL_WAIT
    kill_files = [g / "cgroup.kill" for g in groups if (g / "cgroup.kill").exists()]  # kernel >= 5.14
    while (pids := _pids(groups)) and time.monotonic() < deadline:
        if kill_files:  # atomic, and catches processes forked meanwhile
            for path in kill_files:
                try:
                    _write(path, 1)
                except OSError:
                    pass
            kill_files = []
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.02)


def _remove_dir(path: Path) -> bool:
    """Remove cgroup ``path`` and any groups below it; False where one remains."""
    try:
        children = [c for c in path.iterdir() if c.is_dir()]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    ok = all(_remove_dir(c) for c in children)
    for _ in range(50):  # v1 answers EBUSY while the last tasks exit
        try:
            _rmdir(path)
            return ok
        except FileNotFoundError:
            return ok
        except OSError as err:
            if err.errno != errno.EBUSY:
                return False
            time.sleep(0.02)
    return False


def _systemctl(systemd_run: str) -> str | None:
    sibling = Path(systemd_run).with_name("systemctl")
    return str(sibling) if os.access(sibling, os.X_OK) else shutil.which("systemctl")


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------- one kernel
class KernelLimits:
    """One kernel's enforcement: the cgroup(s) made for it, or a systemd scope, or none (rlimit).

    ``procs_files`` are what the kernel's launcher writes its pid into before exec;
    :meth:`wrap` is the command to exec (systemd-run in front for a scope)."""

    def __init__(self, kind: str, groups: list[Path] | None = None, *, unit: str | None = None,
                 systemd_run: str | None = None, user: bool = False, uid: int = 0, memory: int = 0,
                 processes: int = 0, cgroup_root: Path = CGROUP_ROOT):
        self.kind = kind
        self.groups = list(groups or [])
        self.procs_files = [str(g / "cgroup.procs") for g in self.groups]
        self.unit = unit  # systemd scope, e.g. autograder-<pid>-<start>-<hex>.scope
        self.systemd_run = systemd_run
        self.user = user
        self.uid = uid
        self.memory = memory
        self.processes = processes
        self.cgroup_root = cgroup_root
        self._scope: list[Path] = []
        self._removed = False

    @property
    def rlimits(self) -> bool:
        """Whether the launcher must fall back to RLIMIT_AS/RLIMIT_NPROC (no cgroup)."""
        return self.kind == "rlimit"

    def describe(self) -> str:
        if self.unit:
            return f"{self.kind} (systemd scope {self.unit}{', --user' if self.user else ''})"
        return f"{self.kind} ({', '.join(map(str, self.groups))})" if self.groups else self.kind

    def __repr__(self) -> str:
        return f"KernelLimits({self.describe()})"

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd``, or systemd-run exec'ing it in a scope. ``--user`` finds the user's manager by
        ``$XDG_RUNTIME_DIR``, which a kernel's allow-listed environment lacks: it is set for
        systemd-run only and unset again before ``cmd``."""
        if not self.unit:
            return list(cmd)
        scope = [self.systemd_run, *(["--user"] if self.user else []), "--scope", "--quiet", "--collect",
                 f"--unit={self.unit}", "-p", f"MemoryMax={self.memory}", "-p", "MemorySwapMax=0",
                 "-p", f"TasksMax={self.processes}", "--"]
        if self.user:
            env = shutil.which("env") or "/usr/bin/env"
            runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{self.uid}"
            return [env, f"XDG_RUNTIME_DIR={runtime}", *scope, env, "-u", "XDG_RUNTIME_DIR", *cmd]
        return [*scope, *cmd]

    def _systemctl(self, *args: str) -> subprocess.CompletedProcess | None:
        systemctl = _systemctl(self.systemd_run or "systemd-run")
        if systemctl is None:
            return None
        return _run([systemctl, *(["--user"] if self.user else []), *args], timeout=15)

    def _groups(self) -> list[Path]:
        """Our groups, or the scope's cgroup folders (asked of systemd once the scope exists)."""
        if self.groups or not self.unit or self._removed:
            return self.groups
        if not self._scope:
            shown = self._systemctl("show", "-p", "ControlGroup", "--value", self.unit)
            path = shown.stdout.strip().lstrip("/") if shown and shown.returncode == 0 else ""
            if path:
                folders = [self.cgroup_root / path] + [self.cgroup_root / c / path for c in ("memory", "pids")]
                self._scope = [f for f in folders if (f / "cgroup.procs").exists()]
        return self._scope

    def oom_killed(self) -> bool:
        """Whether the kernel's memory limit killed a process. For a scope this is known only
        while systemd still has it (``--collect`` unloads it when it ends)."""
        for group in self._groups():
            for name in ("memory.events", "memory.oom_control"):  # v2, v1 (kernel >= 4.13)
                try:
                    text = (group / name).read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value or 0) > 0:
                        return True
        if self.unit and not self._removed:
            result = self._systemctl("show", "-p", "Result", "--value", self.unit)
            return bool(result and result.stdout.strip() == "oom-kill")
        return False

    def kill_all(self) -> None:
        groups = self._groups()
        if groups:
            _kill_groups(groups)
        elif self.unit and not self._removed:
            self._systemctl("kill", "--signal=SIGKILL", self.unit)

    def remove(self) -> None:
        if self._removed:
            return
        try:
            self.kill_all()
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass
        for group in reversed(self.groups):
            _remove_dir(group)
        if self.unit:
            self._systemctl("stop", self.unit)  # normally gone already (--collect)
        self._removed = True
        self.groups, self.procs_files, self._scope = [], [], []


# ----------------------------------------------------------------------------- the options
class _Unusable(Exception):
    """This option does not apply here; the message says why."""


def _make_v1(name: str, memory: int, processes: int, root: Path, own: dict[str, str]) -> KernelLimits:
    if (root / "cgroup.controllers").exists():
        raise _Unusable("the host mounts cgroup v2 only")
    missing = [c for c in ("memory", "pids") if c not in own or not (root / c).is_dir()]
    if missing:
        raise _Unusable(f"no cgroup v1 {' or '.join(missing)} hierarchy")
    groups = [_below(root / c, own[c]) / name for c in ("memory", "pids")]
    made: list[Path] = []
    try:
        for group in groups:
            _mkdir(group)
            made.append(group)
        _write(groups[0] / "memory.limit_in_bytes", memory)
        if (groups[0] / "memory.memsw.limit_in_bytes").exists():  # only with swap accounting
            _write(groups[0] / "memory.memsw.limit_in_bytes", memory)
        _write(groups[1] / "pids.max", processes)
    except OSError as err:
        for group in reversed(made):
            _remove_dir(group)
        raise _Unusable(f"cannot create a group below {groups[0].parent} ({err.strerror or err})") from err
    return KernelLimits("cgroup-v1", groups, memory=memory, processes=processes, cgroup_root=root)


def _v2_base(root: Path, own: dict[str, str]) -> Path:
    """Our v2 cgroup: the parent of the supervisor leaf once we moved there."""
    path = own[""].rstrip("/")
    return _below(root, path.rpartition("/")[0] if path.rpartition("/")[2] == SUPERVISOR else path)


def _enable_controllers(base: Path) -> None:
    """``+memory +pids`` in ``base``'s subtree_control, moving its processes to a leaf first
    (v2's no-internal-processes rule; the root cgroup, without ``cgroup.type``, is exempt)."""
    if {"memory", "pids"} <= set((base / "cgroup.subtree_control").read_text().split()):
        return
    leaf, moved = base / SUPERVISOR, []
    existed = leaf.exists()
    try:
        if (base / "cgroup.type").exists():
            for _ in range(10):  # processes forked meanwhile: move them too
                pids = [p for p in (base / "cgroup.procs").read_text().split() if p not in moved]
                if not pids:
                    break
                _mkdir(leaf, exist_ok=True)
                for pid in pids:
                    try:
                        _write(leaf / "cgroup.procs", pid, append=True)
                    except ProcessLookupError:  # exited meanwhile
                        pass
                    moved.append(pid)
        _write(base / "cgroup.subtree_control", "+memory +pids")
    except OSError:
        for pid in moved:  # put things back as they were
            try:
                _write(base / "cgroup.procs", pid, append=True)
            except OSError:
                pass
        if not existed:
            _remove_dir(leaf)
        raise


def _make_v2(name: str, memory: int, processes: int, root: Path, own: dict[str, str]) -> KernelLimits:
    if not (root / "cgroup.controllers").exists():
        raise _Unusable("not a cgroup v2 host")
    if "" not in own:
        raise _Unusable("no cgroup v2 entry (0::) in /proc/self/cgroup")
    base = _v2_base(root, own)
    try:
        controllers = set((base / "cgroup.controllers").read_text().split())
    except OSError as err:
        raise _Unusable(f"cannot read {base}/cgroup.controllers ({err.strerror})") from err
    if not {"memory", "pids"} <= controllers:
        raise _Unusable(f"memory and pids are not delegated to our cgroup {base} "
                        f"(its cgroup.controllers: {' '.join(sorted(controllers)) or 'none'})")
    group = base / name
    try:
        _enable_controllers(base)
        _mkdir(group)
    except OSError as err:
        raise _Unusable(f"cannot create a group below {base} ({err.strerror or err})") from err
    try:
        _write(group / "memory.max", memory)
        if (group / "memory.swap.max").exists():
            _write(group / "memory.swap.max", 0)
        _write(group / "pids.max", processes)
    except OSError as err:
        _remove_dir(group)
        raise _Unusable(f"cannot set limits in {group} ({err.strerror or err})") from err
    return KernelLimits("cgroup-v2", [group], memory=memory, processes=processes, cgroup_root=root)


def _systemd_works(systemd_run: str, user: bool) -> str:
    """"" when ``systemd-run --scope`` with limits runs a command here, else why not (cached)."""
    key = (systemd_run, user)
    if key not in _systemd_ok:
        unit = f"{PREFIX}probe-{os.getpid()}-{secrets.token_hex(4)}.scope"
        done = _run([systemd_run, *(["--user"] if user else []), "--scope", "--quiet", "--collect",
                     f"--unit={unit}", "-p", "MemoryMax=64M", "-p", "TasksMax=16", "--",
                     shutil.which("true") or "/bin/true"])
        if done is None:
            _systemd_ok[key] = f"{systemd_run} did not run"
        elif done.returncode != 0:
            _systemd_ok[key] = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        else:
            _systemd_ok[key] = ""
    return _systemd_ok[key]


def _make_systemd(name: str, memory: int, processes: int, root: Path, systemd_run: str | None,
                  uid: int) -> KernelLimits:
    path = shutil.which(systemd_run) if systemd_run else None
    if path is None:
        raise _Unusable("systemd-run not found")
    user = uid != 0
    v2 = (root / "cgroup.controllers").exists()
    if user:
        if not v2:
            raise _Unusable("cgroup v1 host: systemd cannot delegate memory limits to a user")
        manager = root / f"user.slice/user-{uid}.slice/user@{uid}.service"
        try:
            delegated = set((manager / "cgroup.controllers").read_text().split())
        except OSError:
            delegated = set()
        if not {"memory", "pids"} <= delegated:
            raise _Unusable(f"the user manager {manager} has no memory and pids delegated "
                            "(systemd's Delegate= for user@.service)")
    why = _systemd_works(path, user)
    if why:
        raise _Unusable(f"systemd-run{' --user' if user else ''} --scope fails: {why}")
    return KernelLimits("cgroup-v2" if v2 else "cgroup-v1", unit=f"{name}.scope", systemd_run=path, user=user,
                        uid=uid, memory=memory, processes=processes, cgroup_root=root)


def _plan(memory: int, processes: int, owner_pid: int | None, cgroup_root: Path, self_cgroup: Path,
          systemd_run: str | None, uid: int | None) -> tuple[KernelLimits, list[str]]:
    """The first option that works, and why each earlier one did not."""
    name = group_name(os.getpid() if owner_pid is None else owner_pid)
    uid = os.getuid() if uid is None else uid
    try:
        own = _own_cgroups(self_cgroup)
    except (OSError, ValueError):
        own = {}
    options = [("cgroup-v1", lambda: _make_v1(name, memory, processes, cgroup_root, own)),
               ("cgroup-v2 delegated", lambda: _make_v2(name, memory, processes, cgroup_root, own)),
               ("systemd scope", lambda: _make_systemd(name, memory, processes, cgroup_root, systemd_run, uid))]
    why_not = []
    for label, make in options:
        try:
            return make(), why_not
        except _Unusable as err:
            why_not.append(f"{label}: {err}")
        except OSError as err:  # anything else the kernel refused
            why_not.append(f"{label}: {err}")
    return KernelLimits("rlimit", memory=memory, processes=processes, cgroup_root=cgroup_root), why_not


def create(memory: int, processes: int, *, owner_pid: int | None = None, cgroup_root: Path = CGROUP_ROOT,
           self_cgroup: Path = SELF_CGROUP, systemd_run: str | None = "systemd-run",
           uid: int | None = None) -> KernelLimits:
    """Limits for one kernel: ``memory`` bytes (no swap) and ``processes`` tasks.

    ``owner_pid`` (default: this process) names the group for :func:`reap_stale`;
    ``systemd_run`` is looked up on PATH (None: never use systemd); ``uid`` defaults to ours."""
    return _plan(memory, processes, owner_pid, Path(cgroup_root), Path(self_cgroup), systemd_run, uid)[0]


# ----------------------------------------------------------------------------- housekeeping
def _bases(cgroup_root: Path, self_cgroup: Path) -> list[Path]:
    try:
        own = _own_cgroups(self_cgroup)
    except (OSError, ValueError):
        return []
    if (cgroup_root / "cgroup.controllers").exists():
        return [_v2_base(cgroup_root, own)] if "" in own else []
    return [_below(cgroup_root / c, own[c]) for c in ("memory", "pids") if c in own and (cgroup_root / c).is_dir()]


def reap_stale(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP,
               systemd_run: str | None = "systemd-run", uid: int | None = None) -> list[str]:
    """Remove the groups (and systemd scopes) of owners that no longer run: kill their
    processes, rmdir. Returns what was removed. Never touches a live owner's groups."""
    cgroup_root, removed = Path(cgroup_root), []
    for base in _bases(cgroup_root, Path(self_cgroup)):
        try:
            children = sorted(c for c in base.iterdir() if c.is_dir())
        except OSError:
            continue
        for child in children:
            match = NAME.match(child.name)
            if match and not owner_alive(int(match["pid"]), int(match["start"])):
                _kill_groups([child])
                if _remove_dir(child):
                    removed.append(str(child))
    path = shutil.which(systemd_run) if systemd_run else None
    systemctl = _systemctl(path) if path else None
    if systemctl:
        user = ["--user"] if (os.getuid() if uid is None else uid) != 0 else []
        listed = _run([systemctl, *user, "list-units", "--all", "--plain", "--no-legend", "--type=scope",
                       f"{PREFIX}*"], timeout=15)
        for line in listed.stdout.splitlines() if listed and listed.returncode == 0 else []:
            unit = line.split()[0] if line.split() else ""
            match = NAME.match(unit)
            if match and not owner_alive(int(match["pid"]), int(match["start"])):
                _run([systemctl, *user, "kill", "--signal=SIGKILL", unit], timeout=15)
                _run([systemctl, *user, "stop", unit], timeout=15)
                removed.append(unit)
    return removed


def probe(memory: int = 64 * 2**20, processes: int = 64, *, cgroup_root: Path = CGROUP_ROOT,
          self_cgroup: Path = SELF_CGROUP, systemd_run: str | None = "systemd-run",
          uid: int | None = None) -> dict:
    """What this host can enforce, for ``autograder doctor``. It really creates (and removes)
    a kernel's limits, so ``kind`` is what :func:`create` picks; on a v2 host that may move
    our processes to the supervisor leaf, as grading would."""
    cgroup_root, self_cgroup = Path(cgroup_root), Path(self_cgroup)
    try:
        own = _own_cgroups(self_cgroup)
    except (OSError, ValueError):
        own = {}
    info: dict = {"own_cgroup": own, "systemd_run": shutil.which(systemd_run) if systemd_run else None}
    if (cgroup_root / "cgroup.controllers").exists():
        info["cgroup_version"] = "v2"
        base = _v2_base(cgroup_root, own) if "" in own else cgroup_root
        info["cgroup"] = str(base)
        try:
            info["controllers"] = (base / "cgroup.controllers").read_text().split()
            info["subtree_control"] = (base / "cgroup.subtree_control").read_text().split()
        except OSError:
            info["controllers"], info["subtree_control"] = [], []
        info["delegated"] = {"memory", "pids"} <= set(info["controllers"]) and os.access(base, os.W_OK)
    elif any((cgroup_root / c).is_dir() for c in ("memory", "pids")):
        info["cgroup_version"] = "hybrid" if (cgroup_root / "unified" / "cgroup.controllers").exists() else "v1"
        info["controllers"] = sorted(c for c in ("memory", "pids") if (cgroup_root / c).is_dir())
        info["cgroup"] = {c: str(_below(cgroup_root / c, own[c])) for c in info["controllers"] if c in own}
        info["delegated"] = all(os.access(p, os.W_OK) for p in info["cgroup"].values()) and bool(info["cgroup"])
    else:
        info.update(cgroup_version="none", controllers=[], delegated=False)
    limits, why_not = _plan(memory, processes, None, cgroup_root, self_cgroup, systemd_run, uid)
    info["kind"] = limits.kind
    if limits.unit:
        info["method"] = f"a systemd scope per kernel (systemd-run{' --user' if limits.user else ''} --scope)"
    elif limits.groups:
        info["method"] = f"a group per kernel below {', '.join(str(g.parent) for g in limits.groups)}"
    else:
        info["method"] = "RLIMIT_AS and RLIMIT_NPROC set by the launcher"
    info["why_not"] = why_not
    limits.remove()
    return info
