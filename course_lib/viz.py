"""Figures for every notebook: overlays, loss curves, pyramids and feature maps.

Every function returns a matplotlib ``Figure`` (shown inline in Jupyter) and takes CPU or
GPU tensors or NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

# Background black, then distinct colours (tab10 without its grey); 255 (ignore) is white.
_PALETTE = np.array(
    [(0, 0, 0)] + [tuple(int(255 * c) for c in plt.get_cmap("tab10")(i)[:3]) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)],
    dtype=np.uint8,
)
IGNORE_COLOUR = np.array([255, 255, 255], dtype=np.uint8)
LOSS_TITLES = {"loss_ce": "Cross-entropy loss", "loss_dice": "Dice loss", "loss_iou": "IoU loss", "loss": "Total loss"}


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def image_to_hwc(image: Any) -> np.ndarray:
    """``(3, H, W)`` or ``(H, W, 3)`` or ``(H, W)`` → ``(H, W, 3)`` floats clipped to [0, 1]."""
    img = to_numpy(image).astype(np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.max(initial=0) > 1.0 + 1e-6:
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def colorize_mask(mask: Any, ignore_index: int | None = 255) -> np.ndarray:
    """Integer mask ``(H, W)`` → RGB ``(H, W, 3)`` uint8 with a fixed palette per class."""
    m = to_numpy(mask).astype(np.int64)
    rgb = _PALETTE[np.mod(m, len(_PALETTE))]
    if ignore_index is not None:
        rgb[m == ignore_index] = IGNORE_COLOUR
    return rgb


def overlay(image: Any, mask: Any, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an image; background pixels keep the image."""
    img = image_to_hwc(image)
    m = to_numpy(mask)
    colours = colorize_mask(m).astype(np.float32) / 255.0
    weight = alpha * (m != 0)[..., None]
    return img * (1 - weight) + colours * weight


def show_predictions(
    images: Any,
    masks: Any,
    predictions: Any,
    class_names: Sequence[str] | None = None,
    max_items: int = 4,
) -> Figure:
    """One row per image: the image, ground truth over it, prediction over it."""
    n = min(len(images), max_items)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for i in range(n):
        panels = [image_to_hwc(images[i]), overlay(images[i], masks[i], alpha=0.8),
                  overlay(images[i], predictions[i], alpha=0.8)]
        for ax, panel, title in zip(axes[i], panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title)
    if class_names:
        handles = [plt.Rectangle((0, 0), 1, 1, color=_PALETTE[c % len(_PALETTE)] / 255) for c in range(len(class_names))]
        fig.legend(handles, class_names, loc="lower center", ncol=len(class_names), frameon=False)
    fig.tight_layout(rect=(0, 0.04 if class_names else 0, 1, 1))
    return fig


def plot_loss_curves(history: Any, keys: Sequence[str] = ("loss_iou", "loss_ce", "loss_dice", "loss"),
                     per: str = "step", smooth: int = 1) -> Figure:
    """The four curves of the final assignment, one panel each (the seed notes' Figures 6-9).

    ``history`` is a :class:`course_lib.train.History` or a plain dict of lists; ``per`` is
    ``"step"`` or ``"epoch"``; ``smooth`` > 1 adds a moving average.
    """
    series = _history_series(history, per)
    keys = [k for k in keys if k in series]
    if not keys:
        raise ValueError(f"history has none of the loss keys; it has {sorted(series)}")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = np.asarray(series[key], dtype=float)
        x = np.arange(1, len(values) + 1)
        ax.plot(x, values, alpha=0.4 if smooth > 1 else 1.0, marker="o" if len(values) < 20 else None)
        if smooth > 1 and len(values) >= smooth:
            ma = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
            ax.plot(x[smooth - 1:], ma)
        ax.set_title(LOSS_TITLES.get(key, key))
        ax.set_xlabel(per)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _history_series(history: Any, per: str) -> Mapping[str, Sequence[float]]:
    if per not in ("step", "epoch"):
        raise ValueError(f"per must be 'step' or 'epoch', got {per!r}")
    if hasattr(history, per):
        return getattr(history, per)
    if isinstance(history, Mapping) and per in history and isinstance(history[per], Mapping):
        return history[per]
    return history


def show_pyramid(levels: Sequence[Any], title: str = "pyramid", signed: bool = False) -> Figure:
    """Levels of an image pyramid side by side at their true relative sizes."""
    widths = [image_to_hwc(_first(level)).shape[1] for level in levels]
    fig, axes = plt.subplots(1, len(levels), figsize=(3 * len(levels), 3.2),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    for k, (ax, level) in enumerate(zip(axes[0], levels)):
        arr = to_numpy(_first(level)).astype(np.float32)
        if signed:  # Laplacian levels are differences around 0
            arr = 0.5 + arr / (2 * max(np.abs(arr).max(), 1e-6))
        img = image_to_hwc(arr)
        ax.imshow(img)
        ax.set_title(f"level {k}: {img.shape[0]}×{img.shape[1]}")
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_feature_maps(features: Mapping[str, Any], channels: int = 6, title: str | None = None) -> Figure:
    """A grid: one row per level (``c2..c5`` or ``p2..p5``), the first channels and the mean |activation|."""
    names = list(features)
    fig, axes = plt.subplots(len(names), channels + 1, figsize=(1.6 * (channels + 1), 1.7 * len(names)),
                             squeeze=False)
    for row, name in zip(axes, names):
        fmap = to_numpy(_first(features[name])).astype(np.float32)  # (C, h, w)
        panels = [np.abs(fmap).mean(axis=0)] + [fmap[c] for c in range(min(channels, fmap.shape[0]))]
        for col, ax in enumerate(row):
            ax.set_axis_off()
            if col < len(panels):
                ax.imshow(panels[col], cmap="viridis")
        row[0].set_title(f"{name} {fmap.shape[1]}×{fmap.shape[2]}  mean|·|", fontsize=8, loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_design_comparison(rows: Sequence[Any]) -> Figure:
    """Bar charts of time and peak memory for the FPN paper's Figure 1 designs.

    ``rows`` are objects or dicts with ``name``, ``seconds`` and ``peak_memory_mb``.
    """
    get = (lambda r, k: r[k]) if rows and isinstance(rows[0], Mapping) else getattr
    names = [get(r, "name") for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, label in zip(axes, ("seconds", "peak_memory_mb"), ("time per image (s)", "peak memory (MB)")):
        values = [get(r, key) for r in rows]
        bars = ax.bar(range(len(values)), values, color=_PALETTE[1:len(values) + 1] / 255)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(range(len(values)), names, rotation=15, ha="right", fontsize=8)
        ax.set_ylabel(label)
    fig.tight_layout()
    return fig


def _first(x: Any) -> Any:
    """Drop a batch dimension if there is one."""
    return x[0] if getattr(x, "ndim", 0) == 4 else x
