"""Soft Dice and IoU (Jaccard) losses on logits, Lovász-Softmax, and CE + Dice + IoU (notebook 03).

Modes:

- ``"multiclass"``: logits ``(N, C, H, W)`` with ``C >= 2``, integer target ``(N, H, W)``
  in ``[0, C)``; probabilities are ``softmax`` over ``C``.
- ``"binary"``: logits ``(N, 1, H, W)``, 0/1 target ``(N, H, W)`` or ``(N, 1, H, W)``;
  the probability of the foreground is ``sigmoid(logits)``.

More spatial dimensions (volumes ``(N, C, D, H, W)``) work the same way.

With ``p`` the probabilities and ``g`` the one-hot target, per class ``c``, each sum
running over the whole batch and all pixels that are not ``ignore_index``::

    D_c = (2·Σ p·g + smooth) / (Σ p + Σ g + smooth)              (Dice)
    J_c = (Σ p·g + smooth) / (Σ p + Σ g − Σ p·g + smooth)         (IoU, soft Jaccard)
    loss = 1 − mean of D_c (or J_c) over the classes present in the target

Binary mode has one class, the foreground. Classes absent from the target are left out of
the mean: their ratio is 0/0 without smoothing, and with smoothing it only rewards
predicting nothing of them, which the softmax already gets from the present classes.

Empty-target convention (never NaN or inf, always differentiable):

- binary mode, no foreground pixel in the (non-ignored) target: the loss is the mean
  foreground probability over the non-ignored pixels, whatever ``smooth``. It is 0 for a
  perfect empty prediction, 1 for a confident full one, and its gradient pushes every
  prediction towards background (the Dice ratio would be 0/Σp there: a constant loss of 1
  with no gradient, or 0/0 for a perfect prediction).
- every pixel ignored (either mode): the loss is 0, a zero connected to the graph, so
  ``backward()`` works and gives zero gradients.
- multiclass mode always has a class present unless every pixel is ignored.

Numerics: softmax/sigmoid and all sums run in float32 with autocast disabled, whatever the
dtype of the logits (fp16 sums over a 512×512 mask overflow at 65504); the result is a
float32 scalar (float64 for float64 logits, so ``torch.autograd.gradcheck`` works).

How other libraries relate (checked by ``tests/test_losses.py``):

- MONAI 1.6 ``DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=s, smooth_dr=s)``
  computes ``(2I + s) / (Σp + Σg + s)``: equal to ``dice_loss(smooth=s)`` when every class is
  present. With ``jaccard=True`` it computes ``(2I + s) / (2(Σp + Σg − I) + s)``, so it equals
  ``iou_loss(smooth=s / 2)``.
- segmentation_models_pytorch 0.6 ``DiceLoss``/``JaccardLoss(mode, from_logits=True, smooth=s)``
  also sums per class over the whole batch, but (i) its Dice is the Tversky score with
  α = β = ½, ``(I + s) / (½(Σp + Σg) + s) = (2I + 2s) / (Σp + Σg + 2s)``, so its ``smooth=s``
  is our ``smooth=2s`` (its Jaccard uses ``s`` as we do); (ii) it clamps the denominator at
  ``eps = 1e-7``, which never acts on a present class; (iii) a class absent from the target
  gets loss 0 but still counts in the mean over all ``C`` classes. Hence, with ``P >= 1``
  present classes::

      dice_loss(smooth=2s) == smp.DiceLoss(smooth=s) · C / P
      iou_loss(smooth=s)   == smp.JaccardLoss(smooth=s) · C / P

  (``C = 1`` in binary mode, where smp returns 0 for an empty target and we do not).

Lovász-Softmax (Berman, Rannen Triki, Blaschko, CVPR 2018), :func:`lovasz_softmax`: per class
``c``, with the pixels of the whole batch flattened, the errors ``m_i = |g_i − p_i|`` sorted in
decreasing order, ``m_π1 ≥ … ≥ m_πP``, and the Jaccard loss of the first ``k`` of them,
``Δ_k = 1 − |G ∖ {π1..πk}| / |G ∪ {π1..πk}|`` (``G`` the pixels of class ``c``)::

    loss_c = Σ_k m_πk · (Δ_k − Δ_{k−1}),      Δ_0 = 0                  (the Lovász extension)
    loss   = mean of loss_c over the classes present in the target (``classes="present"``)

``lovasz_grad`` computes the weights ``Δ_k − Δ_{k−1}`` from the sorted target. On confident
(0/1) probabilities ``loss_c = 1 − IoU_c`` of the hard masks. It equals smp 0.6
``LovaszLoss(mode="multiclass", per_image=False, ignore_index=...)`` (softmax of the logits,
pixels of ``ignore_index`` dropped, classes present in the target), except that every pixel
ignored gives a 0 scalar here and an empty tensor there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("multiclass", "binary")
LOSS_KEYS = ("loss_ce", "loss_dice", "loss_iou", "loss")


class _Sums(NamedTuple):
    """Per-class sums over the batch and the non-ignored pixels, each ``(C,)``."""

    intersection: Tensor  # Σ p·g
    pred: Tensor  # Σ p
    target: Tensor  # Σ g
    n_valid: Tensor  # number of non-ignored pixels, a scalar


def dice_loss(
    logits: Tensor, target: Tensor, mode: str = "multiclass", smooth: float = 0.0, ignore_index: int | None = None
) -> Tensor:
    """Soft Dice loss ``1 − mean_c D_c`` over the classes present in ``target``.

    See the module docstring for the formula, the empty-target convention and the
    relation to MONAI and segmentation_models_pytorch.

    Shape: logits ``(N, C, H, W)`` (``C = 1`` in binary mode), target ``(N, H, W)``
    (or ``(N, 1, H, W)`` in binary mode) → a scalar.
    """
    return _soft_loss(logits, target, "dice", mode, smooth, ignore_index)


def iou_loss(
    logits: Tensor, target: Tensor, mode: str = "multiclass", smooth: float = 0.0, ignore_index: int | None = None
) -> Tensor:
    """Soft IoU (Jaccard) loss ``1 − mean_c J_c`` over the classes present in ``target``.

    Same arguments, shapes and empty-target convention as :func:`dice_loss`.
    """
    return _soft_loss(logits, target, "iou", mode, smooth, ignore_index)


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """The weights of the Lovász extension of the Jaccard loss, given the target sorted by error.

    ``gt_sorted``: 0/1 values (bool, integer or float) ``(..., P)``, the ground truth of one
    class at the pixels sorted by decreasing error, ``P >= 1``. Returns ``(..., P)`` floats
    (the input's float dtype, float32 for bool/integer input): ``w_k = Δ_k − Δ_{k−1}`` with
    ``Δ_k = 1 − (|G| − Σ_{i≤k} g_i) / (|G| + Σ_{i≤k} (1 − g_i))`` the Jaccard loss when the first
    ``k`` pixels are wrong and ``Δ_0 = 0`` (Berman et al. 2018, Alg. 1). The weights are
    ``>= 0`` and sum to ``Δ_P = 1`` when ``G`` is not empty (to 1 as well when it is: then
    ``Δ_k = 1`` for every ``k >= 1``). Leading dimensions are independent rows.
    """
    if gt_sorted.dim() < 1 or gt_sorted.shape[-1] < 1:
        raise ValueError(f"gt_sorted must have at least one pixel in its last dimension, got {tuple(gt_sorted.shape)}")
    g = gt_sorted if gt_sorted.is_floating_point() else gt_sorted.float()
    total = g.sum(dim=-1, keepdim=True)
    intersection = total - g.cumsum(dim=-1)  # target pixels not among the first k errors
    union = total + (1 - g).cumsum(dim=-1)  # target pixels and the false positives among them; >= 1
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_softmax(
    logits: Tensor, target: Tensor, classes: str | Sequence[int] = "present", ignore_index: int | None = None
) -> Tensor:
    """The Lovász-Softmax loss: a convex surrogate of ``1 − IoU``, per class over the whole batch.

    Shape: logits ``(N, C, *spatial)`` with ``C >= 2``, target ``(N, *spatial)`` integer labels in
    ``[0, C)`` or ``ignore_index`` → a scalar. ``p = softmax(logits)`` in float32 (float64 stays
    float64), autocast off; the pixels of all images form one set (smp's ``per_image=False``);
    ignored pixels are dropped. ``classes``: ``"present"`` averages over the classes in the
    (non-ignored) target, ``"all"`` over all ``C`` (an absent class costs its largest
    probability), a sequence of class indices over those. See the module docstring for the
    formula. No pixel left, or no class to average: a 0 connected to the graph.
    """
    labels, valid = _check_inputs(logits, target, "multiclass", ignore_index)
    n_classes = logits.shape[1]
    if isinstance(classes, str):
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present', 'all' or a sequence of class indices, got {classes!r}")
        chosen = None
    else:
        chosen = torch.as_tensor(list(classes), dtype=torch.long, device=logits.device)
        if chosen.numel() and (chosen.min() < 0 or chosen.max() >= n_classes):
            raise ValueError(f"classes must be in [0, {n_classes}), got {list(classes)}")
    with torch.autocast(logits.device.type, enabled=False):
        probs = logits.to(_compute_dtype(logits)).softmax(dim=1)
        probs = probs.movedim(1, -1).reshape(-1, n_classes)  # (P, C), the pixels of the whole batch
        labels = labels.reshape(-1)
        if valid is not None:
            keep = valid.reshape(-1)
            probs, labels = probs[keep], labels[keep]
        if labels.numel() == 0:
            return probs.sum() * 0
        fg = F.one_hot(labels, n_classes).T.to(probs.dtype)  # (C, P)
        errors = (fg - probs.T).abs()
        errors_sorted, order = torch.sort(errors, dim=1, descending=True)
        per_class = (errors_sorted * lovasz_grad(fg.gather(1, order))).sum(dim=1)  # (C,)
        if chosen is None:
            chosen = (fg.sum(dim=1) > 0).nonzero().squeeze(1) if classes == "present" else torch.arange(n_classes)
        if chosen.numel() == 0:
            return per_class.sum() * 0
        return per_class[chosen.to(per_class.device)].mean()


class _SoftLoss(nn.Module):
    kind = ""

    def __init__(self, mode: str = "multiclass", smooth: float = 0.0, ignore_index: int | None = None) -> None:
        super().__init__()
        _check_options(mode, smooth)
        self.mode, self.smooth, self.ignore_index = mode, smooth, ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return _soft_loss(logits, target, self.kind, self.mode, self.smooth, self.ignore_index)


class DiceLoss(_SoftLoss):
    """:func:`dice_loss` as a module: ``DiceLoss(mode)(logits, target)`` → scalar."""

    kind = "dice"


class IoULoss(_SoftLoss):
    """:func:`iou_loss` as a module: ``IoULoss(mode)(logits, target)`` → scalar."""

    kind = "iou"


class CombinedLoss(nn.Module):
    """``ce·CE + dice·Dice + iou·IoU``, returning every part for logging.

    CE is ``F.cross_entropy`` in multiclass mode and BCE with logits in binary mode, both
    averaged over the non-ignored pixels (0, not NaN, when every pixel is ignored).
    The probabilities and the per-class sums are computed once and shared by all parts.
    A part with weight 0 is still computed, under ``torch.no_grad``, so it can be plotted
    for the price of a few scalar operations.

    Returns: ``{"loss": total, "loss_ce": ..., "loss_dice": ..., "loss_iou": ...}``, all
    scalar tensors (see :data:`LOSS_KEYS`).
    """

    def __init__(
        self,
        ce: float = 1.0,
        dice: float = 1.0,
        iou: float = 0.0,
        ignore_index: int | None = None,
        mode: str = "multiclass",
        smooth: float = 0.0,
    ) -> None:
        super().__init__()
        _check_options(mode, smooth)
        weights = {"ce": ce, "dice": dice, "iou": iou}
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"loss weights must be >= 0 and not all 0, got {weights}")
        self.ce, self.dice, self.iou = float(ce), float(dice), float(iou)
        self.ignore_index, self.mode, self.smooth = ignore_index, mode, smooth

    def forward(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        labels, valid = _check_inputs(logits, target, self.mode, self.ignore_index)
        grad = torch.is_grad_enabled()
        with torch.autocast(logits.device.type, enabled=False):
            x = logits.to(_compute_dtype(logits))
            log_p = _log_probabilities(x, self.mode)
            with torch.set_grad_enabled(grad and self.ce != 0):
                loss_ce = _cross_entropy(x, log_p, labels, valid, self.mode)
            with torch.set_grad_enabled(grad and (self.dice != 0 or self.iou != 0)):
                sums = _class_sums(log_p.exp(), labels, valid, self.mode)
            with torch.set_grad_enabled(grad and self.dice != 0):
                loss_dice = _reduce(sums, "dice", self.mode, self.smooth)
            with torch.set_grad_enabled(grad and self.iou != 0):
                loss_iou = _reduce(sums, "iou", self.mode, self.smooth)
        total = self.ce * loss_ce + self.dice * loss_dice + self.iou * loss_iou
        return {"loss": total, "loss_ce": loss_ce, "loss_dice": loss_dice, "loss_iou": loss_iou}


def _soft_loss(logits: Tensor, target: Tensor, kind: str, mode: str, smooth: float, ignore_index: int | None) -> Tensor:
    _check_options(mode, smooth)
    labels, valid = _check_inputs(logits, target, mode, ignore_index)
    with torch.autocast(logits.device.type, enabled=False):
        x = logits.to(_compute_dtype(logits))
        probs = x.softmax(dim=1) if mode == "multiclass" else x.sigmoid()
        return _reduce(_class_sums(probs, labels, valid, mode), kind, mode, smooth)


def _check_options(mode: str, smooth: float) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")


def _check_inputs(
    logits: Tensor, target: Tensor, mode: str, ignore_index: int | None
) -> tuple[Tensor, Tensor | None]:
    """Validate; return ``labels`` (int64, ignored pixels set to 0) and ``valid`` (bool), both ``(N, H, W)``.

    ``valid`` is ``None`` when ``ignore_index`` is ``None``: every pixel counts, no masking needed.
    """
    if not logits.is_floating_point() or logits.dim() < 3:
        raise ValueError(f"logits must be a float tensor (N, C, H, W), got {logits.dtype} {tuple(logits.shape)}")
    n_classes = logits.shape[1]
    if mode == "multiclass" and n_classes < 2:
        raise ValueError(f"multiclass mode needs C >= 2 logit channels, got {n_classes}; use mode='binary'")
    if mode == "binary":
        if n_classes != 1:
            raise ValueError(f"binary mode needs logits (N, 1, H, W), got {tuple(logits.shape)}")
        if target.dim() == logits.dim():
            target = target.squeeze(1) if target.shape[1] == 1 else target
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
                         f"expected {expected}")
    if mode == "multiclass" and (target.is_floating_point() or target.dtype == torch.bool):
        raise ValueError(f"multiclass target must hold integer class labels, got {target.dtype}")

    valid = None if ignore_index is None else target != ignore_index
    # Ignored labels become 0 before any one-hot/scatter: an index like 255 would crash on CUDA.
    labels = target if valid is None else torch.where(valid, target, torch.zeros_like(target))
    low, high = torch.aminmax(labels) if labels.numel() else (0, 0)  # one pass, not four
    if low < 0 or high >= (n_classes if mode == "multiclass" else 2):
        bad = (labels < 0) | (labels >= n_classes) if mode == "multiclass" else (labels != 0) & (labels != 1)
        wrong = torch.unique(target[bad])[:10].tolist()
        what = f"class labels in [0, {n_classes})" if mode == "multiclass" else "0 or 1"
        extra = "" if ignore_index is None else f" or ignore_index={ignore_index}"
        raise ValueError(f"target values must be {what}{extra}; found {wrong}")
    return labels.long(), valid


def _compute_dtype(logits: Tensor) -> torch.dtype:
    # float64 stays float64 for gradcheck; fp16/bf16/fp32 all compute in fp32.
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _log_probabilities(x: Tensor, mode: str) -> Tensor:
    return x.log_softmax(dim=1) if mode == "multiclass" else F.logsigmoid(x)


def _class_sums(probs: Tensor, labels: Tensor, valid: Tensor | None, mode: str) -> _Sums:
    """Per-class sums of ``probs`` ``(N, C, H, W)`` against the labels, ignored pixels left out."""
    if valid is None:
        mask, n_valid = 1.0, torch.tensor(float(labels.numel()), dtype=probs.dtype, device=probs.device)
    else:
        mask = valid.unsqueeze(1).to(probs.dtype)
        probs, n_valid = probs * mask, mask.sum()
    if mode == "multiclass":
        # One scatter writes the one-hot target (times the ignore mask) directly in float.
        src = torch.ones_like(probs[:, :1]) if valid is None else mask
        onehot = torch.zeros_like(probs).scatter_(1, labels.unsqueeze(1), src)
    else:
        onehot = labels.unsqueeze(1).to(probs.dtype) * mask
    dims = (0, *range(2, probs.dim()))
    if mode == "multiclass":  # counting labels is cheaper than summing the float one-hot
        weights = None if valid is None else valid.reshape(-1).to(probs.dtype)
        true = torch.bincount(labels.reshape(-1), weights=weights, minlength=probs.shape[1]).to(probs.dtype)
    else:
        true = torch.sum(onehot, dim=dims)
    return _Sums(
        intersection=torch.sum(probs * onehot, dim=dims),
        pred=torch.sum(probs, dim=dims),
        target=true,
        n_valid=n_valid,
    )


def _reduce(sums: _Sums, kind: str, mode: str, smooth: float) -> Tensor:
    """``1 − mean score`` over present classes, with the empty-target convention."""
    inter, pred, true = sums.intersection, sums.pred, sums.target
    present = true > 0
    if kind == "dice":
        num, den = 2 * inter + smooth, pred + true + smooth
    else:
        num, den = inter + smooth, pred + true - inter + smooth
    # Absent classes may have den == 0; a safe denominator keeps NaN out of the unused branch's gradient.
    score = num / torch.where(present, den, torch.ones_like(den))
    per_class = torch.where(present, 1 - score, torch.zeros_like(score))
    if mode == "binary":
        # Empty foreground: mean foreground probability over the non-ignored pixels (0 if none).
        empty = pred / sums.n_valid.clamp_min(1)
        per_class = torch.where(present, per_class, empty)
        return per_class.sum()
    # All ignored: no class present, the sum is a 0 that is still connected to the graph.
    return per_class.sum() / present.sum().clamp_min(1)


def _cross_entropy(x: Tensor, log_p: Tensor, labels: Tensor, valid: Tensor | None, mode: str) -> Tensor:
    """Mean CE over the non-ignored pixels; 0 (not NaN, as ``F.cross_entropy`` gives) if none."""
    if mode == "multiclass":
        if valid is None:  # nll of log_softmax is F.cross_entropy
            return F.nll_loss(log_p, labels) if labels.numel() else log_p.sum() * 0
        per_pixel = F.nll_loss(log_p, labels, reduction="none")
    else:
        per_pixel = F.binary_cross_entropy_with_logits(x.squeeze(1), labels.to(x.dtype), reduction="none")
    if valid is None:
        return per_pixel.sum() / max(per_pixel.numel(), 1)
    mask = valid.to(x.dtype)
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1)
