"""Confusion matrix, IoU and Dice: hand examples, a brute-force count, set scores."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.losses import dice_loss, iou_loss
from course_lib.metrics import ConfusionMatrix, batch_scores, dice_score, iou_score, mean_iou


def _brute_force(pred, target, num_classes, ignore_index=None):
    """Counts pixel by pixel in plain Python, and the per-class scores from them."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist(), strict=True):
        if t != ignore_index:
            m[t, p] += 1
    iou, dice = [], []
    for c in range(num_classes):
        tp, fp, fn = m[c, c], m[:, c].sum() - m[c, c], m[c, :].sum() - m[c, c]
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    return m, np.array(iou), np.array(dice)


def _random_labels(shape, num_classes, ignore_index=None, ignored_fraction=0.2):
    pred = torch.randint(0, num_classes, shape)
    target = torch.randint(0, num_classes, shape)
    if ignore_index is not None:
        target[torch.rand(shape) < ignored_fraction] = ignore_index
    return pred, target


# --- ConfusionMatrix ------------------------------------------------------------------------

def test_hand_example():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # TP = (1, 2, 0), FP = (1, 1, 0), FN = (1, 0, 1)
    assert cm.iou().tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert cm.dice().tolist() == pytest.approx([1 / 2, 4 / 5, 0.0])
    assert cm.mean_iou() == pytest.approx(1 / 3)
    assert cm.mean_dice() == pytest.approx(1.3 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.matrix.dtype == torch.int64 and cm.matrix.device.type == "cpu"


@pytest.mark.parametrize("ignore_index", [None, 255, 0])
def test_matches_brute_force(ignore_index):
    pred, target = _random_labels((3, 17, 19), 5, ignore_index)
    cm = ConfusionMatrix(5, ignore_index=ignore_index)
    cm.update(pred, target)
    m, iou, dice = _brute_force(pred, target, 5, ignore_index)
    assert np.array_equal(cm.matrix.numpy(), m)
    np.testing.assert_allclose(cm.iou().numpy(), iou, rtol=1e-12)
    np.testing.assert_allclose(cm.dice().numpy(), dice, rtol=1e-12)
    assert cm.mean_iou() == pytest.approx(np.nanmean(iou), rel=1e-12)
    assert cm.mean_dice() == pytest.approx(np.nanmean(dice), rel=1e-12)
    assert cm.pixel_accuracy() == pytest.approx(np.trace(m) / m.sum(), rel=1e-12)
    if ignore_index == 0:  # ignoring a real class leaves its row empty
        assert cm.matrix[0].sum() == 0 and cm.matrix[:, 0].sum() > 0


def test_accumulating_updates_equals_one_update_on_the_concatenation():
    batches = [_random_labels((2, 8, 9), 4, 255) for _ in range(3)]
    accumulated = ConfusionMatrix(4, ignore_index=255)
    for pred, target in batches:
        accumulated.update(pred, target)
    once = ConfusionMatrix(4, ignore_index=255)
    once.update(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
    assert torch.equal(accumulated.matrix, once.matrix)
    assert accumulated.mean_iou() == once.mean_iou()
    # Dataset-wide IoU is not the mean of per-batch IoUs.
    per_batch = np.mean([mean_iou(p, t, 4, ignore_index=255) for p, t in batches])
    assert per_batch != pytest.approx(once.mean_iou(), abs=1e-9)


def test_reset_and_matrix_is_a_copy():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    m = cm.matrix
    m += 100
    assert cm.matrix.sum() == 3
    cm.reset()
    assert cm.matrix.sum() == 0 and math.isnan(cm.mean_iou()) and math.isnan(cm.pixel_accuracy())


def test_mean_iou_leaves_out_absent_classes():
    # Class 3 appears in neither prediction nor target: NaN and left out.
    # Class 2 appears only in the prediction: IoU 0, counted.
    target = torch.tensor([0, 0, 1, 1, 1])
    pred = torch.tensor([0, 2, 1, 1, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    iou = cm.iou()
    assert math.isnan(iou[3]) and math.isnan(cm.dice()[3])
    assert iou[:3].tolist() == pytest.approx([1 / 2, 1.0, 0.0])
    assert cm.mean_iou() == pytest.approx(1.5 / 3)
    assert mean_iou(pred, target, 4) == pytest.approx(1.5 / 3)


@pytest.mark.parametrize("pred,target,match", [
    (torch.tensor([0, 3]), torch.tensor([0, 1]), "predictions"),
    (torch.tensor([0, -1]), torch.tensor([0, 1]), "predictions"),
    (torch.tensor([0, 1]), torch.tensor([0, 3]), "target"),
    (torch.tensor([0, 1]), torch.tensor([0, 1, 2]), "shape"),
    (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), "integer"),
])
def test_update_errors(pred, target, match):
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred, target)


def test_ignored_target_pixels_need_no_valid_class():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([[0, 1], [2, 2]], dtype=torch.uint8), torch.tensor([[0, 255], [255, 2]]))
    assert cm.matrix.sum() == 2 and cm.pixel_accuracy() == 1.0


def test_functional_mean_iou_matches_class():
    pred, target = _random_labels((2, 10, 10), 6, 255)
    cm = ConfusionMatrix(6, ignore_index=255)
    cm.update(pred, target)
    assert mean_iou(pred, target, 6, ignore_index=255) == cm.mean_iou()
    assert isinstance(mean_iou(pred, target, 6, ignore_index=255), float)


def test_confident_soft_losses_equal_hard_scores():
    # With saturated probabilities the soft Dice/IoU are the hard ones, on every class present.
    pred, target = _random_labels((2, 12, 12), 4)
    logits = 1e4 * F.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    assert dice_loss(logits, target).item() == pytest.approx(1 - cm.mean_dice(), abs=1e-5)
    assert iou_loss(logits, target).item() == pytest.approx(1 - cm.mean_iou(), abs=1e-5)


# --- set scores -----------------------------------------------------------------------------

def test_set_scores_hand_example():
    a, b = np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)
    assert dice_score(a, b) == pytest.approx(0.5)  # 2·1 / (2 + 2)
    assert iou_score(a, b) == pytest.approx(1 / 3)  # 1 / 3
    assert dice_score(a, a) == 1.0 and iou_score(a, a) == 1.0
    assert dice_score(a, ~a) == 0.0 and iou_score(a, ~a) == 0.0


def test_set_scores_of_empty_masks():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert dice_score(empty, empty) == 1.0 and iou_score(empty, empty) == 1.0
    assert dice_score(empty, full) == 0.0 and iou_score(full, empty) == 0.0


def test_set_scores_accept_numpy_and_torch_alike():
    a = torch.rand(3, 16, 16) > 0.5
    b = torch.rand(3, 16, 16) > 0.3
    for score in (dice_score, iou_score):
        expected = score(a.numpy(), b.numpy())
        assert isinstance(expected, float)
        assert score(a, b) == expected == score(a, b.numpy()) == score(a.int(), b.float())


def test_dice_is_a_function_of_iou():
    rng = np.random.default_rng(0)
    for _ in range(50):
        shape = tuple(rng.integers(1, 20, size=2))
        a, b = rng.random(shape) < rng.random(), rng.random(shape) < rng.random()
        iou = iou_score(a, b)
        assert dice_score(a, b) == pytest.approx(2 * iou / (1 + iou), abs=1e-12)


def test_set_scores_agree_with_confusion_matrix():
    pred, target = _random_labels((2, 9, 9), 2)
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert cm.dice()[1].item() == pytest.approx(dice_score(pred == 1, target == 1))
    assert cm.iou()[0].item() == pytest.approx(iou_score(pred == 0, target == 0))


@pytest.mark.parametrize("a,b,match", [
    (np.zeros(3, bool), np.zeros(4, bool), "shape"),
    (np.array([0.2, 1.0]), np.array([True, False]), "boolean"),
    (torch.tensor([0, 2]), torch.tensor([True, False]), "boolean"),
])
def test_set_score_errors(a, b, match):
    for score in (dice_score, iou_score):
        with pytest.raises(ValueError, match=match):
            score(a, b)


def test_batch_scores_are_the_scores_of_each_pair():
    rng = np.random.default_rng(3)
    a = rng.random((30, 4, 5)) < rng.random((30, 1, 1))
    b = rng.random((30, 4, 5)) < rng.random((30, 1, 1))
    a[0], b[0] = False, False  # both empty: 1.0
    a[1], b[1] = True, False
    dice, iou = batch_scores(a, b)
    assert dice.dtype == iou.dtype == np.float64 and dice.shape == iou.shape == (30,)
    assert dice.tolist() == [dice_score(x, y) for x, y in zip(a, b, strict=True)]
    assert iou.tolist() == [iou_score(x, y) for x, y in zip(a, b, strict=True)]
    assert dice[0] == iou[0] == 1.0 and dice[1] == iou[1] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        batch_scores(a, b[:, :3])
