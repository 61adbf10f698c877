"""The cluster executor: each submission graded on a Dask worker (``autograder grade --cluster``).

Dask's distributed scheduler hands each submission to a worker that holds a grading slot
(``--resources grading_slot=1``: one worker per GPU, or per share of a machine's cores). The
worker grades it with the same steps and sandbox as the local pool (:func:`autograder.grading.process`),
in a fresh folder of its own, and sends back plain data: the status, the private gradebook and
the files nbgrader wrote (:func:`pack`). The client alone records them (the gradebook's single
writer, the journal), so a run interrupted anywhere resumes with every student graded once.

What a worker needs: the project's environment and the course root at the same path as the
client (a shared filesystem, as on Slurm clusters). It checks the grading rules it would apply
(the harness, the course library and its probes, the course's config and secrets,
:func:`autograder.rules.rules_digest`) against the client's, and refuses a task when they differ.
It needs neither the submissions nor ``--out``: the client reads the submissions, and sends
each worker the batch's template gradebooks and probe answers once (:func:`batch_bundle`).

Faults: a worker that dies mid-task has the task rescheduled by Dask (an infrastructure fault);
a task that has killed ``distributed.scheduler.allowed-failures`` workers ends with status
``error`` and the reason, and the batch goes on. A student's failure is a status, never an
exception, so it is never retried.

Addresses (``--cluster``): ``tcp://host:8786`` (or ``tls://``) for a running scheduler,
``scheduler-file:PATH`` for one that wrote its address there, ``slurm`` for workers started as
Slurm jobs by dask-jobqueue's ``SLURMCluster`` (:class:`SlurmWorkers` in the course's
``nbgrader_config.py``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from concurrent.futures import Future
from pathlib import Path

import cloudpickle
from distributed import WorkerPlugin
from traitlets import Integer, List, Unicode
from traitlets.config import Configurable

from autograder import cluster_task, course, forkserver, gpus, submissions, verdicts
from autograder.executors import Executor
from autograder.rules import rules_digest, source_digest
from autograder.slots import Slot
from autograder.steps.validate import load_submission
from autograder.task import GradingOptions, Task, Verdict

SLOT_RESOURCE = "grading_slot"  # a worker's capacity: one submission at a time
WORKER_GPU_ENV = "AUTOGRADER_WORKER_GPU"  # the GPU (UUID) a worker grades on, or "none"
WORKER_THREADS_ENV = "AUTOGRADER_WORKER_THREADS"  # the CPU threads its kernels may use
PLUGIN = "autograder"
# what a worker sends back: nbgrader's folders of the submission and its private gradebook
RETURNED_FOLDERS = ("submitted", "autograded", "feedback")
RETURNED_FILES = ("gradebook.db", "sandbox-report.jsonl", "autograde.log")
RETURNED_FIELDS = ("status", "reason", "graded", "seconds", "log", "enforcement", "violation", "host", "worker")


class ClusterError(RuntimeError):
    """The cluster cannot grade this batch (no scheduler, no worker with this course's rules)."""


class SlurmWorkers(Configurable):
    """Workers started as Slurm jobs by ``autograder grade --cluster slurm``
    (``c.SlurmWorkers.<name>`` in the course's nbgrader_config.py)."""

    queue = Unicode(None, allow_none=True, help="the partition (#SBATCH -p)").tag(config=True)
    account = Unicode(None, allow_none=True, help="the account charged (#SBATCH -A)").tag(config=True)
    jobs = Integer(2, help="Slurm jobs to start (each job: gpus_per_job workers)").tag(config=True)
    gpus_per_job = Integer(1, help="GPUs per job (--gres=gpu:N), a worker per GPU; 0: CPU workers").tag(config=True)
    cores_per_job = Integer(8, help="CPU cores per job, shared by its workers' kernels").tag(config=True)
    memory = Unicode("32GB", help="memory per job").tag(config=True)
    walltime = Unicode("02:00:00", help="the job's time limit (#SBATCH -t)").tag(config=True)
    lifetime = Unicode("110m", help="a worker retires gracefully after this (before its walltime); "
                       "'' for never").tag(config=True)
    prologue = List(Unicode(), help="shell lines run before the worker starts (e.g. module load)").tag(config=True)


# --------------------------------------------------------------------------- the client's side
def connect(address: str, course_root: Path | None = None):
    """A Dask client for ``address`` and what to close after the batch (the client, and the
    Slurm cluster where this run started one)."""
    from distributed import Client

    if address == "slurm":
        cluster = slurm_cluster(course_root or course.course_root())
        client = Client(cluster)
        return client, [client, cluster]  # closing the cluster cancels its jobs
    if address.startswith("scheduler-file:"):
        path = address.removeprefix("scheduler-file:")
        if not Path(path).is_file():
            raise ClusterError(f"no scheduler file at {path}")
        client = Client(scheduler_file=path, timeout="30s")
    elif re.match(r"^(tcp|tls|ucx|inproc)://", address):
        client = Client(address, timeout="30s")
    else:
        raise ClusterError(f"--cluster: expected tcp://HOST:PORT, scheduler-file:PATH or slurm, got {address!r}")
    return client, [client]


def slurm_cluster(course_root: Path, config=None, start: bool = True):
    """dask-jobqueue's SLURMCluster configured from ``c.SlurmWorkers`` (see :class:`SlurmWorkers`):
    each job runs a worker per GPU, pinned to it, in the course root, with the project's Python."""
    from dask_jobqueue import SLURMCluster

    from autograder.settings import load_course_config

    conf = SlurmWorkers(config=load_course_config(course_root) if config is None else config)
    workers = max(1, conf.gpus_per_job)
    directives = [f"--gres=gpu:{conf.gpus_per_job}"] if conf.gpus_per_job else []
    extra = ["--resources", f"{SLOT_RESOURCE}=1"]
    if conf.lifetime:
        extra += ["--lifetime", conf.lifetime, "--lifetime-stagger", "2m"]
    root = shlex.quote(str(course_root))
    cluster = SLURMCluster(
        queue=conf.queue, account=conf.account, cores=conf.cores_per_job, processes=workers, memory=conf.memory,
        walltime=conf.walltime, job_extra_directives=directives, worker_extra_args=extra, python=sys.executable,
        job_script_prologue=[*conf.prologue, f"cd {root}", f"export {course.COURSE_DIR_ENV}={root}",
                             f"export {WORKER_THREADS_ENV}={max(1, conf.cores_per_job // workers)}"],
    )
    if start:  # adaptive: jobs whose workers retired at their lifetime (or died) are replaced while work is left
        cluster.adapt(minimum_jobs=1, maximum_jobs=conf.jobs)
    return cluster


def batch_bundle(batch: list[GradingOptions]) -> dict[str, bytes]:
    """What every worker needs from ``--out`` for the batch (made by :func:`autograder.grading.prepare`):
    each assignment's template gradebook and its probes' inputs and answers, as {path under --out: bytes}."""
    bundle: dict[str, bytes] = {}
    for opts in batch:
        template = opts.out / ".autograder" / "template" / opts.assignment / "gradebook.db"
        bundle[str(template.relative_to(opts.out))] = template.read_bytes()
        probes = verdicts.cache_root(opts.out)
        for path in sorted(probes.glob(f"{opts.assignment}-*/*")):
            if submissions.is_regular_file(path):
                bundle[str(path.relative_to(opts.out))] = path.read_bytes()
    return bundle


class ClusterExecutor(Executor):
    """Runs the per-submission step on a Dask cluster's workers (see the module's docstring).

    ``client``: a connected :class:`distributed.Client`; ``closing``: what to close with the
    executor; ``bundle``: :func:`batch_bundle`, sent once to the workers."""

    REFUSALS = 3  # a task refused by this many workers (other rules) ends with status error

    def __init__(self, client, bundle: dict[str, bytes], closing: list | None = None,
                 no_worker_timeout: float = 600.0):
        self._client = client
        self._closing = closing or []
        self._pending: dict[Future, object] = {}  # our future -> the Dask future that computes it
        self._lock = threading.Lock()
        self._rules: dict[tuple[str, str], str] = {}
        self._token = uuid.uuid4().hex
        # a plugin of this batch's own: another batch on the same scheduler has its own folder and fork server
        self._plugin = f"{PLUGIN}-{self._token[:12]}"
        client.register_plugin(GradingWorker(), name=self._plugin)
        # sent once to each worker that grades; a task, not scattered data, so that a worker lost
        # with it never loses it: the scheduler holds the task and makes it again
        self._bundle = client.submit(cluster_task.same, bundle, pure=False, key=f"autograder-bundle-{self._token}")
        self._no_worker_timeout = no_worker_timeout
        self._closed = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="cluster-watchdog").start()

    def expected_rules(self, opts: GradingOptions) -> str:
        key = (opts.assignment, str(opts.course_root))
        if key not in self._rules:
            self._rules[key] = assignment_rules(opts.assignment, opts.course_root)
        return self._rules[key]

    def grading_workers(self) -> list[str]:
        """The workers that can take a submission (they hold a grading slot)."""
        workers = self._client.scheduler_info(n_workers=-1)["workers"]
        return [a for a, w in workers.items() if (w.get("resources") or {}).get(SLOT_RESOURCE)]

    def check_workers(self, batch: list[GradingOptions], wait: float | None = None) -> dict[str, str]:
        """Wait (up to ``wait`` s, default the no-worker timeout) for a worker with a grading slot,
        ask every such worker which rules it grades by, and retire those that differ from this
        client's. Returns {address: why retired}; raises :class:`ClusterError` when none is left."""
        deadline = time.monotonic() + (self._no_worker_timeout if wait is None else wait)
        while not self.grading_workers() and time.monotonic() < deadline:  # Slurm jobs may still be queued
            time.sleep(1.0)
        graders = self.grading_workers()
        if not graders:
            raise ClusterError(f"no worker with a {SLOT_RESOURCE} resource joined the cluster "
                               "(start them with `autograder worker`)")
        expected = {opts.assignment: self.expected_rules(opts) for opts in batch}
        course_root = str(batch[0].course_root)
        answers = self._client.run(worker_rules, list(expected), course_root, workers=graders)
        refused = {}
        for address, answer in answers.items():
            differs = sorted(a for a, digest in answer["rules"].items() if digest != expected[a])
            if differs:
                refused[address] = (f"worker {address} on {answer['host']} grades {', '.join(differs)} by other rules "
                                    "(its harness, course library, probes or course config differ from the client's)")
        if refused:
            self._client.retire_workers(workers=list(refused), close_workers=True)
        if not answers or len(refused) == len(answers):
            raise ClusterError("no worker of the cluster can grade this batch" +
                               (": " + "; ".join(refused.values()) if refused else ": the cluster has no worker"))
        return refused

    def submit(self, step, task: Task, opts: GradingOptions) -> Future:
        done: Future = Future()
        try:  # the client reads the submission: workers need not see the submissions folder
            load_submission(task, opts)
        except Verdict as verdict:
            task.status, task.reason = verdict.status, verdict.reason
            done.set_result(task)
            return done
        except Exception as err:  # as process() does: a fault of the harness, this submission's status
            task.status, task.reason = "error", f"harness fault: {type(err).__name__}: {err}"
            done.set_result(task)
            return done
        self._send(step, task, opts, done, refusals=0)
        return done

    def _send(self, step, task: Task, opts: GradingOptions, done: Future, refusals: int) -> None:
        # what the worker needs, no more: never the gradebook's URL (it may hold a password) nor the local slots
        shipped = dataclasses.replace(opts, db_url="", slots=[], roster=None)
        # pickled here: the scheduler never imports the harness (which looks for a course on import)
        payload = cloudpickle.dumps((grade_on_worker, (step, _for_worker(task), shipped, self.expected_rules(opts),
                                                       self._token, self._plugin)))
        remote = self._client.submit(
            cluster_task.run, payload, self._bundle, resources={SLOT_RESOURCE: 1}, pure=False,
            key=f"grade-{opts.assignment}-{task.student}-{uuid.uuid4().hex[:8]}")
        with self._lock:
            self._pending[done] = remote
        remote.add_done_callback(lambda finished: self._finish(finished, step, task, opts, done, refusals))

    def _finish(self, remote, step, task: Task, opts: GradingOptions, done: Future, refusals: int) -> None:
        """In a callback thread: the worker's answer into the task (its files into the
        client's workspace); any failure of the cluster is the task's status ``error``. A
        worker that refused the task (other rules) is retired and the task sent again."""
        from distributed.scheduler import KilledWorker

        try:
            try:
                answer = remote.result()
                if answer.get("refused") and refusals + 1 < self.REFUSALS and not self._closed.is_set():
                    self._client.retire_workers(workers=[answer["refused"]], close_workers=True)
                    self._send(step, task, opts, done, refusals + 1)
                    return
                unpack(answer, task)
            except KilledWorker as err:
                task.status, task.graded = "error", False
                task.reason = (f"the cluster lost every worker that ran it (Dask KilledWorker: {err}); "
                               "not graded: an infrastructure fault, re-run to retry")
            except Exception as err:
                task.status, task.graded = "error", False
                task.reason = f"cluster fault: {type(err).__name__}: {str(err)[:300]}"
        except BaseException:  # never leave the batch waiting on this future
            task.status, task.graded = "error", False
            task.reason = f"cluster fault: {traceback.format_exc().strip().splitlines()[-1]}"
        with self._lock:
            self._pending.pop(done, None)
        done.set_result(task)

    def _watch(self) -> None:
        """Cancel what is left when no worker with a grading slot has been connected for the
        no-worker timeout (Dask would keep such tasks waiting for ever): they end ``error``."""
        alone_since = None
        while not self._closed.wait(5.0):
            with self._lock:
                waiting = list(self._pending.values())
            try:
                alone = bool(waiting) and not self.grading_workers()
            except Exception:  # the scheduler itself is gone: the futures fail on their own
                alone = False
            alone_since = (alone_since or time.monotonic()) if alone else None
            if alone_since is not None and time.monotonic() - alone_since > self._no_worker_timeout:
                for remote in waiting:
                    remote.cancel(reason=f"no worker with a {SLOT_RESOURCE} for {self._no_worker_timeout:g} s")
                alone_since = None

    def close(self) -> None:
        from concurrent.futures import wait

        try:
            with self._lock:
                pending = list(self._pending)
            wait(pending)
        finally:
            self._closed.set()
            try:
                self._client.unregister_worker_plugin(self._plugin)
            except Exception:
                pass
            for resource in self._closing:
                try:
                    resource.close()
                except Exception:
                    pass


def _for_worker(task: Task) -> Task:
    """The task as a worker gets it: its submission's files, no client-side folder or slot."""
    return dataclasses.replace(task, workspace=Path(), slot=None, launcher=None)


def unpack(answer: dict, task: Task) -> None:
    """A worker's answer (:func:`pack`) into ``task``: its fields, and its files written under
    the client's ``task.workspace`` (relative paths only, nothing outside it)."""
    for name in RETURNED_FIELDS:
        if name in answer["fields"]:
            setattr(task, name, answer["fields"][name])
    task.slot = Slot(answer["gpu"], answer["threads"]) if "threads" in answer else None
    root = task.workspace.resolve()
    for name, data in answer["files"].items():
        target = (root / name).resolve()
        if name.startswith("/") or ".." in Path(name).parts or not target.is_relative_to(root):
            raise ValueError(f"a worker sent a file outside the workspace: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


# --------------------------------------------------------------------------- the worker's side
def worker_slot(name: str = "") -> Slot:
    """Where this worker grades: ``$AUTOGRADER_WORKER_GPU`` (a UUID, or ``none``), else the GPU
    this process may use (several: the one its name's ``-N`` suffix picks, as dask-jobqueue names
    a job's workers), else the CPU; threads from ``$AUTOGRADER_WORKER_THREADS``, else its cores."""
    pinned = os.environ.get(WORKER_GPU_ENV, "")
    if pinned:
        gpu = None if pinned == "none" else pinned
    else:
        visible = gpus.pinning_ids("auto")
        index = re.search(r"-(\d+)$", name or "")
        gpu = visible[int(index.group(1)) % len(visible) if index else 0] if visible else None
    threads = os.environ.get(WORKER_THREADS_ENV, "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Slot(gpu, int(threads) if threads.isdigit() and int(threads) > 0 else cores)


class GradingWorker(WorkerPlugin):
    """A Dask worker plugin (registered by the client): the worker's slot, its scratch folder
    and its fork server, started in the thread that first grades (its tasks' thread)."""

    name = PLUGIN

    def setup(self, worker) -> None:
        self.slot = worker_slot(str(worker.name))
        self.scratch = Path(tempfile.mkdtemp(prefix="autograder-", dir=worker.local_directory))
        self.outs: dict[str, Path] = {}
        self.lock = threading.Lock()
        self.launcher = forkserver.ForkServer(cwd=self.scratch)
        # the server dies with the thread that starts it (PR_SET_PDEATHSIG): a thread of its own,
        # alive until teardown, not one of Dask's task threads
        self._stop = threading.Event()
        started = threading.Event()

        def keep() -> None:
            self.launcher.start()
            started.set()
            self._stop.wait()

        threading.Thread(target=keep, daemon=True, name="autograder-forkserver").start()
        started.wait(60)

    def teardown(self, worker) -> None:
        self.launcher.close()
        self._stop.set()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def out_folder(self, token: str, bundle: dict[str, bytes]) -> Path:
        """The batch's ``--out`` as far as grading needs it, written once per batch."""
        with self.lock:
            if token not in self.outs:
                folder = self.scratch / f"out-{token[:12]}"
                for name, data in bundle.items():
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).write_bytes(data)
                self.outs[token] = folder
            return self.outs[token]


def assignment_rules(assignment: str, course_root: str | Path) -> str:
    """The rules digest of one assignment, as this process would grade it (client and worker compare them)."""
    return rules_digest(source_digest(assignment), Path(course_root))


def worker_rules(assignments: list[str], course_root: str) -> dict:
    """On a worker: the rules digest it would grade each assignment by, and its host."""
    return {"host": socket.gethostname(),
            "rules": {a: assignment_rules(a, course_root) for a in assignments}}


def grade_on_worker(step, task: Task, opts: GradingOptions, expected: str, token: str, plugin: str,
                    bundle: dict[str, bytes]) -> dict:
    """On a worker: the per-submission ``step`` in a fresh folder, its result as plain data."""
    from distributed import get_worker

    worker = get_worker()
    state: GradingWorker = worker.plugins[plugin]
    host = socket.gethostname()
    if assignment_rules(opts.assignment, opts.course_root) != expected:  # the client retires this worker and sends the task elsewhere
        return {"refused": worker.address, "fields": {"status": "error", "graded": False, "host": host,
                "worker": str(worker.name), "reason": (
                    f"refused by worker {worker.name} on {host}: it grades by other rules (its harness, course "
                    "library, probes or course config differ from the client's); not graded, re-run")},
                "files": {}, "gpu": state.slot.gpu, "threads": state.slot.threads}
    task.worker = str(worker.name)
    local = dataclasses.replace(opts, out=state.out_folder(token, bundle))
    task.workspace = Path(tempfile.mkdtemp(prefix=f"{task.student[:40]}-", dir=state.scratch))
    task.slot, task.launcher = state.slot, state.launcher
    try:
        step(task, local)
        return pack(task, host)
    finally:
        if not opts.keep_workspaces:
            shutil.rmtree(task.workspace, ignore_errors=True)


def pack(task: Task, host: str) -> dict:
    """A graded task as plain data: its fields, and nbgrader's files of the submission and its
    private gradebook as {path in the workspace: bytes} (regular files only)."""
    files: dict[str, bytes] = {}
    ws = task.workspace
    for folder in RETURNED_FOLDERS:
        for path in sorted((ws / folder).rglob("*")):
            if submissions.is_regular_file(path):
                files[str(path.relative_to(ws))] = path.read_bytes()
    for name in RETURNED_FILES:
        if submissions.is_regular_file(ws / name):
            files[name] = (ws / name).read_bytes()
    task.host = host
    fields = {name: getattr(task, name) for name in RETURNED_FIELDS}
    return {"fields": fields, "files": files, "gpu": task.slot.gpu, "threads": task.slot.threads, "host": host}
