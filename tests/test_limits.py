"""autograder.limits: cgroup v2 logic on a fake tree, systemd-run through a fake, the
fallback chain, reap_stale, and the real cgroup v1 hierarchy where this machine has one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import limits

MB = 2**20
OURS = "user.slice/user-1000.slice/session-1.scope"
# what the kernel puts in a new v2 cgroup with memory and pids enabled
V2_FILES = {"cgroup.procs": "", "cgroup.type": "domain", "cgroup.controllers": "memory pids",
            "cgroup.subtree_control": "", "cgroup.events": "populated 0\n", "cgroup.kill": "",
            "memory.max": "max", "memory.swap.max": "max", "memory.events": "oom 0\noom_kill 0\n", "pids.max": "max"}


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    limits._systemd_ok.clear()
    monkeypatch.setattr(limits, "KILL_WAIT", 1.0)
    yield
    limits._systemd_ok.clear()


@pytest.fixture
def writes(monkeypatch):
    """Every write limits makes, in order, as (path, value)."""
    log: list[tuple[str, str]] = []
    real = limits._write

    def record(path, value, append=False):
        log.append((str(path), str(value)))
        real(path, value, append)

    monkeypatch.setattr(limits, "_write", record)
    return log


def fake_v2(tmp_path: Path, monkeypatch, *, ours: str = OURS, controllers: str = "cpu io memory pids",
            subtree: str = "", procs: str = "4242\n4243\n") -> tuple[Path, Path, Path]:
    """A cgroup v2 tree in plain files: (root, our cgroup, our /proc/self/cgroup)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids hugetlb\n")
    (root / "cgroup.subtree_control").write_text("cpu io memory pids\n")
    (root / "cgroup.procs").write_text("1\n")
    base = root / ours
    base.mkdir(parents=True, exist_ok=True)
    if base != root:
        for name, text in {**V2_FILES, "cgroup.controllers": controllers, "cgroup.subtree_control": subtree,
                           "cgroup.procs": procs}.items():
            (base / name).write_text(text)
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text(f"0::/{ours}\n")

    def mkdir(path, exist_ok=False):  # the kernel populates a new cgroup
        path.mkdir(exist_ok=exist_ok)
        for name, text in V2_FILES.items():
            if not (path / name).exists():
                (path / name).write_text(text)

    monkeypatch.setattr(limits, "_mkdir", mkdir)
    monkeypatch.setattr(limits, "_rmdir", shutil.rmtree)  # rmdir of a cgroup takes its files along
    return root, base, self_cgroup


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (p.read_text() if p.is_file() else "/") for p in sorted(root.rglob("*"))}


def fake_systemd(tmp_path: Path, *, fail: str = "", control_group: str = "", units: str = "") -> tuple[str, Path]:
    """Fake systemd-run (records argv, then execs the command after ``--``) and systemctl
    (records argv; answers ``show -p ControlGroup`` and ``list-units``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "systemd.log"
    run = bin_dir / "systemd-run"
    run.write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps(["systemd-run", *sys.argv[1:]]) + "\\n")
if {fail!r}:
    print({fail!r}, file=sys.stderr)
    sys.exit(1)
cmd = sys.argv[sys.argv.index("--") + 1:]
os.execvp(cmd[0], cmd)
""")
    ctl = bin_dir / "systemctl"
    ctl.write_text(f"""#!{sys.executable}
import json, sys
with open({str(log)!r}, "a") as fh:
    fh.write(json.dumps(["systemctl", *sys.argv[1:]]) + "\\n")
if "ControlGroup" in sys.argv:
    print({control_group!r})
elif "list-units" in sys.argv:
    print({units!r}, end="")
""")
    run.chmod(0o755)
    ctl.chmod(0o755)
    return str(run), log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


# ----------------------------------------------------------------------------- cgroup v2, fake tree
def test_v2_moves_our_processes_to_a_leaf_before_enabling_controllers(tmp_path, monkeypatch, writes):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch)
    k = limits.create(300 * MB, 77, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=None)
    assert k.kind == "cgroup-v2" and not k.rlimits
    (group,) = k.groups
    assert group.parent == base
    match = limits.NAME.match(group.name)
    assert match and int(match["pid"]) == os.getpid() and int(match["start"]) == limits.start_time(os.getpid())
    assert k.procs_files == [str(group / "cgroup.procs")]
    assert k.wrap(["python", "-c", "1"]) == ["python", "-c", "1"]
    leaf = base / limits.SUPERVISOR
    assert writes == [
        (str(leaf / "cgroup.procs"), "4242"), (str(leaf / "cgroup.procs"), "4243"),  # no internal processes:
        (str(base / "cgroup.subtree_control"), "+memory +pids"),                     # moved first, then enable
        (str(group / "memory.max"), str(300 * MB)), (str(group / "memory.swap.max"), "0"),
        (str(group / "pids.max"), "77")]
    assert (leaf / "cgroup.procs").read_text() == "42424243"  # appended, one pid per write
    assert (group / "memory.max").read_text() == str(300 * MB)
    assert (group / "pids.max").read_text() == "77"


def test_v2_controllers_already_enabled_moves_nothing(tmp_path, monkeypatch, writes):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, subtree="memory pids")
    k = limits.create(100 * MB, 10, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=None)
    assert k.kind == "cgroup-v2"
    assert not (base / limits.SUPERVISOR).exists()
    assert [p for p, _ in writes] == [str(k.groups[0] / f) for f in ("memory.max", "memory.swap.max", "pids.max")]


def test_v2_from_the_supervisor_leaf_creates_siblings(tmp_path, monkeypatch):
    """A second harness process already sits in the leaf: its kernels go next to it, not below."""
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, subtree="memory pids")
    self_cgroup.write_text(f"0::/{OURS}/{limits.SUPERVISOR}\n")
    k = limits.create(100 * MB, 10, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=None)
    assert k.groups[0].parent == base
    (base / limits.SUPERVISOR).mkdir()
    k = limits.create(100 * MB, 10, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=None)
    assert k.groups[0].parent == base


def test_v2_root_cgroup_may_hold_processes(tmp_path, monkeypatch, writes):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, ours="")
    (root / "cgroup.subtree_control").write_text("cpu io\n")
    k = limits.create(100 * MB, 10, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=None)
    assert k.kind == "cgroup-v2" and k.groups[0].parent == root
    assert not (root / limits.SUPERVISOR).exists()
    assert writes[0] == (str(root / "cgroup.subtree_control"), "+memory +pids")


def test_v2_enable_refused_puts_processes_back(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch)
    real = limits._write

    def busy(path, value, append=False):
        if Path(path).name == "cgroup.subtree_control":
            raise OSError(errno.EBUSY, "Device or resource busy")
        real(path, value, append)

    monkeypatch.setattr(limits, "_write", busy)
    k, why_not = limits._plan(100 * MB, 10, None, root, self_cgroup, None, 0)
    assert k.kind == "rlimit"
    assert any("cgroup-v2" in w and "busy" in w for w in why_not)
    assert not (base / limits.SUPERVISOR).exists()
    assert (base / "cgroup.procs").read_text() == "4242\n4243\n42424243"  # written back (appended here)
    assert [p.name for p in base.iterdir() if p.is_dir()] == []


def test_v2_kill_all_uses_cgroup_kill_then_sigkill_and_remove_is_idempotent(tmp_path, monkeypatch, writes):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, subtree="memory pids")
    k = limits.create(100 * MB, 10, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=None)
    group = k.groups[0]
    child = sleeper()
    (group / "cgroup.procs").write_text(f"{child.pid}\n")
    try:
        k.kill_all()  # the fake cgroup.kill kills nothing: kill_all goes on with SIGKILL
        assert child.wait(timeout=10) == -9
    finally:
        child.kill()
    assert (str(group / "cgroup.kill"), "1") in writes
    assert not k.oom_killed()
    (group / "memory.events").write_text("oom 1\noom_kill 1\n")
    assert k.oom_killed()
    k.remove()
    assert not group.exists() and k.procs_files == []
    k.remove()  # again: nothing, no error


def test_v2_not_delegated_falls_back(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, controllers="cpu io")
    before = tree(root)
    k, why_not = limits._plan(100 * MB, 10, None, root, self_cgroup, None, 1000)
    assert k.kind == "rlimit" and k.rlimits and k.procs_files == []
    assert "not delegated" in why_not[1] and "systemd-run not found" in why_not[2]
    assert tree(root) == before


# ----------------------------------------------------------------------------- systemd-run
def test_systemd_scope_wraps_the_command(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, controllers="cpu io")
    run, log = fake_systemd(tmp_path)
    k = limits.create(512 * MB, 99, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=run, uid=0)
    assert k.kind == "cgroup-v2" and k.unit and k.procs_files == [] and not k.rlimits
    assert limits.NAME.match(k.unit) and k.unit.endswith(".scope")
    out = tmp_path / "ran"
    cmd = k.wrap(["sh", "-c", f"echo $0 > {out}", "hello"])
    assert subprocess.run(cmd, timeout=30).returncode == 0
    assert out.read_text() == "hello\n"  # the wrapped command ran
    probe_call, kernel_call = [c for c in calls(log) if c[0] == "systemd-run"]
    assert probe_call[-1].endswith("true")  # create() first checks systemd-run works at all
    assert kernel_call == ["systemd-run", "--scope", "--quiet", "--collect", f"--unit={k.unit}",
                           "-p", f"MemoryMax={512 * MB}", "-p", "MemorySwapMax=0", "-p", "TasksMax=99",
                           "--", "sh", "-c", f"echo $0 > {out}", "hello"]
    assert not any(p.name.startswith(limits.PREFIX) for p in root.rglob("*"))


def test_systemd_user_needs_delegation(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, controllers="cpu io")
    run, log = fake_systemd(tmp_path)
    k, why_not = limits._plan(100 * MB, 10, None, root, self_cgroup, run, 1000)
    assert k.kind == "rlimit" and "no memory and pids delegated" in why_not[-1]
    manager = root / "user.slice/user-1000.slice/user@1000.service"
    manager.mkdir(parents=True)
    (manager / "cgroup.controllers").write_text("cpu memory pids\n")
    k = limits.create(100 * MB, 10, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=run, uid=1000)
    assert k.unit and k.user
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    out = tmp_path / "env"
    cmd = k.wrap(["sh", "-c", f'echo "${{XDG_RUNTIME_DIR-unset}}" > {out}'])
    assert cmd[1:5] == ["XDG_RUNTIME_DIR=/run/user/1000", run, "--user", "--scope"]
    # the kernel's environment has no XDG_RUNTIME_DIR: set for systemd-run only
    assert subprocess.run(cmd, env={"PATH": os.environ["PATH"]}, timeout=30).returncode == 0
    assert out.read_text() == "unset\n"
    assert calls(log)[-1][:2] == ["systemd-run", "--user"]


def test_systemd_failing_falls_back_to_rlimit(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, controllers="cpu io")
    run, log = fake_systemd(tmp_path, fail="Failed to connect to bus: Host is down")
    k, why_not = limits._plan(100 * MB, 10, None, root, self_cgroup, run, 0)
    assert k.kind == "rlimit" and "Host is down" in why_not[-1]


def test_systemd_scope_kill_and_remove(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, controllers="cpu io")
    run, log = fake_systemd(tmp_path, control_group="/system.slice/the.scope")
    k = limits.create(100 * MB, 10, cgroup_root=root, self_cgroup=self_cgroup, systemd_run=run, uid=0)
    scope = root / "system.slice/the.scope"
    scope.mkdir(parents=True)
    child = sleeper()
    (scope / "cgroup.procs").write_text(f"{child.pid}\n")
    (scope / "memory.events").write_text("oom_kill 2\n")
    try:
        assert k.oom_killed()
        k.kill_all()
        assert child.wait(timeout=10) == -9
    finally:
        child.kill()
    k.remove()
    k.remove()
    ctl = [c for c in calls(log) if c[0] == "systemctl"]
    assert ["systemctl", "show", "-p", "ControlGroup", "--value", k.unit] in ctl
    assert ctl.count(["systemctl", "stop", k.unit]) == 1


# ----------------------------------------------------------------------------- the chain
@pytest.mark.parametrize("systemd", ["works", "fails", "absent"])
def test_read_only_tree_falls_through_systemd_to_rlimit(tmp_path, monkeypatch, systemd):
    """A tree we may not write (no delegation; as root, emulated: every write and mkdir is refused)."""
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch)

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(limits, "_write", refuse)
    monkeypatch.setattr(limits, "_mkdir", refuse)
    run = fake_systemd(tmp_path, fail="" if systemd == "works" else "no bus")[0] if systemd != "absent" else None
    before = tree(root)
    k, why_not = limits._plan(100 * MB, 10, None, root, self_cgroup, run, 0)
    assert tree(root) == before  # nothing moved, nothing left behind
    assert "Permission denied" in why_not[1]
    if systemd == "works":
        assert k.unit and k.kind == "cgroup-v2"
    else:
        assert k.kind == "rlimit" and len(why_not) == 3


def test_v1_tree_without_pids_falls_through(tmp_path):
    root = tmp_path / "cgroup"
    (root / "memory").mkdir(parents=True)
    self_cgroup = tmp_path / "self"
    self_cgroup.write_text("4:memory:/\n0::/\n")
    k, why_not = limits._plan(100 * MB, 10, None, root, self_cgroup, None, 0)
    assert k.kind == "rlimit" and "no cgroup v1 pids hierarchy" in why_not[0]
    assert list((root / "memory").iterdir()) == []


# ----------------------------------------------------------------------------- reap_stale
def dead_owner() -> tuple[int, int]:
    child = subprocess.Popen(["true"])
    start = limits.start_time(child.pid)
    child.wait()
    return child.pid, start


def test_reap_stale_removes_only_dead_owners(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, subtree="memory pids")
    me, my_start = os.getpid(), limits.start_time(os.getpid())
    pid, start = dead_owner()
    groups = {"live": f"autograder-{me}-{my_start}-aa", "reused": f"autograder-{me}-{my_start + 1}-bb",
              "dead": f"autograder-{pid}-{start}-cc", "supervisor": limits.SUPERVISOR, "other": "user-thing"}
    for name in groups.values():
        (base / name).mkdir()
        (base / name / "cgroup.procs").write_text("")
    child = sleeper()  # a process the dead harness left in its group
    (base / groups["dead"] / "cgroup.procs").write_text(f"{child.pid}\n")
    try:
        removed = limits.reap_stale(root, self_cgroup, systemd_run=None)
        assert child.wait(timeout=10) == -9
    finally:
        child.kill()
    assert sorted(removed) == sorted([str(base / groups["dead"]), str(base / groups["reused"])])
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == sorted(
        [groups["live"], groups["supervisor"], groups["other"]])


def test_reap_stale_stops_scopes_of_dead_owners(tmp_path, monkeypatch):
    root, base, self_cgroup = fake_v2(tmp_path, monkeypatch, subtree="memory pids")
    pid, start = dead_owner()
    me, my_start = os.getpid(), limits.start_time(os.getpid())
    dead, live = f"autograder-{pid}-{start}-aa.scope", f"autograder-{me}-{my_start}-bb.scope"
    run, log = fake_systemd(tmp_path, units=f"{dead} loaded active running x\n{live} loaded active running y\n")
    assert limits.reap_stale(root, self_cgroup, systemd_run=run, uid=0) == [dead]
    ctl = [c for c in calls(log) if c[0] == "systemctl"]
    assert ["systemctl", "kill", "--signal=SIGKILL", dead] in ctl and ["systemctl", "stop", dead] in ctl
    assert not any(live in c for c in ctl)


# ----------------------------------------------------------------------------- the real v1 hierarchy
@pytest.fixture
def real_v1():
    k, why_not = limits._plan(256 * MB, 16, None, limits.CGROUP_ROOT, limits.SELF_CGROUP, None, None)
    if k.kind != "cgroup-v1":
        k.remove()
        pytest.skip(f"no writable cgroup v1 memory and pids hierarchies here ({'; '.join(why_not)})")
    yield k
    k.remove()


def join(k: limits.KernelLimits, *cmd: str) -> subprocess.Popen:
    """Run ``cmd`` in ``k``'s groups, as the sandbox launcher does: write our pid, then exec."""
    script = 'for f in $FILES; do echo $$ > "$f"; done; exec "$@"'
    return subprocess.Popen(["sh", "-c", script, "sh", *cmd], env={**os.environ, "FILES": " ".join(k.procs_files)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def in_group(k: limits.KernelLimits, pid: int) -> bool:
    return all(str(pid) in Path(f).read_text().split() for f in k.procs_files)


def test_real_v1_group_holds_limits_and_kill_all_empties_it(real_v1):
    memory, pids = real_v1.groups
    assert int((memory / "memory.limit_in_bytes").read_text()) == 256 * MB
    if (memory / "memory.memsw.limit_in_bytes").exists():
        assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == 256 * MB
    assert (pids / "pids.max").read_text().strip() == "16"
    proc = join(real_v1, "sleep", "60")
    try:
        deadline = time.monotonic() + 10
        while not in_group(real_v1, proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert in_group(real_v1, proc.pid)
        real_v1.kill_all()
        assert proc.wait(timeout=10) == -9
    finally:
        proc.kill()
    assert all(Path(f).read_text().split() == [] for f in real_v1.procs_files)
    assert not real_v1.oom_killed()
    real_v1.remove()
    assert not memory.exists() and not pids.exists()
    real_v1.remove()


def test_real_v1_limits_bind(real_v1):
    hog = join(real_v1, sys.executable, "-c", "b = b'x' * (600 * 2**20); print('survived')")
    out, _ = hog.communicate(timeout=60)
    assert hog.returncode == -9 and "survived" not in out
    assert real_v1.oom_killed()
    forks = join(real_v1, sys.executable, "-c", """
import subprocess
procs = []
try:
    for _ in range(40):
        procs.append(subprocess.Popen(["sleep", "30"]))
    print("forked", len(procs))
except OSError as err:
    print("refused after", len(procs), err.errno)
for p in procs:
    p.kill()
""")
    out, err = forks.communicate(timeout=60)
    assert out.startswith("refused after") and int(out.split()[2]) < 16, (out, err)


def test_real_v1_reap_stale(real_v1):
    pid, start = dead_owner()
    name = f"autograder-{pid}-{start}-dead"
    stale = [g.parent / name for g in real_v1.groups]
    for group in stale:
        group.mkdir()
    removed = limits.reap_stale(systemd_run=None)
    assert set(map(str, stale)) <= set(removed)
    assert not any(g.exists() for g in stale)
    assert all(g.exists() for g in real_v1.groups)  # ours: owner alive
