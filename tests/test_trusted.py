"""Trusted scoring of the final assignment: the model is scored out of the student's kernel."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from autograder import checks, course, grading, trusted, verdicts
from autograder.course import ASSIGNMENTS, ROOT, solution_path
from autograder.examples import completed
from autograder.gradebook import sqlite_url
from course_lib import probes as kernel_probes
from course_lib.models import ResNetFPN
from course_lib.train import save_checkpoint

final = course.grading_module("04_segmentation_assignment")  # its trusted scorer

PROBES = {assignment: course.probes(assignment) for assignment in course.ASSIGNMENTS}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SEED = 12_345  # a hidden-split seed for the tests


def test_no_cell_the_kernel_runs_holds_the_hidden_split_and_the_thresholds_are_the_notebooks(tmp_path):
    nb = nbformat.read(solution_path(final.ASSIGNMENT), as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "_HiddenShapes" not in code and "86_420_135" not in code  # the seed of earlier versions
    seed = final.hidden_seed(tmp_path)  # drawn for this installation, kept out of git
    assert seed == final.hidden_seed(tmp_path) and seed != final.hidden_seed(tmp_path / "another")
    assert str(seed) not in code and f"{seed:_}" not in code
    assert (tmp_path / ".autograder" / "secrets.json").stat().st_mode & 0o777 == 0o600
    # the notebook shows the thresholds from the calibration file the grader reads, not a copy
    shown = next(c for c in nb.cells if c.cell_type == "code" and final.CALIBRATION_FILE.name in c.source)
    assert shown.metadata["nbgrader"]["locked"] and not re.search(r"0\.\d\d", shown.source)
    assert all(len(final.thresholds(budget)) == 3 for budget in final.BUDGETS)
    export = next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == final.GRADE_CELLS[0])
    assert f'_hidden_save("{final.MODEL_FILE}", model)' in export.split("### BEGIN HIDDEN TESTS")[1]


def _export(path):
    model = ResNetFPN(5, fpn_channels=32, head_channels=16)
    save_checkpoint(path, model)
    return model


def test_an_untrained_export_scores_low_and_reproducibly(tmp_path):
    _export(tmp_path / "m.pt")
    first, reason = final.score_export(tmp_path / "m.pt", 64, SEED)
    low, middle, top = final.thresholds("small")
    assert reason == "" and 0.0 <= first < low
    assert final.score_export(tmp_path / "m.pt", 64, SEED) == (first, "")
    assert final.points(first, "small") == [False, False, False]
    assert final.points((middle + top) / 2, "small") == [True, True, False]
    assert final.points(top, "small") == [True, True, True]


def test_the_budget_a_model_was_trained_with_is_flagged_against_the_pinned_one():
    pinned = {"train_size": 512, "epochs": 4, "image_size": 64}
    within = final.budget_flag({"images_seen": 2048, "steps": 256, "epochs": 4, "image_size": 64}, pinned)
    assert "OVER" not in within and "2,048 images" in within
    over = final.budget_flag({"images_seen": 4096, "steps": 512, "epochs": 8, "image_size": 96}, pinned)
    assert over.startswith("OVER BUDGET") and "4,096 images seen > 2,048 allowed" in over and "96 px > 64 px" in over
    assert final.budget_flag(None, pinned).startswith("BUDGET UNKNOWN")
    assert final.budget_flag({}, pinned).startswith("BUDGET UNKNOWN")
    pinned.update(fpn_channels=64, head_channels=32)  # a narrower model is a choice; a wider one is over
    narrow = {"images_seen": 2048, "steps": 256, "epochs": 4, "image_size": 64, "fpn_channels": 32, "head_channels": 32}
    assert "OVER" not in final.budget_flag(narrow, pinned)
    wide = final.budget_flag(dict(narrow, fpn_channels=128), pinned)
    assert wide.startswith("OVER BUDGET") and "fpn_channels 128 > 64" in wide


def test_training_outside_the_training_cells_is_flagged():
    nb = nbformat.read(solution_path(final.ASSIGNMENT), as_version=4)
    assert final.training_outside_training_cells(nb) == []  # the solution trains in the locked cells only
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "training_settings":
            cell.source += "\nfor _ in range(3):\n    my_train_step(model, images, masks, loss_fn, opt)\n"
    nb.cells.append(nbformat.v4.new_code_cell("%time history = fit(model, loader, None, loss, epochs=50)"))
    nb.cells.append(nbformat.v4.new_code_cell("def later(model):\n    loss.backward()\n    opt.step()"))  # only defined
    nb.cells.append(nbformat.v4.new_code_cell("class Sneaky:\n    history = fit(model, loader, None, loss, epochs=9)"))
    sneaky = nbformat.v4.new_code_cell("history = fit(model, loader, None, loss, epochs=9)")
    sneaky.metadata["tags"] = ["training"]  # the student's own tag exempts nothing
    nb.cells.append(sneaky)
    nb.cells.append(nbformat.v4.new_code_cell("x = 1\0"))
    n = len(nb.cells)
    flags = final.training_outside_training_cells(nb)
    assert flags[:-1] == ["training_settings calls my_train_step", f"cell {n - 5} calls fit", f"cell {n - 3} calls fit",
                          f"cell {n - 2} calls fit"]
    assert flags[-1].startswith(f"cell {n - 1} could not be read")  # a null byte: ValueError or SyntaxError


def test_a_missing_or_malformed_calibration_fails_the_cells_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(final, "CALIBRATION_FILE", tmp_path / "calibration.json")
    with pytest.raises(FileNotFoundError):
        final.points(0.9, "full")
    (tmp_path / "calibration.json").write_text('{"budgets": {"full": {"thresholds": [0.6, 0.5, 0.4]}}}')
    with pytest.raises(ValueError, match="increasing"):
        final.points(0.9, "full")


class _Payload:  # a pickle that would run code when loaded without weights_only
    def __reduce__(self):
        return (print, ("pwned",))


def test_exports_that_are_not_plain_data_or_not_a_course_model_score_nothing(tmp_path):
    torch.save({"config": {}, "state_dict": _Payload()}, tmp_path / "pickle.pt")
    assert final.score_export(tmp_path / "pickle.pt", 64, SEED)[0] is None
    assert "not plain data" in final.score_export(tmp_path / "pickle.pt", 64, SEED)[1]
    state = {"config": {"arch": "fpn", "num_classes": 5, "backbone": "resnet18", "fpn_channels": 32,
                        "head_channels": 16, "weights": "/etc/passwd"}, "state_dict": {}}
    torch.save(state, tmp_path / "config.pt")
    miou, reason = final.score_export(tmp_path / "config.pt", 64, SEED)
    assert miou is None and "the model config must be arch, num_classes" in reason
    state["config"] = {**state["config"], "normalize": "yes"}
    del state["config"]["weights"]
    torch.save(state, tmp_path / "normalize.pt")
    miou, reason = final.score_export(tmp_path / "normalize.pt", 64, SEED)
    assert miou is None and "normalize must be True or False" in reason
    miou, reason = final.score_export(tmp_path / "missing.pt", 64, SEED)
    assert miou is None and "no exported model" in reason


@pytest.mark.slow
def test_tampering_in_the_kernel_does_not_change_the_trusted_score(tmp_path):
    nb = completed(final.ASSIGNMENT)
    settings = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "training_settings")
    settings.source += "\ntrain_epochs = 1"
    train = next(i for i, c in enumerate(nb.cells) if "history = fit(fpn_model" in c.source)
    nb.cells.insert(train + 1, nbformat.v4.new_code_cell(
        "import course_lib.train\n"
        "course_lib.train.evaluate = lambda *args, **kwargs: {'miou': 1.0}  # forge the metric\n"
        "model = ResNetFPN(NUM_CLASSES, backbone='resnet18', fpn_channels=fpn_channels, head_channels=head_channels)"))
    (tmp_path / "class").mkdir()
    nbformat.write(nb, tmp_path / "class" / "forger.ipynb")
    out = tmp_path / "out"
    opts = grading.GradingOptions(
        assignment=final.ASSIGNMENT, submissions=tmp_path / "class", out=out, db_url=sqlite_url(out / "gradebook.db"),
        slots=grading.make_slots(1, []), cell_timeout=120, training_timeout=300,
        parameters=course.assignment(final.ASSIGNMENT).quick_setting,  # what is scored is a forged model anyway
        progress=False)
    (row,) = grading.grade(opts).outcomes
    graded = nbformat.read(out / "autograded" / "forger" / final.ASSIGNMENT / course.ASSIGNMENTS[final.ASSIGNMENT], as_version=4)
    text = "\n".join(o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.outputs)
    assert text.count("model ok") == 3, text  # the kernel's own checks of the three cells passed...
    assert row["status"] == "graded" and row["auto_score"] == 8.0, row  # ...the grade did not: 14 - 6 mIoU points
    assert "trusted: hidden-split mIoU" in row["reason"] and "0 of 3 cells pass" in row["reason"]
    failed = [c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") in final.GRADE_CELLS]
    assert all(any(o.get("ename") == checks.CHECK_FAILED for o in c.outputs) for c in failed)  # says why
    assert not (out / "autograded" / "forger" / final.ASSIGNMENT / final.MODEL_FILE).exists()


ALL_PROBES = [(assignment, grade_id) for assignment, probes in PROBES.items() for grade_id in probes]


@pytest.mark.parametrize("assignment, grade_id", ALL_PROBES, ids=[g for _, g in ALL_PROBES])
def test_probe_results_are_checked_as_plain_data_against_course_lib(tmp_path, assignment, grade_id):
    expected = verdicts.expected_answers(PROBES[assignment][grade_id])
    right = {key: value for key, value in expected.items() if key not in (verdicts.RTOL, verdicts.ATOL)}
    last = max(int(key.rsplit("_", 1)[1]) for key in right)
    out = verdicts.outputs_path(tmp_path, grade_id)
    assert verdicts.check_probe(expected, out).startswith("no probe results")  # the hidden test never got there
    np.savez(out, **right)
    assert verdicts.check_probe(expected, out) == ""
    for key in [k for k in right if k.endswith(f"_{last}") and right[k].dtype.kind in "iuf"]:
        off = right[key] + 1 if right[key].dtype.kind in "iu" else right[key] * 1.01 + 0.01
        np.savez(out, **dict(right, **{key: off}))
        assert f"probe {last}" in verdicts.check_probe(expected, out), key  # one number off in the last case
    np.savez(out, **dict(right, **{next(iter(right)): np.array([object()], dtype=object)}))
    assert "unreadable" in verdicts.check_probe(expected, out)  # loading it would need a pickle


def test_the_probe_cache_is_made_once_and_is_what_the_hooks_use(tmp_path):
    cache = verdicts.probe_cache("02_resnet_fpn", tmp_path)
    assert verdicts.probed_cells(cache) == sorted(PROBES["02_resnet_fpn"])
    stamp = verdicts.expected_path(cache, "test-ex2-merge").stat().st_mtime_ns
    assert verdicts.probe_cache("02_resnet_fpn", tmp_path) == cache  # reused, not made again
    assert verdicts.expected_path(cache, "test-ex2-merge").stat().st_mtime_ns == stamp
    assert sorted(verdicts.probe_inputs(cache)) == sorted(
        kernel_probes.inputs_path(".", g).name for g in PROBES["02_resnet_fpn"])  # the names the kernel reads
    assert sorted(verdicts.probe_outputs(cache).values()) == sorted(
        kernel_probes.outputs_path(".", g).name for g in PROBES["02_resnet_fpn"])  # and writes
    salted = verdicts.probe_cache("02_resnet_fpn", tmp_path, salt=7)
    assert salted != cache  # another installation draws other inputs
    assert not np.array_equal(verdicts.load_arrays(verdicts.inputs_path(salted, "test-ex2-merge"))["c_5"],
                              verdicts.load_arrays(verdicts.inputs_path(cache, "test-ex2-merge"))["c_5"])
    assert kernel_probes.outputs_path(".", "x").name == verdicts.outputs_path(Path("."), "x").name
    assert verdicts.probed_cells(verdicts.probe_cache("no_such_assignment", tmp_path)) == []


def test_counts_are_compared_exactly_and_floats_must_stay_floats(tmp_path):
    expected = verdicts.expected_answers(PROBES["02_resnet_fpn"]["test-ex1-lateral"])
    right = {key: value for key, value in expected.items() if key not in (verdicts.RTOL, verdicts.ATOL)}
    out = tmp_path / "out.npz"
    np.savez(out, **dict(right, m_1=right["m_1"] + 1))  # 524,544 parameters: within rtol, still wrong
    assert "probe 1: 'm'" in verdicts.check_probe(expected, out)
    np.savez(out, **dict(right, y_0=np.rint(right["y_0"]).astype(np.int64)))
    assert "expected floats" in verdicts.check_probe(expected, out)


def test_probe_results_and_exports_that_are_symlinks_are_not_followed(tmp_path):
    expected = verdicts.expected_answers(PROBES["03_dice_iou"]["test_dice_score"])
    real = tmp_path / "real.npz"  # right answers, but behind a link the kernel made
    np.savez(real, **{k: v for k, v in expected.items() if k not in (verdicts.RTOL, verdicts.ATOL)})
    assert verdicts.check_probe(expected, real) == ""
    link = verdicts.outputs_path(tmp_path, "test_dice_score")
    link.symlink_to(real)
    assert "not a regular file" in verdicts.check_probe(expected, link)
    (tmp_path / final.MODEL_FILE).symlink_to(tmp_path / "gradebook.db")  # dangling here, the grader's file there
    miou, reason = final.score_export(tmp_path / final.MODEL_FILE, 64, SEED)
    assert miou is None and "not a regular file" in reason


def test_a_zip_bomb_of_probe_results_is_refused_before_it_is_unpacked(tmp_path, monkeypatch):
    monkeypatch.setattr(verdicts, "MAX_OUTPUT_BYTES", 2**20)
    np.savez_compressed(tmp_path / "bomb.npz", y_0=np.zeros(2**19))  # 4 MiB of zeros, a few KiB packed
    assert (tmp_path / "bomb.npz").stat().st_size < 2**15
    with pytest.raises(ValueError, match="unpacked"):
        verdicts.load_arrays(tmp_path / "bomb.npz")


def test_probe_inputs_cover_the_edge_cases():
    pyramids, fpn_probes, dice = (course.grading_module(a) for a in ("01_pyramids_vs_fpn", "02_resnet_fpn", "03_dice_iou"))
    masks = dice._mask_pairs(0)
    assert not masks["a_0"].any() and not masks["b_0"].any()  # two empty masks
    assert len({masks[f"a_{k}"].ndim for k in range(int(masks["n"]))}) == 3
    logits = dice._logits_targets(0)
    assert {logits[f"x_{k}"].dtype for k in range(int(logits["n"]))} == {np.dtype("float32"), np.dtype("float64")}
    assert np.abs(logits["x_4"]).max() > 100  # large logits: a hand-written exp() overflows
    images = pyramids._images(0)
    assert {images[f"x_{k}"].dtype for k in range(int(images["n"]))} == {np.dtype("float32"), np.dtype("uint8")}
    assert {images[f"x_{k}"].ndim for k in range(int(images["n"]))} == {3, 4}
    sizes = pyramids._image_sizes(0)["q_0"]
    assert (sizes % 2 == 1).any() and sizes.min() == 1  # odd sizes and a 1×1 image
    fpn = fpn_probes._fpn_cases(fpn_probes.FPN_EQUIVALENCE, 0)
    assert sorted(int(fpn[f"ch_{k}"].size) for k in range(int(fpn["n"])))[:3] == [1, 2, 3]  # 1, 2, 3 levels
    assert any(s % 2 for s in fpn["f0_1"].shape[-2:])  # odd level sizes: 97×131 → 25×33


def test_every_autograded_point_is_decided_out_of_the_kernel():
    """Each autograded cell is probed, or scored from the exported model (the final assignment's mIoU)."""
    for assignment in ASSIGNMENTS:
        cells = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(solution_path(assignment), as_version=4).cells
                 if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
        trusted_cells = set(trusted.trusted_cells(assignment))  # as its assignment.toml declares them
        assert set(cells) == set(PROBES[assignment]) | trusted_cells, assignment
        for grade_id in PROBES[assignment]:
            hidden = cells[grade_id].split("### BEGIN HIDDEN TESTS")[1]
            assert f'_answer_probes("{grade_id}", ' in hidden, grade_id


def test_the_trusted_score_does_not_depend_on_whether_autocast_is_available(tmp_path, monkeypatch):
    """Scored in float32: a CPU (or GPU) with native bf16 gives the same points as one without."""
    _export(tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    monkeypatch.setenv("AUTOGRADER_SANDBOX", "off")  # the sandbox would hide the sitecustomize below
    plain = final.score_model(data, 64, SEED)
    site, loaded = tmp_path / "site", tmp_path / "bf16-forced"
    site.mkdir()
    (site / "sitecustomize.py").write_text(  # this "host" has native bf16 everywhere
        "import course_lib.train as t\nt._cpu_has_native_bf16 = lambda: True\n"
        f"open({str(loaded)!r}, 'w').write('yes')\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    forced = final.score_model(data, 64, SEED)
    assert loaded.exists()  # the scorer ran where autocast would pick bf16...
    assert forced == plain and plain[0] is not None  # ...and scored the same, bit for bit
    assert final.points(forced[0], "small") == final.points(plain[0], "small")


def test_the_largest_model_the_scorer_accepts_fits_the_files_a_kernel_may_leave():
    from autograder import sandbox
    from course_lib.models import build_model

    for backbone in sorted(final.ALLOWED_CONFIG["backbone"]):
        config = {"arch": "fpn", "num_classes": final.NUM_CLASSES, "backbone": backbone,
                  "fpn_channels": final.MAX_CHANNELS, "head_channels": final.MAX_CHANNELS}
        with torch.device("meta"):
            model = build_model(config)
        size = 4 * sum(t.numel() for t in [*model.parameters(), *model.buffers()])  # float32
        assert size < 0.9 * min(sandbox.MAX_LEFT_FILE, sandbox.Limits().file_size), (backbone, size)


def test_a_trusted_scorer_that_answers_other_cells_or_no_reasons_fails_them_closed(monkeypatch, tmp_path):
    """The scorer must answer {cell: '' or why not} for exactly its declared cells; anything else
    fails those cells closed, and its pass never overrules another check of the same cell."""
    nb = nbformat.read(solution_path("03_dice_iou"), as_version=4)
    monkeypatch.setattr(trusted, "trusted_cells", lambda assignment: ("test_x", "test_y"))
    for answer in ({"test_x": ""}, {"test_x": "", "test_y": None}, {"test_x": "", "test_y": "", "test_z": ""}, ["test_x"]):
        monkeypatch.setattr(trusted, "scorer", lambda assignment, a=answer: (lambda nb, left, root: (a, "note")))
        cells, notes = checks._verify("03_dice_iou", nb, {}, str(tmp_path))
        assert cells["test_x"]["check_failed"] and cells["test_y"]["check_failed"], answer
        assert not cells["test_x"]["ok"] and "trusted scoring failed" in notes[-1]
    monkeypatch.setattr(trusted, "trusted_cells", lambda assignment: ("test_dice_score",))
    monkeypatch.setattr(trusted, "scorer", lambda assignment: (lambda nb, left, root: ({"test_dice_score": ""}, "ok")))
    cells, _ = checks._verify("03_dice_iou", nb, {}, str(tmp_path))
    assert cells["test_dice_score"]["ok"] is False  # its probe left no results: the trusted pass does not overrule it


def test_a_hidden_test_answering_an_undeclared_probe_is_refused(tmp_path):
    """A probe the source's hidden tests answer but grading.py does not declare would go
    unchecked (the kernel's verdict would stand): the course refuses to make its cache."""
    copy = tmp_path / "course"
    shutil.copytree(ROOT / "solutions", copy / "solutions")
    shutil.copy(ROOT / "nbgrader_config.py", copy / "nbgrader_config.py")
    module = copy / "solutions" / "03_dice_iou" / "grading.py"
    text = module.read_text()
    module.write_text(text.replace('    "test_iou_score": Probe(', '    "test_iou_scor": Probe('))
    env = {k: v for k, v in os.environ.items() if k != course.COURSE_DIR_ENV}
    done = subprocess.run([sys.executable, "-c", "from autograder import course; course.probes('03_dice_iou')"],
                          cwd=copy, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "BadDeclaration" in done.stderr and "test_iou_score" in done.stderr, done.stderr
    module.write_text(text.replace("PROBES: dict[str, Probe] = {", "PROBE: dict[str, Probe] = {"))
    done = subprocess.run([sys.executable, "-c", "from autograder import course; course.probes('03_dice_iou')"],
                          cwd=copy, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "PROBES must be a dict" in done.stderr, done.stderr  # a misspelt PROBES
