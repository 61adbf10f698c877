"""``python -m autograder.sandbox_launcher SPEC -- CMD...``: the first process of a sandboxed
kernel. It joins the kernel's cgroup, sets its rlimits and sends its stdout/stderr to a
file, then execs CMD (bubblewrap), so everything in the sandbox inherits the limits.
Kept free of heavy imports: it runs once per kernel start."""

from __future__ import annotations

import json
import os
import resource
import sys


def enter_limits(spec: dict) -> None:
    """In the kernel's launcher, before exec: join the cgroup, set rlimits, redirect stdio."""
    for procs in spec.get("cgroup_procs", []):
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_size"], spec["file_size"]))
    if spec.get("rlimits", not spec.get("cgroup_procs")):  # the fallback without a cgroup
        if os.getuid() != 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (spec["processes"], spec["processes"]))
        if not spec.get("gpu"):  # RLIMIT_AS breaks CUDA's address-space reservations
            resource.setrlimit(resource.RLIMIT_AS, (2 * spec["memory"], 2 * spec["memory"]))
    log = os.open(spec["stdio"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def launcher_main(argv: list[str]) -> None:
    """``python -m autograder.sandbox_launcher SPEC -- CMD...``: apply the limits, then exec CMD."""
    spec = json.loads(argv[0])
    cmd = argv[argv.index("--") + 1:]
    enter_limits(spec)
    os.execvp(cmd[0], cmd)




if __name__ == "__main__":
    launcher_main(sys.argv[1:])
