"""The sandbox's pieces one at a time, without a kernel: reading what a kernel left, the
kernel's folder and environment, its bwrap command, the output budget, the private folders,
and the steps that keep a notebook's own metadata from choosing how it is graded."""

from __future__ import annotations

import os
import socket
import stat
import subprocess

import nbformat
import pytest
from nbformat import NotebookNode

from autograder import checks, runtime, sandbox
from autograder.course import parameters_cell, pin_parameters
from autograder.nbgrader_plugins import HIDDEN_OUTPUT, HideHiddenTests, RefuseLinkedFiles, cell_timeout


def test_files_a_kernel_left_are_read_only_when_they_are_regular_and_small(tmp_path):
    (tmp_path / "ok.npz").write_bytes(b"data")
    assert sandbox.read_left_file(tmp_path / "ok.npz", 10) == sandbox.LeftFile(b"data")
    assert sandbox.read_left_file(tmp_path / "missing", 10).problem == "missing"
    (tmp_path / "link").symlink_to(tmp_path / "ok.npz")
    assert "not a regular file" in sandbox.read_left_file(tmp_path / "link", 10).problem
    (tmp_path / "folder").mkdir()
    assert "not a regular file" in sandbox.read_left_file(tmp_path / "folder", 10).problem
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open would hang the grader
    assert "not a regular file" in sandbox.read_left_file(tmp_path / "fifo", 10).problem
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        assert "not a regular file" in sandbox.read_left_file(tmp_path / "sock", 10).problem
    with open(tmp_path / "sparse", "wb") as fh:
        fh.truncate(2**30)
    assert "larger than" in sandbox.read_left_file(tmp_path / "sparse", 2**20).problem


def test_the_kernels_folder_holds_the_files_but_no_notebook_and_no_link(tmp_path):
    source = tmp_path / "autograded"
    (source / "data").mkdir(parents=True)
    (source / "dice_iou.ipynb").write_text("{} hidden tests restored here")
    (source / "data" / "masks.npy").write_bytes(b"x")
    (source / "secret-link").symlink_to("/etc/passwd")
    (tmp_path / "inputs.npz").write_bytes(b"probe")
    sandbox.stage_kernel_folder(source, tmp_path / "work", {"probes_in_x.npz": tmp_path / "inputs.npz"})
    staged = sorted(p.relative_to(tmp_path / "work").as_posix() for p in (tmp_path / "work").rglob("*"))
    assert staged == ["data", "data/masks.npy", "probes_in_x.npz"]


def test_the_kernel_environment_is_an_allow_list(monkeypatch):
    env = {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "GPU-x",
           "PGPASSWORD": "hunter2", "NBGRADER_DB_URL": "postgresql://u:p@h/db", "AWS_SECRET_ACCESS_KEY": "k",
           "SSH_AUTH_SOCK": "/tmp/agent", "AUTOGRADER_SECRETS": "/course/.autograder/secrets.json", "MY_DATA": "/d"}
    assert sandbox.kernel_environment(env) == {k: env[k] for k in ("PATH", "LC_ALL", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    monkeypatch.setenv(sandbox.EXTRA_ENV, "MY_DATA")
    assert sandbox.kernel_environment(env)["MY_DATA"] == "/d"  # a course may let a name through


def test_every_writable_mount_is_bounded_and_the_graders_folders_are_masked(tmp_path, monkeypatch):
    limits = sandbox.Limits(tmp_size=8 * 2**20)
    course = tmp_path / "usr" / "src" / "course"  # a course root inside a folder the sandbox binds
    course.mkdir(parents=True)
    cmd = sandbox.bwrap_command(["true"], str(tmp_path), [], {}, limits, devices=[], hidden=[str(course)])
    assert cmd[cmd.index("/dev/shm") - 3:cmd.index("/dev/shm") + 1] == ["--size", str(8 * 2**20), "--tmpfs", "/dev/shm"]
    assert cmd[cmd.index("--") - 4:cmd.index("--") - 2] == ["--remount-ro", "/"]
    assert ["--symlink", "/tmp", "/var/tmp"] == cmd[cmd.index("/var/tmp") - 2:cmd.index("/var/tmp") + 1]
    assert "--tmpfs" not in cmd[cmd.index("/dev/shm") + 1:]  # the course root is not below a bound folder here
    bound = ["--ro-bind", str(tmp_path / "usr"), str(tmp_path / "usr")]
    monkeypatch.setattr(sandbox, "SYSTEM_DIRS", (*sandbox.SYSTEM_DIRS, str(tmp_path / "usr")))
    cmd = sandbox.bwrap_command(["true"], str(tmp_path), [], {}, limits, devices=[], hidden=[str(course)])
    at = cmd.index(str(course))
    assert " ".join(bound) in " ".join(cmd) and cmd[at - 1] == "--tmpfs" and ["--remount-ro", str(course)] == cmd[
        cmd.index("--remount-ro"):cmd.index("--remount-ro") + 2]


@pytest.mark.skipif(os.getuid() != 0 and not os.path.exists("/usr/bin/bwrap"), reason="needs bubblewrap")
def test_the_sandbox_root_and_var_tmp_are_not_unbounded_tmpfs(tmp_path):
    limits = sandbox.Limits(tmp_size=4 * 2**20)
    script = ("for p in / /var/tmp /dev/shm; do dd if=/dev/zero of=$p/fill bs=1M count=8 2>/dev/null; "
              "echo $p $(du -m $p/fill 2>/dev/null | cut -f1); done")
    cmd = sandbox.bwrap_command(["/bin/sh", "-c", script], str(tmp_path), [], {"PATH": "/usr/bin:/bin"}, limits,
                                devices=[], hidden=[])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.split("\n")
    sizes = {line.split()[0]: int(line.split()[1]) if len(line.split()) > 1 else 0 for line in out if line}
    assert sizes["/"] == 0 and sizes["/var/tmp"] <= 4 and sizes["/dev/shm"] <= 4, sizes


def test_private_folders_are_refused_unless_private_and_are_removed_even_when_made_unreadable(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.RUNTIME_ENV, str(tmp_path / "rt"))
    folder = runtime.new_folder()
    assert stat.S_IMODE((tmp_path / "rt").stat().st_mode) == 0o700 and folder.parent == tmp_path / "rt"
    (folder / "x" / "y").mkdir(parents=True)
    (folder / "x" / "y" / "data").write_bytes(b"1" * 100)
    os.chmod(folder / "x" / "y", 0)
    os.chmod(folder / "x", 0)
    runtime.remove(folder)
    assert not folder.exists()
    os.chmod(tmp_path / "rt", 0o755)  # someone else could enter it
    with pytest.raises(PermissionError, match="mode 0700"):
        runtime.new_folder()
    dead = tmp_path / "rt" / "k-999999999-1-abc"
    dead.mkdir()
    assert runtime.stale_folders() == [dead] and runtime.reap_stale() == [dead] and not dead.exists()


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def test_only_the_locked_parameters_cell_sets_the_budget_while_grading():
    fake = nbformat.v4.new_markdown_cell('budget = "small"', metadata={"tags": ["parameters"]})
    real = nbformat.v4.new_code_cell('budget = "full"', metadata={
        "tags": ["parameters"], "nbgrader": {"grade_id": "parameters", "locked": True}})
    nb = _notebook(fake, real)
    assert parameters_cell(nb, graded=True) is real and parameters_cell(nb) is real
    pin_parameters(nb, {"budget": "small"}, graded=True)
    assert real.source == "budget = 'small'" and fake.source == 'budget = "small"'
    with pytest.raises(ValueError, match="no locked cell"):
        parameters_cell(_notebook(fake), graded=True)


def test_a_training_tag_buys_time_only_on_the_assignments_locked_cells(monkeypatch):
    monkeypatch.setenv("NBGRADER_TRAINING_TIMEOUT", "999")
    monkeypatch.setenv("NBGRADER_CELL_TIMEOUT", "11")
    locked = nbformat.v4.new_code_cell("fit()", metadata={"tags": ["training"], "nbgrader": {"grade_id": "t", "locked": True}})
    students = nbformat.v4.new_code_cell("while True: pass", metadata={"tags": ["training"]})
    assert cell_timeout(locked) == 999 and cell_timeout(students) == 11


def test_a_submission_with_links_is_not_graded_by_plain_nbgrader(tmp_path):
    (tmp_path / "dice_iou.ipynb").write_text("{}")
    RefuseLinkedFiles().preprocess(_notebook(), {"metadata": {"path": str(tmp_path)}})
    (tmp_path / "data.txt").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="not a regular file"):
        RefuseLinkedFiles().preprocess(_notebook(), {"metadata": {"path": str(tmp_path)}})


def _stream(text, name="stdout"):
    return NotebookNode(output_type="stream", name=name, text=text)


def test_feedback_drops_every_output_that_reproduces_hidden_test_code():
    hidden = "_check(_secret_inputs, expected=_answers_of_the_grader)"
    test = nbformat.v4.new_code_cell(f"assert f(1) == 2\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS",
                                     metadata={"nbgrader": {"grade": True, "grade_id": "t", "points": 1}})
    half = len(hidden) // 2
    echoes = {
        "plain": [_stream(hidden)],
        "respaced": [_stream(hidden.replace(",", " ,  "))],
        "zero-width": [_stream("\u200b".join(hidden))],
        "html": [NotebookNode(output_type="display_data", metadata={},
                              data={"text/html": "".join(f"<b>{c}</b>" for c in hidden.replace(">", "&gt;"))})],
        "split": [_stream(hidden[:half]), _stream(hidden[half:], "stderr")],
    }
    cells = {name: nbformat.v4.new_code_cell("print(In)", outputs=outs) for name, outs in echoes.items()}
    honest = nbformat.v4.new_code_cell("print('f(1) == 2')", outputs=[_stream("assert f(1) == 2 passed")])
    nb = _notebook(test, *cells.values(), honest)
    nb, _ = HideHiddenTests().preprocess(nb, {})
    for name, cell in cells.items():
        assert all(o.get("text") == HIDDEN_OUTPUT for o in cell.outputs), name
    assert honest.outputs[0].text == "assert f(1) == 2 passed"  # visible test code may be printed
    assert "_secret_inputs" not in test.source and "hidden tests are not shown" in test.source


def test_the_output_budget_counts_display_updates_and_widget_state():
    execute = sandbox.SandboxedExecute()
    execute._output_budget = 1000
    cell = nbformat.v4.new_code_cell("")
    update = {"msg_type": "update_display_data", "parent_header": {}, "header": {"msg_type": "update_display_data"},
              "content": {"data": {"text/plain": "x" * 600}, "metadata": {}, "transient": {"display_id": "d"}}}
    comm = {"msg_type": "comm_msg", "parent_header": {}, "header": {"msg_type": "comm_msg"},
            "content": {"comm_id": "c", "data": {"state": {"value": "y" * 600}}}}
    execute.process_message(update, cell, 0)  # within the budget: nbclient handles it
    assert execute._output_budget < 500
    assert execute.process_message(comm, cell, 0) is None and execute._output_budget < 0
    assert "output limit reached" in cell.outputs[-1].text and execute.widget_state == {}
    assert isinstance(sandbox.SandboxedKernelClient().context.getsockopt(__import__("zmq").MAXMSGSIZE), int)
    assert sandbox.SandboxedKernelClient().context.getsockopt(__import__("zmq").MAXMSGSIZE) == sandbox.MAX_MESSAGE


def test_a_record_counts_only_when_complete_and_positive():
    record = {"complete": True, "cells": {"a": {"ok": True}, "b": {"ok": False}, "c": {"ok": "yes"}}}
    assert checks.verified(record, "a") and not checks.verified(record, "b") and not checks.verified(record, "c")
    assert not checks.verified({**record, "complete": False}, "a") and not checks.verified(None, "a")
    assert not checks.verified(record, "missing")


def test_a_sandboxed_kernel_starts_and_answers(tmp_path):
    """A real kernel through the whole launch path (launcher, limits, bubblewrap, ipc)."""
    import asyncio

    async def run() -> str:
        km = sandbox.SandboxedKernelManager(kernel_name="python3")
        await km.start_kernel(cwd=str(tmp_path))
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            reply = await kc.execute_interactive("import os; print(os.getcwd(), sorted(os.environ)[:3])", timeout=60)
            return reply["content"]["status"]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    assert asyncio.run(run()) == "ok"
