"""Trusted scoring of the final assignment: the model is scored out of the student's kernel."""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pytest
import torch

from autograder import grading, trusted, verdicts
from autograder.course import SMALL_PARAMETERS, solution_path
from autograder.examples import completed
from autograder.gradebook import sqlite_url
from course_lib.models import ResNetFPN
from course_lib.train import save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_hidden_split_and_thresholds_are_the_notebooks():
    source = "\n".join(c.source for c in nbformat.read(solution_path(trusted.ASSIGNMENT), as_version=4).cells)
    assert set(re.findall(r"seed=([\d_]+)\)", source)) >= {f"{trusted.HIDDEN_SEED:_}"}
    assert f"_HiddenShapes({trusted.HIDDEN_SIZE}," in source
    literal = re.search(r"_hidden_threshold = (\{.*?\})\[budget\]", source).group(1)
    assert eval(literal) == trusted.THRESHOLDS  # noqa: S307 - our own notebook's literal
    assert f'_hidden_save("{trusted.MODEL_FILE}", model)' in source


def _export(path):
    model = ResNetFPN(5, fpn_channels=32, head_channels=16)
    save_checkpoint(path, model)
    return model


def test_an_untrained_export_scores_low_and_reproducibly(tmp_path):
    _export(tmp_path / "m.pt")
    first, reason = trusted.score_export(tmp_path / "m.pt", 64)
    assert reason == "" and 0.0 <= first < min(trusted.THRESHOLDS["small"])
    assert trusted.score_export(tmp_path / "m.pt", 64) == (first, "")
    assert trusted.points(first, "small") == [False, False, False]
    assert trusted.points(0.24, "small") == [True, True, False]


class _Payload:  # a pickle that would run code when loaded without weights_only
    def __reduce__(self):
        return (print, ("pwned",))


def test_exports_that_are_not_plain_data_or_not_a_course_model_score_nothing(tmp_path):
    torch.save({"config": {}, "state_dict": _Payload()}, tmp_path / "pickle.pt")
    assert trusted.score_export(tmp_path / "pickle.pt", 64)[0] is None
    assert "not plain data" in trusted.score_export(tmp_path / "pickle.pt", 64)[1]
    state = {"config": {"arch": "fpn", "num_classes": 5, "backbone": "resnet18", "fpn_channels": 32,
                        "head_channels": 16, "weights": "/etc/passwd"}, "state_dict": {}}
    torch.save(state, tmp_path / "config.pt")
    miou, reason = trusted.score_export(tmp_path / "config.pt", 64)
    assert miou is None and "config must be exactly" in reason
    miou, reason = trusted.score_export(tmp_path / "missing.pt", 64)
    assert miou is None and "no exported model" in reason


@pytest.mark.slow
def test_tampering_in_the_kernel_does_not_change_the_trusted_score(tmp_path):
    nb = completed(trusted.ASSIGNMENT)
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
        assignment=trusted.ASSIGNMENT, submissions=tmp_path / "class", out=out, db_url=sqlite_url(out / "gradebook.db"),
        slots=grading.make_slots(1, []), cell_timeout=120, training_timeout=300,
        parameters=SMALL_PARAMETERS[trusted.ASSIGNMENT], progress=False)
    (row,) = grading.grade(opts).outcomes
    graded = (out / "autograded" / "forger" / trusted.ASSIGNMENT / f"{trusted.NOTEBOOK}.ipynb").read_text()
    assert "hidden-split mIoU 1.000" in graded  # the kernel was fooled...
    assert row["status"] == "graded" and row["auto_score"] == 8.0, row  # ...the grade was not: 14 - 6 mIoU points
    assert "trusted: hidden-split mIoU" in row["reason"] and "0 of 3 cells pass" in row["reason"]
    assert not (out / "autograded" / "forger" / trusted.ASSIGNMENT / trusted.MODEL_FILE).exists()


@pytest.mark.parametrize("grade_id", sorted(verdicts.PROBES["03_dice_iou"]))
def test_probe_results_are_checked_as_plain_data_against_course_lib(tmp_path, grade_id):
    probe = verdicts.PROBES["03_dice_iou"][grade_id]
    verdicts.write_inputs("03_dice_iou", tmp_path)
    with np.load(verdicts.inputs_path(tmp_path, grade_id)) as data:
        inputs = {k: data[k] for k in data.files}
    right = {f"{key}_{k}": value for k in range(int(inputs["n"])) for key, value in probe.reference(inputs, k).items()}
    out = verdicts.outputs_path(tmp_path, grade_id)
    assert verdicts.check_probe(probe, out).startswith("no usable probe results")  # nothing written
    np.savez(out, **right)
    assert verdicts.check_probe(probe, out) == ""
    wrong = dict(right, y_3=right["y_3"] + 0.01)
    np.savez(out, **wrong)
    assert "probe 3" in verdicts.check_probe(probe, out)
    np.savez(out, **dict(right, y_0=np.array([object()], dtype=object)))  # would need a pickle to load
    assert verdicts.check_probe(probe, out) != ""


def test_probe_inputs_cover_the_edge_cases():
    masks = verdicts._mask_pairs(0)
    assert not masks["a_0"].any() and not masks["b_0"].any()  # two empty masks
    assert len({masks[f"a_{k}"].ndim for k in range(int(masks["n"]))}) == 3
    logits = verdicts._logits_targets(0)
    assert {logits[f"x_{k}"].dtype for k in range(int(logits["n"]))} == {np.dtype("float32"), np.dtype("float64")}
    assert np.abs(logits["x_4"]).max() > 100  # large logits: a hand-written exp() overflows


def test_every_probed_test_cell_writes_its_probe_results():
    for assignment, probes in verdicts.PROBES.items():
        cells = {c.metadata["nbgrader"]["grade_id"]: c.source
                 for c in nbformat.read(solution_path(assignment), as_version=4).cells if "nbgrader" in c.metadata}
        for grade_id in probes:
            hidden = cells[grade_id].split("### BEGIN HIDDEN TESTS")[1]
            assert f"probes_in_{grade_id}.npz" in hidden and f"probes_out_{grade_id}.npz" in hidden
