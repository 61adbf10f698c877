"""``autograder doctor``: for real on this host, without bwrap, with a password in the
gradebook URL, and on a fake cgroup v2 tree that leaves only the rlimit fallback."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import doctor, gradebook, limits

ROOT = Path(__file__).resolve().parents[1]
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed here")


@pytest.fixture(scope="module")
def gradebook_url(tmp_path_factory) -> str:
    from nbgrader.api import Gradebook

    url = f"sqlite:///{tmp_path_factory.mktemp('gradebook') / 'gradebook.db'}"
    with pytest.MonkeyPatch.context() as m:  # nbgrader runs alembic from PATH when it creates a gradebook
        m.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
        with Gradebook(url) as gb:
            gb.add_student("s1")
    return url


def doctor_output(*args, **kwargs) -> tuple[int, str]:
    out = io.StringIO()
    return doctor.run_doctor(*args, out=out, **kwargs), out.getvalue()


def fake_v2_without_delegation(tmp_path: Path) -> dict:
    """limits.probe options for a v2 host whose cgroup has no memory/pids delegated, no systemd."""
    root, ours = tmp_path / "cgroup", "user.slice/user-1000.slice/session-2.scope"
    (root / ours).mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / ours / "cgroup.controllers").write_text("cpu io\n")
    (root / ours / "cgroup.subtree_control").write_text("")
    (root / ours / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (tmp_path / "self_cgroup").write_text(f"0::/{ours}\n")
    return {"cgroup_root": root, "self_cgroup": tmp_path / "self_cgroup", "systemd_run": None, "uid": 1000}


@needs_bwrap
def test_doctor_for_real(gradebook_url):
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "doctor", "--db", gradebook_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines() if line.split()[:1] in (["OK"], ["WARN"])}
    for name in ("bubblewrap", "user-ns", "pid-ns", "net-ns", "cgroups", "kernel-limits", "gpus", "gradebook"):
        assert name in lines, done.stdout
    assert "bubblewrap 0." in lines["bubblewrap"]
    kind = limits.probe()["kind"]
    assert lines["kernel-limits"].split()[:2] == ["OK" if kind != "rlimit" else "WARN", "kernel-limits"]
    assert kind in lines["kernel-limits"]
    if Path("/sys/fs/cgroup/memory").is_dir() and os.getuid() == 0:  # this project's machines
        assert "cgroup-v1" in lines["kernel-limits"] and "cgroup v1" in lines["cgroups"]
    assert "1 student(s)" in lines["gradebook"]
    assert done.stdout.rstrip().endswith("ok: grading can be sandboxed here")


def test_doctor_without_bwrap_fails(monkeypatch, tmp_path, gradebook_url):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rc, out = doctor_output(gradebook_url)
    assert rc == 1
    assert "FAIL  bubblewrap    bwrap not found on PATH: student kernels cannot be sandboxed" in out
    assert "apt-get install bubblewrap" in out
    assert "UNSAFE" in out


def test_doctor_masks_the_gradebook_password(capsys):
    url = "postgresql+psycopg2://grader:s3cret-pw@127.0.0.1:1/gradebook"
    rc, out = doctor_output(url)
    assert rc == 1  # unreachable (no driver or nothing listening): unsafe
    gradebook = [line for line in out.splitlines() if "gradebook" in line.split()[1:2]][0]
    assert gradebook.startswith("FAIL") and "grader:***@127.0.0.1:1/gradebook" in gradebook
    rc, as_json = doctor_output(url, as_json=True)
    report = json.loads(as_json)
    assert rc == 1 and report["ok"] is False
    assert "s3cret-pw" not in out + as_json + capsys.readouterr().out


@pytest.mark.parametrize("url, masked", [
    ("postgresql://u:p%40ss@db.example.org:5432/gb", "postgresql://u:***@db.example.org:5432/gb"),
    ("mysql+pymysql://root:hunter2@localhost/gb", "mysql+pymysql://root:***@localhost/gb"),
    ("sqlite:////srv/course/gradebook.db", "sqlite:////srv/course/gradebook.db"),
    ("not a url://x:secret@h/", "not a url://x:***@h/"),
])
def test_mask_url(url, masked):
    assert gradebook.mask_url(url) == masked


def test_doctor_strict_fails_on_the_rlimit_fallback(tmp_path, gradebook_url):
    options = fake_v2_without_delegation(tmp_path)
    rc, out = doctor_output(gradebook_url, strict=True, limits_options=options)
    line = [line for line in out.splitlines() if "kernel-limits" in line][0]
    assert line.startswith("FAIL  kernel-limits rlimit fallback")
    assert "does NOT bind root" in line and "NOT applied to GPU kernels" in line
    assert "not delegated" in line
    assert rc == 1
    rc, out = doctor_output(gradebook_url, limits_options=options)  # not strict: a loud warning only
    assert "WARN  kernel-limits rlimit fallback" in out
    assert rc == (1 if "FAIL" in out else 0)
    assert "cgroup v2, controllers: cpu io;" in out


def test_doctor_json(tmp_path, gradebook_url):
    rc, out = doctor_output(gradebook_url, as_json=True, limits_options=fake_v2_without_delegation(tmp_path))
    report = json.loads(out)
    names = [c["name"] for c in report["checks"]]
    assert names[-4:] == ["cgroups", "kernel-limits", "gpus", "gradebook"]
    limits_check = report["checks"][names.index("kernel-limits")]
    assert limits_check["status"] == "WARN" and limits_check["details"]["kind"] == "rlimit"
    assert report["ok"] is (rc == 0)


def test_gpu_checks_use_the_real_mapping_of_gpus_to_device_nodes(monkeypatch, tmp_path):
    from autograder import gpus

    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidiactl", "nvidia-uvm", "nvidia3"):  # GPU 1 is minor 3; GPU 0's node is missing
        (dev / name).write_text("")
    found = [gpus.Gpu(0, "GPU-aaaa", "00000000:01:00.0", 0, name="Fake"),
             gpus.Gpu(1, "GPU-bbbb", "00000000:41:00.0", 3, name="Fake")]
    monkeypatch.setattr(gpus, "list_gpus", lambda **kwargs: found)
    (check,) = doctor.check_gpus(dev=dev, proc=tmp_path)
    assert check.status == "WARN" and "pinned to GPU-aaaa would see no GPU" in check.message
    assert check.details["nodes"]["GPU-bbbb"] == [str(dev / "nvidiactl"), str(dev / "nvidia-uvm"), str(dev / "nvidia3")]
    (dev / "nvidia0").write_text("")
    (check,) = doctor.check_gpus(dev=dev, proc=tmp_path)
    assert check.status == "OK" and check.message.startswith("2 GPU(s): 0 Fake GPU-aaaa:")
    monkeypatch.setattr(gpus, "list_gpus", lambda **kwargs: [])
    assert doctor.check_gpus()[0].message == "no GPUs: kernels grade on CPU"

