"""Grading on a Dask cluster (autograder/cluster.py): a real ``dask scheduler`` and real workers
started by ``autograder worker`` on localhost grade a class through ``autograder grade --cluster``.

One worker is killed mid-batch and its task is rescheduled: every student is graded exactly
once, and the gradebook holds the grades the local pool gives the same notebooks. A worker
whose grading rules differ (here: other secrets) is retired before the batch starts. A task
that kills its workers ends with status ``error`` and the batch goes on; Slurm's job script
carries the course's settings (no Slurm needed).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from traitlets.config import Config

from autograder import cluster, grading
from autograder.course import ROOT, SMALL_PARAMETERS
from autograder.examples import write_class
from autograder.gradebook import sqlite_url
from autograder.task import GradingOptions, Task

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
DICE = "03_dice_iou"
KINDS = {"ada": "complete", "bo": "partial", "cy": "untouched"}


def _start(cmd: list[str], log: Path, env: dict | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                            cwd=cwd, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _dask_workers(parent: subprocess.Popen) -> list[psutil.Process]:
    try:
        family = psutil.Process(parent.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in family if "distributed.cli.dask_worker" in " ".join(_cmdline(p))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _wait_for(condition, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _grades(db_url: str) -> dict[tuple[str, str], float]:
    """Every autograded cell's score per student: (student, grade id) -> points."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        return {(sub.student.id, grade.name): grade.score
                for sub in gb.find_assignment(DICE).submissions for nb in sub.notebooks for grade in nb.grades}


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    base = tmp_path_factory.mktemp("dask")
    file = base / "scheduler.json"
    proc = _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", str(file),
                   "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"], base / "scheduler.log",
                  cwd=base)  # outside the course: a scheduler needs the environment, not the course
    _wait_for(lambda: file.exists() and file.read_text(), 60, "the scheduler's file")
    yield {"address": f"scheduler-file:{file}", "base": base}
    _stop(proc)


@pytest.fixture(scope="module")
def cluster_batch(scheduler, postgres, tmp_path_factory):
    """The class graded on the cluster into a PostgreSQL gradebook, a worker killed mid-batch;
    then the local pool grades one of the notebooks into SQLite. The gradebook's URL holds its
    password and reaches the harness as nbgrader's $NBGRADER_DB_URL (never a command line)."""
    base = tmp_path_factory.mktemp("cluster-batch")
    db_url = postgres.create_database("cluster")
    secret_url = db_url.replace(f"{postgres.user}@", f"{postgres.user}:{postgres.password}@")
    folder = write_class(base / "class", DICE, KINDS)
    (folder / "eve.ipynb").write_text('{"cells": [')  # refused by the client: no worker sees it
    # two workers for this course, without nannies (a killed worker stays dead) ...
    workers = _start([sys.executable, "-m", "autograder.cli", "worker", scheduler["address"], "--workers", "2",
                      "--gpus", "none", "--no-nanny"], base / "workers.log")
    # ... and one whose secrets differ: it would grade by other rules
    other = base / "other-secrets.json"
    other.write_text(json.dumps({"hidden_seed": 1, "probe_salt": 2}))
    stranger = _start([sys.executable, "-m", "autograder.cli", "worker", scheduler["address"], "--workers", "1",
                       "--gpus", "none", "--no-nanny"], base / "stranger.log", env=dict(os.environ, AUTOGRADER_SECRETS=str(other)))
    try:
        _wait_for(lambda: len(_dask_workers(workers)) == 2 and len(_dask_workers(stranger)) == 1, 60, "3 workers")
        from distributed import Client

        with Client(scheduler_file=scheduler["address"].removeprefix("scheduler-file:"), timeout="30s") as client:
            client.wait_for_workers(3, timeout=120)
        out = base / "out"
        cmd = [sys.executable, "-m", "autograder.cli", "grade", DICE, str(folder), "--out", str(out),
               "--cluster", scheduler["address"], "--no-progress",
               *[f"--param={k}={v!r}" for k, v in SMALL_PARAMETERS[DICE].items()]]
        env = {k: v for k, v in os.environ.items() if k != "PGPASSFILE"}  # the URL's password, nothing else
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env=dict(env, NBGRADER_DB_URL=secret_url))
        # kill a worker while it grades: its kernel is running, nothing of it recorded yet
        def grading_worker():
            for worker in _dask_workers(workers):
                try:
                    if any("ipykernel" in " ".join(_cmdline(p)) for p in worker.children(recursive=True)):
                        return worker
                except psutil.NoSuchProcess:
                    pass
            return None

        victim = _wait_for(grading_worker, 240, "a worker running a kernel")
        victim_family = victim.children(recursive=True)
        victim.kill()
        stdout, stderr = run.communicate(timeout=900)
        _, alive = psutil.wait_procs(victim_family, timeout=15)
        left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        # the local pool grades the same complete notebook, for the comparison
        local_out = base / "local"
        local = grading.grade(GradingOptions(
            assignment=DICE, submissions=write_class(base / "local-class", DICE, {"ada": "complete"}),
            out=local_out, db_url=sqlite_url(local_out / "gradebook.db"), slots=grading.make_slots(1, []),
            parameters=SMALL_PARAMETERS[DICE], progress=False))
        yield {"out": out, "returncode": run.returncode, "stdout": stdout, "stderr": stderr, "left": left,
               "local": local, "local_db": sqlite_url(local_out / "gradebook.db"), "local_out": local_out,
               "db_url": db_url, "password": postgres.password, "base": base, "workers_pid": workers.pid}
    finally:
        _stop(workers)
        _stop(stranger)


def test_a_cluster_grades_the_class_once_each_as_the_local_pool_does(cluster_batch):
    assert cluster_batch["returncode"] == 0, cluster_batch["stderr"][-3000:]
    lines = [json.loads(line) for line in grading.journal_path(cluster_batch["out"]).read_text().splitlines()]
    assert sorted(e["student"] for e in lines) == sorted([*KINDS, "eve"])  # each recorded once, none lost
    rows = {r["student"]: r for r in grading.read_status_csv(cluster_batch["out"] / "status.csv")}
    assert rows["eve"]["status"] == "invalid" and "not valid JSON" in rows["eve"]["reason"]
    assert all(rows[s]["status"] == "graded" for s in KINDS), rows
    assert all(rows[s]["host"] == socket.gethostname() and rows[s]["device"] == "cpu" for s in KINDS), rows
    # graded by the course's two workers (autograder worker's names), never by the stranger
    workers = {rows[s]["worker"] for s in KINDS}
    ours = re.compile(rf".+-{cluster_batch['workers_pid']}-cpu-[01]")
    assert workers and all(ours.fullmatch(w) for w in workers), workers
    assert not rows["eve"]["worker"]  # refused by the client, before any worker
    cluster_grades = _grades(cluster_batch["db_url"])
    local_grades = _grades(cluster_batch["local_db"])
    assert local_grades and {k: v for k, v in cluster_grades.items() if k[0] == "ada"} == local_grades
    total = {s: sum(v for (who, _), v in cluster_grades.items() if who == s) for s in KINDS}
    assert total["ada"] > total["bo"] > 0 == total["cy"]  # complete, partial, untouched
    for student in KINDS:  # the files came back from the workers into --out
        assert (cluster_batch["out"] / "autograded" / student / DICE / "dice_iou.ipynb").is_file()
        assert (cluster_batch["out"] / "feedback" / student / DICE / "dice_iou.html").is_file()


def test_the_postgres_gradebook_exports_what_the_sqlite_one_does_and_never_shows_its_password(cluster_batch):
    def export(folder: Path) -> dict[str, dict]:
        with open(folder / "grades.csv", newline="") as f:
            return {r["student_id"]: {k: v for k, v in r.items() if k != "timestamp"} for r in csv.DictReader(f)}

    on_postgres, on_sqlite = export(cluster_batch["out"]), export(cluster_batch["local_out"])
    assert sorted(on_postgres) == sorted([*KINDS, "eve"]) and on_postgres["ada"] == on_sqlite["ada"]
    assert float(on_postgres["ada"]["score"]) > float(on_postgres["bo"]["score"]) > 0
    password = cluster_batch["password"]
    assert password not in cluster_batch["stdout"] + cluster_batch["stderr"]
    for path in cluster_batch["base"].rglob("*"):  # --out, the workers' logs, the class
        if path.is_file() and not path.is_symlink():
            assert password.encode() not in path.read_bytes(), path


def test_the_killed_workers_kernel_died_with_it_and_the_stranger_was_retired(cluster_batch):
    assert cluster_batch["left"] == [], f"left running after its worker was killed: {cluster_batch['left']}"
    assert "retired" in cluster_batch["stderr"] and "by other rules" in cluster_batch["stderr"]


def _kill_my_worker(task, opts):
    os.kill(os.getpid(), signal.SIGKILL)


def _pass(task, opts):
    task.status, task.graded = "graded", False


def test_a_task_that_kills_its_workers_ends_in_error_and_the_next_is_graded(tmp_path, monkeypatch):
    import dask
    from distributed import Client, LocalCluster

    submission = write_class(tmp_path / "class", DICE, {"killer": "untouched", "calm": "untouched"})
    opts = GradingOptions(assignment=DICE, submissions=submission, out=tmp_path / "out",
                          db_url=sqlite_url(tmp_path / "out" / "gradebook.db"), slots=[], progress=False)
    template = opts.out / ".autograder" / "template" / DICE
    template.mkdir(parents=True)
    (template / "gradebook.db").write_bytes(b"")
    from autograder import submissions

    subs = {s.student: s for s in submissions.discover(submission, DICE)}
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, resources={cluster.SLOT_RESOURCE: 1},
                          dashboard_address=None) as local, Client(local) as client:
            executor = cluster.ClusterExecutor(client, cluster.batch_bundle([opts]))
            killed = executor.submit(_kill_my_worker, Task(subs["killer"], "d1", tmp_path / "ws1"), opts).result(180)
            calm = executor.submit(_pass, Task(subs["calm"], "d2", tmp_path / "ws2"), opts).result(180)
            executor.close()
    assert killed.status == "error" and "KilledWorker" in killed.reason and not killed.graded
    assert calm.status == "graded" and calm.host == socket.gethostname()


def test_the_slurm_job_script_carries_the_courses_settings():
    config = Config()
    config.SlurmWorkers.queue = "gpu"
    config.SlurmWorkers.account = "cv-course"
    config.SlurmWorkers.gpus_per_job = 2
    config.SlurmWorkers.cores_per_job = 16
    config.SlurmWorkers.memory = "64GB"
    config.SlurmWorkers.walltime = "01:30:00"
    config.SlurmWorkers.lifetime = "85m"
    config.SlurmWorkers.prologue = ["module load cuda"]
    slurm = cluster.slurm_cluster(ROOT, config=config, start=False)
    try:
        script = slurm.job_script()
    finally:
        slurm.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A cv-course", "#SBATCH --gres=gpu:2", "#SBATCH -t 01:30:00",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --mem=60G", "module load cuda", f"cd {ROOT}",
                 f"export AUTOGRADER_COURSE_DIR={ROOT}", "export AUTOGRADER_WORKER_THREADS=8"):
        assert line in script, (line, script)
    command = script.strip().splitlines()[-1]
    assert command.startswith(sys.executable) and f"--resources {cluster.SLOT_RESOURCE}=1" in command
    assert "--nworkers 2" in command  # a worker per GPU, each pinned by its name's suffix (worker_slot)
    assert "--lifetime 85m" in command


def test_a_worker_pins_the_gpu_its_name_picks_and_honours_the_environment(monkeypatch):
    monkeypatch.setenv(cluster.WORKER_GPU_ENV, "none")
    monkeypatch.setenv(cluster.WORKER_THREADS_ENV, "3")
    assert cluster.worker_slot("job-1") == cluster.Slot(None, 3)
    monkeypatch.setenv(cluster.WORKER_GPU_ENV, "GPU-abc")
    assert cluster.worker_slot("anything").gpu == "GPU-abc"
    monkeypatch.delenv(cluster.WORKER_GPU_ENV)
    monkeypatch.setattr(cluster.gpus, "pinning_ids", lambda value: ["GPU-a", "GPU-b"])
    assert [cluster.worker_slot(f"SLURMCluster-3-{i}").gpu for i in range(3)] == ["GPU-a", "GPU-b", "GPU-a"]


def test_a_workers_answer_cannot_write_outside_the_workspace(tmp_path):
    from autograder import submissions

    sub = submissions.Submission("x", tmp_path / "x.ipynb", "notebook")
    for name in ("../escaped.txt", "/etc/evil", "autograded/../../escaped.txt"):
        task = Task(sub, "d", tmp_path / "ws")
        with pytest.raises(ValueError, match="outside the workspace"):
            cluster.unpack({"fields": {}, "files": {name: b"x"}}, task)
    assert not (tmp_path / "escaped.txt").exists()
