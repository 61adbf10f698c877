"""Segmentation metrics: a dataset-wide confusion matrix, IoU and Dice of masks (notebook 03).

The mean IoU of a dataset is computed from counts accumulated over every image, not as
the mean of per-image IoUs: an image where a class is absent would otherwise give 0/0.
Classes absent from both the predictions and the targets of the whole dataset are left
out of the mean (their IoU is NaN), as in torchmetrics and mmsegmentation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


class ConfusionMatrix:
    """Counts of (target, prediction) label pairs, accumulated over a dataset.

    Args:
        num_classes: ``C``; labels are in ``[0, C)``.
        ignore_index: target label whose pixels are not counted (e.g. 255), or ``None``.

    ``matrix[t, p]`` is the number of pixels of target class ``t`` predicted as ``p``
    (rows = target, columns = prediction), kept on the CPU in int64.

    Example::

        cm = ConfusionMatrix(num_classes=21, ignore_index=255)
        for images, masks in loader:
            cm.update(model(images).argmax(1), masks)
        print(cm.mean_iou())
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @property
    def matrix(self) -> Tensor:
        """The ``(C, C)`` int64 counts (a copy), rows = target, columns = prediction."""
        return self._matrix.clone()

    def reset(self) -> None:
        self._matrix.zero_()

    @torch.no_grad()
    def update(self, pred_labels: Tensor, target: Tensor) -> None:
        """Add one batch. ``pred_labels`` and ``target``: integer tensors of the same shape, any device.

        Raises ``ValueError`` for predictions outside ``[0, C)`` and for targets outside
        ``[0, C)`` that are not ``ignore_index``.
        """
        pred, true = _as_cpu_long(pred_labels, "pred_labels"), _as_cpu_long(target, "target")
        if pred.shape != true.shape:
            raise ValueError(f"pred_labels {tuple(pred.shape)} and target {tuple(true.shape)} differ in shape")
        c = self.num_classes
        if pred.numel() and (pred.min() < 0 or pred.max() >= c):
            raise ValueError(f"predictions must be in [0, {c}); found values in [{pred.min()}, {pred.max()}]")
        if self.ignore_index is not None:
            keep = true != self.ignore_index
            pred, true = pred[keep], true[keep]
        if true.numel() and (true.min() < 0 or true.max() >= c):
            extra = "" if self.ignore_index is None else f" or ignore_index={self.ignore_index}"
            raise ValueError(f"target labels must be in [0, {c}){extra}; found values in [{true.min()}, {true.max()}]")
        # Each (t, p) pair gets one index t·C + p: a single bincount fills the whole matrix.
        counts = torch.bincount(true.flatten() * c + pred.flatten(), minlength=c * c)
        self._matrix += counts.reshape(c, c)

    def _tp_fp_fn(self) -> tuple[Tensor, Tensor, Tensor]:
        m = self._matrix.double()  # float64 counts are exact up to 2**53 pixels
        tp = m.diagonal()
        return tp, m.sum(0) - tp, m.sum(1) - tp

    def iou(self) -> Tensor:
        """Per-class ``TP / (TP + FP + FN)``, float64 ``(C,)``; NaN where ``TP + FP + FN == 0``."""
        tp, fp, fn = self._tp_fp_fn()
        return _ratio(tp, tp + fp + fn)

    def dice(self) -> Tensor:
        """Per-class ``2TP / (2TP + FP + FN)``, float64 ``(C,)``; NaN where ``TP + FP + FN == 0``."""
        tp, fp, fn = self._tp_fp_fn()
        return _ratio(2 * tp, 2 * tp + fp + fn)

    def mean_iou(self) -> float:
        """Mean IoU over the classes with ``TP + FP + FN > 0``; NaN if nothing was counted."""
        return _nanmean(self.iou())

    def mean_dice(self) -> float:
        """Mean Dice over the classes with ``TP + FP + FN > 0``; NaN if nothing was counted."""
        return _nanmean(self.dice())

    def pixel_accuracy(self) -> float:
        """Fraction of counted (non-ignored) pixels predicted right; NaN if nothing was counted."""
        total = int(self._matrix.sum())
        return int(self._matrix.trace()) / total if total else math.nan


def mean_iou(pred_labels: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> float:
    """Mean IoU of one set of predictions, as :meth:`ConfusionMatrix.mean_iou` after one update."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(pred_labels, target)
    return cm.mean_iou()


def dice_score(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Dice ``2|A ∩ B| / (|A| + |B|)`` of two boolean masks of the same shape; 1.0 if both are empty."""
    inter, size_a, size_b = _set_sizes(a, b)
    total = size_a + size_b
    return 2 * inter / total if total else 1.0


def iou_score(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """IoU ``|A ∩ B| / |A ∪ B|`` of two boolean masks of the same shape; 1.0 if both are empty.

    ``dice_score = 2·iou_score / (1 + iou_score)`` for any pair of masks.
    """
    inter, size_a, size_b = _set_sizes(a, b)
    union = size_a + size_b - inter
    return inter / union if union else 1.0


def batch_scores(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU of many mask pairs at once, as :func:`dice_score` and :func:`iou_score` of each pair.

    ``a``, ``b``: boolean (or 0/1) NumPy arrays ``(n, ...)`` of the same shape, pair ``k`` being
    ``a[k]``, ``b[k]``. Returns two float64 arrays ``(n,)``: Dice and IoU, 1.0 where both masks are empty.
    """
    a, b = _as_bool_mask(a, "a"), _as_bool_mask(b, "b")
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"mask batches must have the same shape (n, ...), got {a.shape} vs {b.shape}")
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    inter = np.count_nonzero(a & b, axis=1).astype(np.float64)
    total = np.count_nonzero(a, axis=1) + np.count_nonzero(b, axis=1).astype(np.float64)
    union = total - inter
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return dice, iou


def _as_cpu_long(x: Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.is_floating_point() or x.is_complex():
        raise ValueError(f"{name} must hold integer labels, got {x.dtype} (take argmax of the logits first)")
    return x.detach().to("cpu", torch.int64)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, math.nan))


def _nanmean(values: Tensor) -> float:
    known = values[~values.isnan()]
    return float(known.mean()) if known.numel() else math.nan


def _as_bool_mask(x: np.ndarray | Tensor, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        return (x if x.dtype == torch.bool else _zero_one(x, name)).numpy()
    arr = np.asarray(x)
    return arr if arr.dtype == np.bool_ else _zero_one(arr, name)


def _zero_one(x: np.ndarray | Tensor, name: str) -> np.ndarray | Tensor:
    # 0/1 integer or float masks are accepted; probabilities or class labels are a mistake.
    if not ((x == 0) | (x == 1)).all():
        found = (x.float().unique() if isinstance(x, Tensor) else np.unique(x))[:10].tolist()
        raise ValueError(f"{name} must be a boolean (or 0/1) mask, got values {found}")
    return x != 0


def _set_sizes(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> tuple[int, int, int]:
    """``|A ∩ B|``, ``|A|``, ``|B|`` as Python ints."""
    a, b = _as_bool_mask(a, "a"), _as_bool_mask(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b))
