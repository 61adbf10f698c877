"""Soft Dice/IoU losses: hand examples, a loop reference, gradcheck, MONAI and smp, numerics;
Lovász-Softmax: brute force from its definition, smp, its properties."""

import math

import monai.losses
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from course_lib.losses import (
    LOSS_KEYS,
    CombinedLoss,
    DiceLoss,
    IoULoss,
    dice_loss,
    iou_loss,
    lovasz_grad,
    lovasz_softmax,
)

LOSSES = {"dice": dice_loss, "iou": iou_loss}


def _reference(logits, target, kind, mode="multiclass", smooth=0.0, ignore_index=None):
    """A plain numpy loop over classes, in float64, following the module docstring."""
    x = logits.detach().double().numpy()
    t = target.numpy().reshape(x.shape[0], *x.shape[2:])
    valid = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    if mode == "multiclass":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probs = [(e / e.sum(axis=1, keepdims=True))[:, c] for c in range(x.shape[1])]
        truths = [t == c for c in range(x.shape[1])]
    else:
        probs, truths = [1 / (1 + np.exp(-x[:, 0]))], [t == 1]
    losses = []
    for p, g in zip(probs, truths, strict=True):
        p, g = p[valid], g[valid].astype(float)
        if g.sum() == 0:
            continue
        inter = (p * g).sum()
        if kind == "dice":
            losses.append(1 - (2 * inter + smooth) / (p.sum() + g.sum() + smooth))
        else:
            losses.append(1 - (inter + smooth) / (p.sum() + g.sum() - inter + smooth))
    if losses:
        return float(np.mean(losses))
    if mode == "binary" and valid.any():
        return float(probs[0][valid].mean())
    return 0.0


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


# --- hand-computed examples ---------------------------------------------------------------

def _two_pixel_example():
    # Pixel 0: p = (0.75, 0.25), label 0; pixel 1: p = (0.5, 0.5), label 1.
    probs = torch.tensor([[0.75, 0.5], [0.25, 0.5]], dtype=torch.float64)  # (C, pixels)
    return probs.log().reshape(1, 2, 1, 2), torch.tensor([[[0, 1]]])


@pytest.mark.parametrize("kind,smooth,expected", [
    # D0 = 1.5/2.25 = 2/3, D1 = 1/1.75 = 4/7 -> 1 - 13/21
    ("dice", 0.0, 8 / 21),
    # D0 = 2.5/3.25 = 10/13, D1 = 2/2.75 = 8/11 -> 1 - 107/143
    ("dice", 1.0, 36 / 143),
    # J0 = 0.75/1.5, J1 = 0.5/1.25 -> 1 - 0.45
    ("iou", 0.0, 0.55),
    # J0 = 1.75/2.5, J1 = 1.5/2.25 -> 1 - (0.7 + 2/3)/2
    ("iou", 1.0, 1 - (0.7 + 2 / 3) / 2),
])
def test_multiclass_hand_example(kind, smooth, expected):
    logits, target = _two_pixel_example()
    assert LOSSES[kind](logits, target, smooth=smooth).item() == pytest.approx(expected, abs=1e-12)


def test_binary_hand_example():
    logits = _logit([0.9, 0.2, 0.6, 0.1]).reshape(1, 1, 2, 2)
    target = torch.tensor([[[1, 0], [1, 0]]])
    # I = 1.5, Σp = 1.8, Σg = 2: Dice = 3/3.8, IoU = 1.5/2.3
    assert dice_loss(logits, target, mode="binary").item() == pytest.approx(1 - 3 / 3.8, abs=1e-12)
    assert iou_loss(logits, target, mode="binary").item() == pytest.approx(1 - 1.5 / 2.3, abs=1e-12)
    # (N, 1, H, W) targets, bool or float, give the same loss.
    for t in (target.unsqueeze(1), target.bool(), target.float()):
        assert dice_loss(logits, t, mode="binary").item() == pytest.approx(1 - 3 / 3.8, abs=1e-12)


def test_absent_class_is_left_out_of_the_mean():
    # Class 2 is absent from the target: the loss is the mean over classes 0 and 1 only.
    probs = torch.tensor([[0.6, 0.2], [0.2, 0.6], [0.2, 0.2]], dtype=torch.float64)
    logits, target = probs.log().reshape(1, 3, 1, 2), torch.tensor([[[0, 1]]])
    d = 1.2 / 1.8  # both present classes: I = 0.6, Σp = 0.8, Σg = 1
    assert dice_loss(logits, target).item() == pytest.approx(1 - d, abs=1e-12)


@pytest.mark.parametrize("kind", ["dice", "iou"])
@pytest.mark.parametrize("mode", ["multiclass", "binary"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_matches_loop_reference(kind, mode, smooth, ignore_index):
    c = 4 if mode == "multiclass" else 1
    logits = 3 * torch.randn(2, c, 7, 9)
    target = torch.randint(0, 3 if mode == "multiclass" else 2, (2, 7, 9))  # class 3 absent
    if ignore_index is not None:
        target[:, :2] = ignore_index
    got = LOSSES[kind](logits, target, mode=mode, smooth=smooth, ignore_index=ignore_index)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(_reference(logits, target, kind, mode, smooth, ignore_index), abs=1e-5)


@pytest.mark.parametrize("kind", ["dice", "iou"])
def test_perfect_prediction_gives_zero_and_worst_gives_one(kind):
    target = torch.randint(0, 3, (2, 8, 8))
    perfect = 1e4 * F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert LOSSES[kind](perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = 1e4 * F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float()
    assert LOSSES[kind](wrong, target).item() == pytest.approx(1.0, abs=1e-6)


# --- ignore_index ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["multiclass", "binary"])
@pytest.mark.parametrize("ignore_index", [255, -1, 0])
def test_ignored_pixels_are_dropped(mode, ignore_index):
    c = 3 if mode == "multiclass" else 1
    logits = torch.randn(2, c, 6, 6)
    target = torch.randint(0, 3 if mode == "multiclass" else 2, (2, 6, 6))
    target[torch.rand(2, 6, 6) < 0.3] = ignore_index
    keep = target != ignore_index
    # The kept pixels laid out as one row of a single image give the same loss.
    kept_logits = logits.permute(1, 0, 2, 3)[:, keep].reshape(1, c, 1, -1)
    kept_target = target[keep].reshape(1, 1, -1)
    for loss in LOSSES.values():
        expected = loss(kept_logits, kept_target, mode=mode)
        assert torch.allclose(loss(logits, target, mode=mode, ignore_index=ignore_index), expected, atol=1e-6)


# --- empty targets --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dice", "iou"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_binary_empty_target_is_mean_foreground_probability(kind, smooth):
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    loss = LOSSES[kind](logits, target, mode="binary", smooth=smooth)
    assert loss.item() == pytest.approx(logits.sigmoid().mean().item(), abs=1e-6)
    loss.backward()
    # Every logit is pushed down, towards background.
    assert torch.isfinite(logits.grad).all() and (logits.grad > 0).all()
    confident_empty = torch.full((2, 1, 8, 8), -1e4)
    assert LOSSES[kind](confident_empty, target, mode="binary", smooth=smooth).item() == 0.0


def test_binary_empty_target_with_ignored_pixels_averages_over_kept_pixels():
    logits = torch.randn(1, 1, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0] = 255
    expected = logits[0, 0, 1:].sigmoid().mean().item()
    assert dice_loss(logits, target, mode="binary", ignore_index=255).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", ["dice", "iou"])
@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_all_ignored_is_zero_with_zero_gradient(kind, mode):
    logits = torch.randn(2, 3 if mode == "multiclass" else 1, 5, 5, requires_grad=True)
    target = torch.full((2, 5, 5), 255)
    loss = LOSSES[kind](logits, target, mode=mode, ignore_index=255)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- gradients ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dice", "iou"])
@pytest.mark.parametrize("mode,smooth,ignore_index,empty", [
    ("multiclass", 0.0, None, False),
    ("multiclass", 0.5, None, False),
    ("multiclass", 0.5, 255, False),
    ("binary", 0.0, None, False),
    ("binary", 0.5, 255, False),
    ("binary", 0.0, 255, True),
])
def test_gradcheck(kind, mode, smooth, ignore_index, empty):
    c = 3 if mode == "multiclass" else 1
    logits = torch.randn(1, c, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 2 if mode == "binary" else c, (1, 3, 4))
    if empty:
        target.zero_()
    if ignore_index is not None:
        target[0, 0] = ignore_index
    fn = LOSSES[kind]
    assert fn(logits, target, mode, smooth, ignore_index).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: fn(x, target, mode, smooth, ignore_index), (logits,))


@pytest.mark.parametrize("kind", ["dice", "iou"])
def test_gradient_step_decreases_loss(kind):
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    before = LOSSES[kind](logits, target)
    before.backward()
    after = LOSSES[kind](logits.detach() - 10 * logits.grad, target)
    assert after < before


# --- MONAI and segmentation_models_pytorch ------------------------------------------------

def _all_classes_present(n=2, c=4, size=(9, 11)):
    logits = 2 * torch.randn(n, c, *size, dtype=torch.float64)
    target = torch.randint(0, c, (n, *size))
    target.view(-1)[:c] = torch.arange(c)  # make sure every class is present
    return logits, target


@pytest.mark.parametrize("s", [0.0, 1e-5, 0.5, 10.0])
def test_dice_matches_monai(s):
    logits, target = _all_classes_present()
    monai_loss = monai.losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=s, smooth_dr=s)
    expected = monai_loss(logits, target.unsqueeze(1))
    assert dice_loss(logits, target, smooth=s).item() == pytest.approx(expected.item(), abs=1e-10)


@pytest.mark.parametrize("s", [0.0, 1e-5, 0.5, 10.0])
def test_iou_matches_monai_jaccard_with_twice_the_smoothing(s):
    # MONAI's jaccard is (2I + s) / (2(Σp + Σg − I) + s) = (I + s/2) / (Σp + Σg − I + s/2).
    logits, target = _all_classes_present()
    monai_loss = monai.losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, jaccard=True,
                                       smooth_nr=2 * s, smooth_dr=2 * s)
    expected = monai_loss(logits, target.unsqueeze(1))
    assert iou_loss(logits, target, smooth=s).item() == pytest.approx(expected.item(), abs=1e-10)
    if s > 0:  # the factor 2 matters
        same_s = monai.losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, jaccard=True,
                                       smooth_nr=s, smooth_dr=s)(logits, target.unsqueeze(1))
        assert abs(iou_loss(logits, target, smooth=s).item() - same_s.item()) > 1e-9


def test_binary_matches_monai_sigmoid():
    logits = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 1, 8, 8))
    for jaccard, fn in ((False, dice_loss), (True, iou_loss)):
        expected = monai.losses.DiceLoss(sigmoid=True, batch=True, jaccard=jaccard, smooth_nr=0, smooth_dr=0)(
            logits, target)
        assert fn(logits, target, mode="binary").item() == pytest.approx(expected.item(), abs=1e-10)


def _smp(kind, mode, smooth, ignore_index=None):
    cls = smp.losses.DiceLoss if kind == "dice" else smp.losses.JaccardLoss
    return cls(mode, from_logits=True, smooth=smooth, ignore_index=ignore_index)


def _our_smooth(kind, smp_smooth):
    # smp's Dice is (I + s) / (½(Σp + Σg) + s) = (2I + 2s) / (Σp + Σg + 2s); its Jaccard uses s as we do.
    return 2 * smp_smooth if kind == "dice" else smp_smooth


@pytest.mark.parametrize("kind", ["dice", "iou"])
def test_matches_smp_when_every_class_is_present(kind):
    logits, target = _all_classes_present()
    expected = _smp(kind, "multiclass", 0.0)(logits, target)
    assert LOSSES[kind](logits, target).item() == pytest.approx(expected.item(), abs=1e-10)


@pytest.mark.parametrize("kind", ["dice", "iou"])
@pytest.mark.parametrize("smp_smooth", [0.0, 1e-5, 1.0])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_smp_relation_with_absent_classes(kind, smp_smooth, ignore_index):
    c = 5
    logits = 2 * torch.randn(2, c, 9, 11, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 9, 11))  # classes 3 and 4 absent: P = 3 present classes
    if ignore_index is not None:
        target[:, :3] = ignore_index
    present = torch.unique(target[target != 255]).numel()
    assert present == 3
    smp_value = _smp(kind, "multiclass", smp_smooth, ignore_index)(logits, target).item()
    ours = LOSSES[kind](logits, target, smooth=_our_smooth(kind, smp_smooth), ignore_index=ignore_index).item()
    assert ours == pytest.approx(smp_value * c / present, abs=1e-10)
    assert ours != pytest.approx(smp_value, abs=1e-3)  # the rescaling is not a no-op here


@pytest.mark.parametrize("kind", ["dice", "iou"])
@pytest.mark.parametrize("smp_smooth", [0.0, 1.0])
def test_smp_binary_relation(kind, smp_smooth):
    logits = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 8, 8))
    ours = LOSSES[kind](logits, target, mode="binary", smooth=_our_smooth(kind, smp_smooth))
    assert ours.item() == pytest.approx(_smp(kind, "binary", smp_smooth)(logits, target).item(), abs=1e-10)
    # Empty foreground: smp gives 0 (no gradient), we give the mean foreground probability.
    empty = torch.zeros_like(target)
    assert _smp(kind, "binary", smp_smooth)(logits, empty).item() == 0.0
    assert LOSSES[kind](logits, empty, mode="binary").item() == pytest.approx(logits.sigmoid().mean().item())


# --- numerics -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_half_precision_inputs_are_summed_in_float32(dtype, mode):
    # 2×512×512 pixels: Σp per class is ~1e5, beyond fp16's largest finite value 65504.
    c = 3 if mode == "multiclass" else 1
    logits = torch.randn(2, c, 512, 512)
    target = torch.randint(0, 3 if mode == "multiclass" else 2, (2, 512, 512))
    half = logits.to(dtype).requires_grad_()
    for fn in LOSSES.values():
        loss = fn(half, target, mode=mode)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert loss.item() == pytest.approx(fn(half.detach().float(), target, mode=mode).item(), abs=1e-6)
    out = CombinedLoss(iou=1.0, mode=mode)(half, target)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert half.grad.dtype == dtype and torch.isfinite(half.grad).all()


def test_under_bfloat16_autocast():
    conv = torch.nn.Conv2d(3, 3, kernel_size=1)
    images = torch.randn(2, 3, 512, 512)
    target = torch.randint(0, 3, (2, 512, 512))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(images)
        assert logits.dtype == torch.bfloat16
        out = CombinedLoss(iou=1.0)(logits, target)
        dice = dice_loss(logits, target)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())
    assert dice.dtype == torch.float32
    assert dice.item() == pytest.approx(dice_loss(logits.detach().float(), target).item(), abs=1e-6)
    out["loss"].backward()
    assert torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_large_logits_stay_finite(mode):
    c = 3 if mode == "multiclass" else 1
    logits = (1e4 * torch.randn(2, c, 16, 16).sign()).requires_grad_()
    target = torch.randint(0, 3 if mode == "multiclass" else 2, (2, 16, 16))
    out = CombinedLoss(iou=1.0, mode=mode)(logits, target)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all()
    for empty in (torch.zeros_like(target), torch.full_like(target, 255)):
        for fn in LOSSES.values():
            assert torch.isfinite(fn(logits, empty, mode=mode, ignore_index=255))


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda: dice_loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), mode="multilabel"), "mode"),
    (lambda: dice_loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long)), "shape"),
    (lambda: dice_loss(torch.randn(2, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)), "shape"),
    (lambda: dice_loss(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 3)), r"\[0, 3\)"),
    (lambda: dice_loss(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), -1)), r"\[0, 3\)"),
    (lambda: iou_loss(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 255), ignore_index=-1), "255"),
    (lambda: dice_loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4)), "integer"),
    (lambda: dice_loss(torch.randn(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)), "binary"),
    (lambda: dice_loss(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4), mode="binary"), "binary"),
    (lambda: dice_loss(torch.randn(1, 1, 4, 4), torch.full((1, 4, 4), 2), mode="binary"), "0 or 1"),
    (lambda: dice_loss(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), smooth=-1), "smooth"),
    (lambda: DiceLoss(mode="softmax"), "mode"),
    (lambda: CombinedLoss(ce=0, dice=0, iou=0), "weights"),
])
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- modules and CombinedLoss ---------------------------------------------------------------

@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_modules_match_functions(mode):
    c = 3 if mode == "multiclass" else 1
    logits, target = torch.randn(2, c, 6, 6), torch.randint(0, 2, (2, 6, 6))
    target[0, 0] = 255
    kwargs = {"mode": mode, "smooth": 0.3, "ignore_index": 255}
    assert torch.equal(DiceLoss(**kwargs)(logits, target), dice_loss(logits, target, **kwargs))
    assert torch.equal(IoULoss(**kwargs)(logits, target), iou_loss(logits, target, **kwargs))


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_combined_loss_parts_and_total(mode):
    c = 4 if mode == "multiclass" else 1
    logits = torch.randn(2, c, 8, 8, requires_grad=True)
    target = torch.randint(0, 2 if mode == "binary" else c, (2, 8, 8))
    target[:, :2] = 255
    out = CombinedLoss(ce=0.5, dice=2.0, iou=0.25, ignore_index=255, mode=mode, smooth=0.1)(logits, target)
    assert set(out) == set(LOSS_KEYS) and all(v.dim() == 0 for v in out.values())
    total = 0.5 * out["loss_ce"] + 2.0 * out["loss_dice"] + 0.25 * out["loss_iou"]
    assert torch.allclose(out["loss"], total)
    kw = {"mode": mode, "smooth": 0.1, "ignore_index": 255}
    assert out["loss_dice"].item() == pytest.approx(dice_loss(logits, target, **kw).item(), abs=1e-6)
    assert out["loss_iou"].item() == pytest.approx(iou_loss(logits, target, **kw).item(), abs=1e-6)
    if mode == "multiclass":
        ce = F.cross_entropy(logits, target, ignore_index=255)
    else:
        keep = target != 255
        ce = F.binary_cross_entropy_with_logits(logits[:, 0][keep], target[keep].float())
    assert out["loss_ce"].item() == pytest.approx(ce.item(), abs=1e-6)
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_combined_loss_zero_weight_parts_carry_no_graph():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    out = CombinedLoss(ce=1.0, dice=0.0, iou=0.0)(logits, target)
    assert out["loss_ce"].requires_grad and out["loss"].requires_grad
    assert not out["loss_dice"].requires_grad and not out["loss_iou"].requires_grad
    assert out["loss_dice"].item() == pytest.approx(dice_loss(logits, target).item(), abs=1e-6)
    out["loss"].backward()
    ce_only = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, target).backward()
    assert torch.allclose(ce_only, logits.grad, atol=1e-7)


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_combined_loss_ignores_logits_at_ignored_pixels(mode):
    c = 3 if mode == "multiclass" else 1
    logits = torch.randn(2, c, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    ignored = torch.rand(2, 8, 8) < 0.4
    target[ignored] = 255
    changed = logits.clone()
    changed[ignored.unsqueeze(1).expand_as(logits)] = 1e3
    loss = CombinedLoss(iou=1.0, ignore_index=255, mode=mode)
    a, b = loss(logits, target), loss(changed, target)
    for key in LOSS_KEYS:
        assert a[key].item() == pytest.approx(b[key].item(), abs=1e-6), key


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_combined_loss_all_ignored_is_zero(mode):
    logits = torch.randn(2, 3 if mode == "multiclass" else 1, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    out = CombinedLoss(iou=1.0, ignore_index=255, mode=mode)(logits, target)
    assert all(v.item() == 0.0 and not math.isnan(v.item()) for v in out.values())
    out["loss"].backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- Lovász-Softmax -------------------------------------------------------------------------

def _jaccard_loss(error_set, gt):
    """Δ_J of a set of wrong pixels: 1 − |G ∖ M| / |G ∪ M| (numpy booleans)."""
    union = (gt | error_set).sum()
    return 1 - (gt & ~error_set).sum() / union if union else 0.0


def _lovasz_brute_force(errors, gt):
    """The Lovász extension of Δ_J at ``errors`` from its definition, with prefix sets of the sorted order."""
    order = np.argsort(-errors, kind="stable")
    value, previous, prefix = 0.0, 0.0, np.zeros(len(errors), bool)
    for i in order:
        prefix[i] = True
        current = _jaccard_loss(prefix, gt)
        value += errors[i] * (current - previous)
        previous = current
    return value


def _lovasz_reference(logits, target, ignore_index=None):
    x = logits.detach().double()
    probs = x.softmax(1).movedim(1, -1).reshape(-1, x.shape[1]).numpy()
    labels = target.reshape(-1).numpy()
    if ignore_index is not None:
        probs, labels = probs[labels != ignore_index], labels[labels != ignore_index]
    values = [_lovasz_brute_force(np.abs((labels == c) - probs[:, c]), labels == c)
              for c in range(x.shape[1]) if (labels == c).any()]
    return float(np.mean(values)) if values else 0.0


def test_lovasz_grad_hand_example_and_properties():
    # G = {0, 2, 3}: Δ_k = 1/3, 2/4, 3/4, 1, 1 -> increments 1/3, 1/6, 1/4, 1/4, 0
    w = lovasz_grad(torch.tensor([1, 0, 1, 1, 0]))
    assert w.dtype == torch.float32
    assert torch.allclose(w, torch.tensor([1 / 3, 1 / 6, 1 / 4, 1 / 4, 0.0]))
    for gt in (torch.rand(50) < 0.3, torch.zeros(7), torch.ones(4), torch.tensor([1.0]), torch.tensor([0.0])):
        w = lovasz_grad(gt.double())
        assert w.dtype == torch.float64 and (w >= 0).all() and w.sum().item() == pytest.approx(1.0)
    rows = (torch.rand(3, 4, 20) < 0.5).float()  # leading dimensions are independent rows
    assert torch.equal(lovasz_grad(rows)[1, 2], lovasz_grad(rows[1, 2]))
    with pytest.raises(ValueError, match="at least one pixel"):
        lovasz_grad(torch.zeros(0))


@pytest.mark.parametrize("seed", range(4))
def test_lovasz_grad_gives_the_extension_of_the_jaccard_loss(seed):
    rng = np.random.default_rng(seed)
    gt, errors = rng.random(17) < 0.4, rng.random(17)
    order = np.argsort(-errors)
    value = float(np.dot(errors[order], lovasz_grad(torch.from_numpy(gt[order]).double()).numpy()))
    assert value == pytest.approx(_lovasz_brute_force(errors, gt), abs=1e-12)


@pytest.mark.parametrize("ignore_index", [None, 255])
@pytest.mark.parametrize("shape,c", [((2, 7, 9), 4), ((1, 3, 4, 5), 3), ((3, 1, 6), 2)])
def test_lovasz_softmax_matches_the_definition(shape, c, ignore_index):
    logits = 2 * torch.randn(shape[0], c, *shape[1:], dtype=torch.float64)
    target = torch.randint(0, c - 1 if c > 2 else c, shape)  # the last class absent when C > 2
    if ignore_index is not None:
        target.view(-1)[::3] = ignore_index
    got = lovasz_softmax(logits, target, ignore_index=ignore_index)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert got.item() == pytest.approx(_lovasz_reference(logits, target, ignore_index), abs=1e-12)


@pytest.mark.parametrize("ignore_index", [None, 255])
@pytest.mark.parametrize("per_class_absent", [False, True])
def test_lovasz_softmax_matches_smp(ignore_index, per_class_absent):
    # smp's LovaszLoss(mode="multiclass", per_image=False): softmax, pixels of the whole batch
    # pooled, ignored pixels dropped, mean over the classes present. Its weights are float32,
    # so it is compared on float32 logits.
    logits = (3 * torch.randn(2, 5, 12, 10)).requires_grad_()
    target = torch.randint(0, 3 if per_class_absent else 5, (2, 12, 10))
    if ignore_index is not None:
        target[:, :4] = ignore_index
    ours = lovasz_softmax(logits, target, ignore_index=ignore_index)
    (g_ours,) = torch.autograd.grad(ours, logits)
    theirs = smp.losses.LovaszLoss(mode="multiclass", per_image=False, ignore_index=ignore_index)(logits, target)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    assert ours.dtype == torch.float32 and ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert torch.allclose(g_ours, g_theirs, atol=1e-7)


def test_lovasz_softmax_of_confident_predictions_is_the_jaccard_loss_of_the_hard_masks():
    pred, target = torch.randint(0, 4, (2, 9, 9)), torch.randint(0, 3, (2, 9, 9))  # class 3 absent from the target
    logits = 100.0 * F.one_hot(pred, 4).movedim(-1, 1).double()  # probabilities exactly 0 or 1
    hard = [1 - ((pred == c) & (target == c)).sum().item() / ((pred == c) | (target == c)).sum().item() for c in range(3)]
    assert lovasz_softmax(logits, target).item() == pytest.approx(np.mean(hard), abs=1e-12)
    assert lovasz_softmax(logits, target).item() == pytest.approx(iou_loss(logits, target).item(), abs=1e-12)  # both hard
    perfect = 20.0 * F.one_hot(target, 4).movedim(-1, 1).float()
    assert lovasz_softmax(perfect, target).item() < 1e-6


def test_lovasz_extension_is_convex_and_equals_the_jaccard_loss_on_vertices():
    # Along any segment of error vectors the extension lies below the chord (it is convex).
    rng = np.random.default_rng(0)
    gt = rng.random(30) < 0.3

    def extension(errors):
        order = np.argsort(-errors)
        return float(np.dot(errors[order], lovasz_grad(torch.from_numpy(gt[order]).double()).numpy()))

    for _ in range(50):
        m1, m2, lam = rng.random(30), rng.random(30), rng.random()
        assert extension(lam * m1 + (1 - lam) * m2) <= lam * extension(m1) + (1 - lam) * extension(m2) + 1e-12
    for vertex in (rng.random(30) < 0.5 for _ in range(10)):  # on 0/1 errors it is Δ_J itself
        assert extension(vertex.astype(float)) == pytest.approx(_jaccard_loss(vertex, gt), abs=1e-12)


def test_lovasz_softmax_classes_option():
    logits = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    target = torch.randint(0, 2, (1, 6, 6))  # class 2 absent
    probs = logits.softmax(1)
    per_class = [lovasz_softmax(logits, target, classes=[c]).item() for c in range(3)]
    assert lovasz_softmax(logits, target).item() == pytest.approx(np.mean(per_class[:2]))
    assert lovasz_softmax(logits, target, classes="all").item() == pytest.approx(np.mean(per_class))
    assert per_class[2] == pytest.approx(probs[:, 2].max().item())  # an absent class costs its largest probability
    with pytest.raises(ValueError, match="classes"):
        lovasz_softmax(logits, target, classes="some")
    with pytest.raises(ValueError, match="classes"):
        lovasz_softmax(logits, target, classes=[3])


def test_lovasz_softmax_gradcheck_and_numerics():
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    assert torch.autograd.gradcheck(lambda x: lovasz_softmax(x, target), (logits,))
    big = 1000 * torch.randn(2, 3, 6, 6)
    assert torch.isfinite(lovasz_softmax(big, torch.randint(0, 3, (2, 6, 6))))
    half = torch.randn(2, 3, 8, 8).half()
    t = torch.randint(0, 3, (2, 8, 8))
    got = lovasz_softmax(half, t)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(lovasz_softmax(half.float(), t).item(), abs=1e-7)
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    zero = lovasz_softmax(x, torch.full((1, 3, 3), 255), ignore_index=255)  # every pixel ignored
    zero.backward()
    assert zero.item() == 0.0 and zero.dim() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    with pytest.raises(ValueError, match="C >= 2"):
        lovasz_softmax(torch.randn(1, 1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target values"):
        lovasz_softmax(torch.randn(1, 2, 3, 3), torch.full((1, 3, 3), 2))
