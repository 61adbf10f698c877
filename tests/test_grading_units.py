"""The harness's small parts, without running notebooks: workers and GPUs, parameters,
timeouts, the journal, status.csv, the report and the CLI's handling of misuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from autograder import cli, course, course_secrets, gpus, grading, nbgrader_plugins, settings, verdicts
from autograder.course import ASSIGNMENTS, ROOT, solution_path
from autograder.report import write_report


def test_workers_share_gpus_round_robin_and_split_the_cpu_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    slots = grading.make_slots(4, ["0", "1"], cpus=16)
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert {s.threads for s in slots} == {4}
    assert [s.device for s in grading.make_slots(None, ["2", "5"], cpus=8)] == ["cuda:2", "cuda:5"]
    cpu = grading.make_slots(None, [], cpus=8)
    assert len(cpu) == 4 and all(s.device == "cpu" and s.threads == 2 for s in cpu)
    assert grading.make_slots(3, [], cpus=2)[0].threads == 1  # never 0 threads
    with pytest.raises(ValueError):
        grading.make_slots(0, [], cpus=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the grader's machine is shared: one thread each
    assert {s.threads for s in grading.make_slots(2, [], cpus=8)} == {1}


def test_gpu_selection(monkeypatch):
    fake = [gpus.Gpu(0, "GPU-aaaa-0001", "00000000:01:00.0", 0), gpus.Gpu(1, "GPU-bbbb-0002", "00000000:41:00.0", 3)]
    monkeypatch.setattr(gpus, "list_gpus", lambda *args, **kwargs: fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert grading.parse_gpus("none") == []
    assert grading.parse_gpus("auto") == ["GPU-aaaa-0001", "GPU-bbbb-0002"]  # pinned by UUID
    assert grading.parse_gpus("1") == ["GPU-bbbb-0002"]
    with pytest.raises(ValueError, match="--gpus"):
        grading.parse_gpus("first")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")
    assert grading.parse_gpus("auto") == ["GPU-bbbb-0002"]  # the host's restriction
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert grading.parse_gpus("auto") == []
    slot = grading.make_slots(1, ["GPU-bbbb-0002"], cpus=2)[0]
    env = gpus.kernel_environment(slot.gpu)
    assert env == {"CUDA_VISIBLE_DEVICES": "GPU-bbbb-0002", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_unknown_parameters_are_refused_before_grading():
    grading.check_parameters("04_segmentation_assignment", {"epochs": 2, "device": "cpu"})
    with pytest.raises(ValueError, match="epoch"):
        grading.check_parameters("04_segmentation_assignment", {"epoch": 2})


def test_cell_timeouts_come_from_the_environment_and_training_cells_get_their_own(monkeypatch):
    plain = nbformat.v4.new_code_cell("x = 1")
    training = nbformat.v4.new_code_cell("fit()", metadata={"tags": ["training"], "nbgrader": {"grade_id": "t", "locked": True}})
    monkeypatch.delenv(nbgrader_plugins.CELL_TIMEOUT_ENV, raising=False)
    monkeypatch.delenv(nbgrader_plugins.TRAINING_TIMEOUT_ENV, raising=False)
    assert nbgrader_plugins.cell_timeout(plain) == 600 and nbgrader_plugins.cell_timeout(training) == 3600
    monkeypatch.setenv(nbgrader_plugins.CELL_TIMEOUT_ENV, "30")
    monkeypatch.setenv(nbgrader_plugins.TRAINING_TIMEOUT_ENV, "300")
    assert nbgrader_plugins.cell_timeout(plain) == 30 and nbgrader_plugins.cell_timeout(training) == 300
    # the final assignment's training cells carry the tag
    nb = nbformat.read(solution_path("04_segmentation_assignment"), as_version=4)
    tagged = [c for c in nb.cells if "training" in c.metadata.get("tags", [])]
    assert len(tagged) == 4 and all("fit(" in c.source for c in tagged)  # model, baseline, ablation, pets


def test_pin_parameters_preprocessor_overrides_what_the_student_wrote(monkeypatch):
    nb = nbformat.read(solution_path("04_segmentation_assignment"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("epochs = ", "epochs = 999  # student edit\n_old_epochs = ", 1)
    monkeypatch.setenv(nbgrader_plugins.PARAMETERS_ENV, json.dumps({"epochs": 2, "budget": "small"}))
    nb, _ = nbgrader_plugins.PinParameters().preprocess(nb, {})
    lines = cell.source.splitlines()
    assert "epochs = 2  # student edit" in lines and "budget = 'small'" in " ".join(lines)
    monkeypatch.setenv(nbgrader_plugins.PARAMETERS_ENV, "[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        nbgrader_plugins.PinParameters().preprocess(nb, {})


def test_the_journal_keeps_the_latest_entry_and_survives_a_torn_line(tmp_path):
    (tmp_path / ".autograder").mkdir()
    base = {"assignment": "03_dice_iou", "reason": "", "score": 1, "max_score": 2, "auto_score": 1,
            "auto_max_score": 2, "needs_manual_grade": False, "seconds": 1.0, "device": "cpu", "graded_at": "t"}
    grading.append_journal(tmp_path, {**base, "student": "a", "status": "error"})
    grading.append_journal(tmp_path, {**base, "student": "a", "status": "graded"})
    grading.append_journal(tmp_path, {**base, "student": "b", "status": "invalid"})
    with open(grading.journal_path(tmp_path), "a") as fh:
        fh.write('{"assignment": "03_dice_iou", "student": "c", "sta')  # killed mid-write
    latest = grading.read_journal(tmp_path)
    assert {k[1]: v["status"] for k, v in latest.items()} == {"a": "graded", "b": "invalid"}
    rows = grading.read_status_csv(grading.write_status_csv(tmp_path))
    assert [(r["student"], r["status"]) for r in rows] == [("a", "graded"), ("b", "invalid")]
    assert list(rows[0]) == list(grading.STATUS_COLUMNS)
    table = grading.summary_table(rows)
    assert "graded" in table and "invalid" in table


def test_a_change_to_the_grading_rules_regrades_everyone(tmp_path, monkeypatch):
    """The skip-unchanged fingerprint covers the probes, the course's library and the checking code."""
    copy = tmp_path / "package"
    shutil.copytree(verdicts.PACKAGE / "course_lib", copy / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "autograder").mkdir()
    modules = [Path(m.__file__).name for m in grading.RULES_MODULES]
    for module in ["probes.py", *modules]:
        shutil.copy(verdicts.PACKAGE / "autograder" / module, copy / "autograder" / module)
    monkeypatch.setattr(verdicts, "PACKAGE", copy)
    monkeypatch.setattr(settings, "course_library_folder", lambda: copy / "course_lib")  # c.Autograder.course_library
    for module in grading.RULES_MODULES:
        monkeypatch.setattr(module, "__file__", str(copy / "autograder" / Path(module.__file__).name))
    source = grading.source_digest("03_dice_iou")
    seen = {grading.rules_digest(source)}
    assert grading.rules_digest(source) in seen  # stable while nothing changes
    assert {"verdicts.py", "trusted.py", "checks.py", "sandbox.py", "nbgrader_plugins.py"} <= set(modules)
    for changed in ("course_lib/metrics.py", "autograder/probes.py", *(f"autograder/{m}" for m in modules)):
        with open(copy / changed, "a") as fh:
            fh.write("\n# changed\n")
        digest = grading.rules_digest(source)
        assert digest not in seen, changed
        seen.add(digest)
    assert grading.rules_digest(source + "x") not in seen  # the source notebook
    shutil.copy(ROOT / "nbgrader_config.py", copy / "nbgrader_config.py")
    before = grading.rules_digest(source, copy)
    with open(copy / "nbgrader_config.py", "a") as fh:
        fh.write("\n# changed\n")
    assert grading.rules_digest(source, copy) != before  # the course's nbgrader config
    monkeypatch.setenv(course_secrets.SECRETS_ENV, str(tmp_path / "other-installation.json"))
    assert grading.rules_digest(source) not in seen  # another installation's secrets
    seen.add(grading.rules_digest(source))
    # the assignments' declarations and grader code (their probes)
    declared = {p.relative_to(ROOT).as_posix() for p in course.grading_files()}
    assert {"solutions/03_dice_iou/assignment.toml", "solutions/03_dice_iou/grading.py"} <= declared
    copies = []
    for path in course.grading_files():
        copies.append(tmp_path / "declared" / path.relative_to(ROOT))
        copies[-1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copies[-1])
    monkeypatch.setattr(course, "grading_files", lambda: copies)
    for changed in [c for c in copies if "03_dice_iou" in str(c)]:
        before = grading.rules_digest(source)
        with open(changed, "a") as fh:
            fh.write("\n# changed\n")
        assert grading.rules_digest(source) != before, changed


def test_the_report_is_one_self_contained_page_with_escaped_names(tmp_path):
    rows = [{"assignment": "03_dice_iou", "student": f"s{i}", "status": s, "reason": "<script>x</script>",
             "score": str(i), "max_score": "10", "auto_score": str(i), "auto_max_score": "10", "seconds": str(i),
             "device": "cpu", "enforcement": "cgroup-v1"} for i, s in enumerate(grading.STATUSES)]
    page = write_report(rows, tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1  # the score plot (no gradebook: no question plot)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Slowest submissions" in page and all(s in page for s in grading.STATUSES)
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "Weak limits" not in page  # no enforcement recorded: nothing to warn about


def test_the_report_and_status_say_loudly_when_kernels_ran_with_weak_limits(tmp_path):
    rows = [{"assignment": "03_dice_iou", "student": s, "status": "graded", "reason": "", "score": "1",
             "max_score": "10", "auto_score": "1", "auto_max_score": "10", "seconds": "1", "device": "cpu",
             "enforcement": kind} for s, kind in (("a", "cgroup-v2"), ("b", "rlimit"), ("c", "rlimit"))]
    page = write_report(rows, tmp_path / "report.html").read_text()
    assert "Weak limits" in page and "2 submission(s) with rlimits only" in page and "autograder doctor" in page
    rows[0]["enforcement"] = ""  # a kernel ran, and nothing says how it was limited
    assert "unknown means" in write_report(rows, tmp_path / "report.html").read_text()
    assert "enforcement" in grading.STATUS_COLUMNS and set(grading.ENFORCEMENTS) == {"cgroup-v2", "cgroup-v1", "rlimit", "none"}


@pytest.mark.parametrize("argv, message", [
    (["grade", "99_nope", "."], "unknown assignment"),
    (["grade", "03_dice_iou", "/no/such/folder"], "does not exist"),
    (["grade", "03_dice_iou", ".", "--param", "nonsense"], "NAME=VALUE"),
    (["grade", "03_dice_iou", ".", "--param", "epochs=2"], "not parameters of 03_dice_iou"),
    (["grade", "03_dice_iou", ".", "--gpus", "some"], "--gpus"),
])
def test_misuse_exits_with_status_2_and_says_why(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_every_assignment_has_the_example_submissions():
    from autograder.examples import EXAMPLES, KINDS

    for assignment in ASSIGNMENTS:
        names = {p.name.split(".")[0] for p in (EXAMPLES / assignment).iterdir()}
        assert names == set(KINDS), assignment


def test_committed_examples_are_what_the_generator_makes(tmp_path):
    from autograder.examples import EXAMPLES, make_examples

    for assignment in ASSIGNMENTS:
        make_examples(assignment, tmp_path / assignment)
        made = {p.relative_to(tmp_path / assignment): p.read_bytes() for p in (tmp_path / assignment).rglob("*") if p.is_file()}
        committed = {p.relative_to(EXAMPLES / assignment): p.read_bytes() for p in (EXAMPLES / assignment).rglob("*") if p.is_file()}
        assert made == committed, f"examples/{assignment} is stale: run `python -m autograder.examples`"


def test_missing_bubblewrap_is_a_clear_error(monkeypatch):
    from autograder import sandbox

    sandbox.check_bwrap.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
            sandbox.check_bwrap()
    finally:
        monkeypatch.undo()
        sandbox.check_bwrap.cache_clear()


def test_the_sandbox_binds_the_environment_read_only_and_only_the_notebook_folder_writable(tmp_path):
    from autograder import sandbox
    from autograder.course import ROOT

    limits = sandbox.Limits(tmp_size=123 * 2**20)
    cmd = sandbox.bwrap_command(["python", "-m", "ipykernel_launcher"], str(tmp_path), ["/tmp/kernel-x"],
                                {"CUDA_VISIBLE_DEVICES": ""}, limits)
    assert "--unshare-all" in cmd and "--die-with-parent" in cmd
    assert cmd[cmd.index("--size") + 1] == str(123 * 2**20)
    writable = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--bind"]
    assert writable == [str(tmp_path), "/tmp/kernel-x"]
    read_only = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--ro-bind"]
    assert str(ROOT / "course_lib") in read_only
    assert str(ROOT) not in read_only and not any(p.startswith(str(ROOT / "solutions")) for p in read_only)
    assert "/etc/shadow" not in read_only and not any(a.startswith("/dev/nvidia") for a in cmd)
    assert cmd[cmd.index("--") + 1:] == ["python", "-m", "ipykernel_launcher"]


def test_sizes_and_limits_from_the_environment(monkeypatch):
    from autograder import sandbox

    assert sandbox.parse_size("6G") == 6 * 2**30 and sandbox.parse_size("512M") == 512 * 2**20
    assert sandbox.parse_size("1.5GiB") == int(1.5 * 2**30) and sandbox.parse_size("1000") == 1000
    monkeypatch.setenv("AUTOGRADER_MEMORY_LIMIT", "2G")
    monkeypatch.setenv("AUTOGRADER_MAX_PROCESSES", "32")
    limits = sandbox.Limits.from_env()
    assert limits.memory == 2 * 2**30 and limits.processes == 32


def test_the_local_executor_runs_each_step_on_a_slot_and_never_more_at_once_than_slots(tmp_path):
    """The executor decides only where the per-submission step runs: each task gets a slot and
    the batch's launcher, at most one task per slot at a time, a slot freed even when the
    step raises, and close() waits for the tasks and stops the fork server."""
    import threading
    import time as clock
    from types import SimpleNamespace

    from autograder.executors import LocalExecutor

    slots = grading.make_slots(2, [])
    running, peak, lock = set(), [0], threading.Lock()

    def step(task, opts):
        with lock:
            running.add(id(task.slot))
            peak[0] = max(peak[0], len(running))
        clock.sleep(0.05)
        with lock:
            running.discard(id(task.slot))
        if task.fail:
            raise RuntimeError("a step that raises")
        task.done = True

    tasks = [SimpleNamespace(slot=None, launcher=None, fail=i == 2, done=False) for i in range(7)]
    executor = LocalExecutor(slots, cwd=tmp_path)
    server = executor._launcher._proc  # started at once: it imports nbgrader while the batch prepares
    assert server is not None and server.poll() is None
    futures = [executor.submit(step, task, None) for task in tasks]
    executor.close()
    assert all(f.done() for f in futures) and peak[0] <= 2
    assert [t.done for t in tasks] == [i != 2 for i in range(7)]
    assert isinstance(futures[2].exception(), RuntimeError)
    assert {t.slot for t in tasks} <= set(slots) and all(t.launcher is not None for t in tasks)
    assert server.poll() is not None  # the fork server stopped with the executor
