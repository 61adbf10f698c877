"""``autograder doctor``: what this host can enforce before anyone grades on it.

Grading is only as safe as the host lets the sandbox be, and the sandbox degrades
quietly (no cgroup: rlimits; no GPU module: no device filtering). This says so out loud,
one line per check (OK / WARN / FAIL), and exits non-zero where grading would be unsafe:
no working bubblewrap or namespaces, or no gradebook. ``--strict`` also fails on the
rlimit fallback. ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from autograder import limits

OK, WARN, FAIL = "OK", "WARN", "FAIL"
RLIMIT_WARNING = (
    "kernels would run WITHOUT a cgroup: memory and process limits fall back to rlimits, which limit much less. "
    "RLIMIT_AS caps address space, not memory, and is NOT applied to GPU kernels (CUDA reserves huge ranges), so a "
    "GPU notebook's memory is unlimited; RLIMIT_NPROC counts every process of the user and does NOT bind root at "
    "all, so a fork bomb is unlimited as root; nothing kills a kernel's processes as a group. Fix: grade as root "
    "on a cgroup v1 host, delegate memory and pids to the grader's cgroup (cgroup v2), or make "
    "`systemd-run [--user] --scope` work (user@.service with Delegate=memory pids).")


@dataclass
class Check:
    name: str
    status: str
    message: str
    details: dict = field(default_factory=dict)


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:  # noqa: BLE001
        match = re.search(r"//[^/:@]*:([^@/]*)@", url)
        return match.group(1) if match else None


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None


def _why(done: subprocess.CompletedProcess | None) -> str:
    if done is None:
        return "did not run"
    return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]


def check_bwrap() -> list[Check]:
    """bubblewrap, then each namespace the sandbox relies on, tried on its own."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return [Check("bubblewrap", FAIL, "bwrap not found on PATH: student kernels cannot be sandboxed. Install "
                      "bubblewrap (`sudo apt-get install bubblewrap`, `dnf install bubblewrap`).")]
    version = _run([bwrap, "--version"])
    checks = [Check("bubblewrap", OK, f"{bwrap} ({version.stdout.strip() if version else 'version unknown'})",
                    {"path": bwrap})]
    base = [bwrap, "--die-with-parent", "--ro-bind", "/", "/"]
    user = _run([*base[:1], "--unshare-user-try", *base[1:], "readlink", "/proc/self/ns/user"])
    if user is None or user.returncode != 0:
        checks.append(Check("user-ns", FAIL, f"bwrap --unshare-user-try fails: {_why(user)}"))
    elif user.stdout.strip() != os.readlink("/proc/self/ns/user"):
        checks.append(Check("user-ns", OK, "bwrap creates user namespaces"))
    else:
        checks.append(Check("user-ns", WARN, "bwrap runs without a user namespace (setuid bwrap, or disabled: "
                            "kernel.unprivileged_userns_clone / AppArmor); fine as root, else pid/net need it"))
    for flag, name in (("--unshare-pid", "pid-ns"), ("--unshare-net", "net-ns")):
        done = _run([*base[:1], flag, *base[1:], "true"])
        if done is not None and done.returncode == 0:
            checks.append(Check(name, OK, f"bwrap {flag} works"))
        else:
            checks.append(Check(name, FAIL, f"bwrap {flag} fails: {_why(done)}. Enable unprivileged user namespaces "
                                "(sysctl kernel.unprivileged_userns_clone=1, or Ubuntu's AppArmor profile for bwrap)"))
    return checks


def check_limits(strict: bool, limits_options: dict | None = None) -> list[Check]:
    info = limits.probe(**(limits_options or {}))
    controllers = " ".join(info.get("controllers", [])) or "none"
    version = {"hybrid": "v1 (hybrid: v1 controllers, an empty v2 hierarchy)"}.get(info["cgroup_version"],
                                                                                   info["cgroup_version"])
    cgroup = Check("cgroups", OK, f"cgroup {version}, controllers: {controllers}"
                   f"{', delegated to us' if info.get('delegated') else ''}; systemd-run: "
                   f"{info.get('systemd_run') or 'not found'}", {k: v for k, v in info.items() if k != "why_not"})
    why_not = "; ".join(info["why_not"])
    if info["kind"] == "rlimit":
        kind = Check("kernel-limits", FAIL if strict else WARN, f"rlimit fallback: {RLIMIT_WARNING} Why no cgroup: "
                     f"{why_not}", {"kind": "rlimit", "why_not": info["why_not"]})
    else:
        kind = Check("kernel-limits", OK, f"{info['kind']}: memory and processes limited by {info['method']}"
                     f"{f' (not used: {why_not})' if why_not else ''}", {"kind": info["kind"], "why_not": info["why_not"]})
    return [cgroup, kind]


def check_gpus(dev: Path = Path("/dev"), proc: Path = Path("/proc")) -> list[Check]:
    """The GPUs nvidia-smi lists and the device nodes a kernel pinned to each would get."""
    from autograder import gpus

    try:
        found = gpus.list_gpus(proc=proc)
        if not found:
            return [Check("gpus", OK, "no GPUs: kernels grade on CPU")]
        nodes = {gpu.uuid: gpus.device_nodes(gpu.uuid, gpus=found, dev=dev, proc=proc) for gpu in found}
    except Exception as err:  # noqa: BLE001 - a broken GPU stack should not hide the other checks
        return [Check("gpus", WARN, f"GPU detection failed: {type(err).__name__}: {err}")]
    text = "; ".join(f"{gpu.index} {gpu.name or 'GPU'} {gpu.uuid}: {' '.join(nodes[gpu.uuid]) or 'no device node'}"
                     for gpu in found)
    without = [gpu.uuid for gpu in found if not any(n.startswith(str(dev / "nvidia")) and n[len(str(dev / "nvidia")):].isdigit()
                                                     for n in nodes[gpu.uuid])]
    if without:
        return [Check("gpus", WARN, f"{len(found)} GPU(s): {text}; a kernel pinned to {', '.join(without)} would see no "
                      "GPU (its /dev/nvidia<minor> node is missing or its minor number unknown)", {"nodes": nodes})]
    return [Check("gpus", OK, f"{len(found)} GPU(s): {text}", {"nodes": nodes})]


def check_gradebook(db_url: str | None) -> list[Check]:
    from autograder.gradebook import course_db_url, mask_url

    try:
        if db_url is None:
            db_url = course_db_url()
    except Exception as err:  # noqa: BLE001
        return [Check("gradebook", FAIL, f"no gradebook URL: {type(err).__name__}: {err}")]
    shown, secret = mask_url(db_url), _password(db_url)

    def hide(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    if db_url.startswith("sqlite:///"):
        path = Path(db_url.removeprefix("sqlite:///").split("?")[0])
        if not path.exists():  # opening would create it: say so instead
            folder = path.parent
            if folder.is_dir() and os.access(folder, os.W_OK):
                return [Check("gradebook", OK, f"{shown}: does not exist yet, grading creates it", {"url": shown})]
            return [Check("gradebook", FAIL, f"{shown}: does not exist and {folder} is not writable", {"url": shown})]
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])  # nbgrader runs alembic
    try:
        from nbgrader.api import Gradebook

        with Gradebook(db_url) as gb:
            text = f"{shown}: {len(gb.assignments)} assignment(s), {len(gb.students)} student(s)"
    except Exception as err:  # noqa: BLE001 - whatever the driver raises
        first = (str(err).strip().splitlines() or [""])[0]
        return [Check("gradebook", FAIL, hide(f"{shown} unreachable: {type(err).__name__}: {first}"), {"url": shown})]
    finally:
        os.environ["PATH"] = path
    return [Check("gradebook", OK, hide(text), {"url": shown})]


def run_checks(db_url: str | None = None, strict: bool = False, limits_options: dict | None = None) -> list[Check]:
    return [*check_bwrap(), *check_limits(strict, limits_options), *check_gpus(), *check_gradebook(db_url)]


def run_doctor(db_url: str | None = None, strict: bool = False, as_json: bool = False, *,
               limits_options: dict | None = None, out: TextIO | None = None) -> int:
    """Print the checks; 1 when grading here would be unsafe (any FAIL), else 0.
    ``limits_options`` go to :func:`autograder.limits.probe` (tests point it at fake trees)."""
    out = out or sys.stdout
    checks = run_checks(db_url, strict, limits_options)
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        json.dump({"ok": not failed, "strict": strict, "checks": [asdict(c) for c in checks]}, out, indent=2,
                  default=str)
        out.write("\n")
    else:
        for c in checks:
            out.write(f"{c.status:<4}  {c.name:<13} {c.message}\n")
        out.write("grading here is UNSAFE: fix the FAIL lines above\n" if failed else "ok: grading can be sandboxed here\n")
    return 1 if failed else 0
