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


def plot_loss_curves_by_variant(histories: Mapping[str, Any], keys: Sequence[str] = ("loss_ce", "loss_dice", "loss_iou", "loss"),
                                per: str = "step", smooth: int = 1) -> Figure:
    """The four loss curves of several runs, one panel per loss and one line per run.

    ``histories`` maps a run's name (say ``"CE + Dice"``) to its history; with ``smooth`` > 1
    each line is a moving average over that many points (raw values are too noisy to compare
    runs). A loss a run did not train on is still drawn if it was logged: an ablation's
    CE-only run shows what the Dice curve does when nothing optimises it.
    """
    if not histories:
        raise ValueError("no histories to plot")
    series = {name: _history_series(h, per) for name, h in histories.items()}
    keys = [k for k in keys if any(k in s for s in series.values())]
    if not keys:
        raise ValueError("the histories have none of the loss keys")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, s in series.items():
            if key not in s:
                continue
            values = np.asarray(s[key], dtype=float)
            if smooth > 1 and len(values) >= smooth:
                values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
            ax.plot(np.arange(len(values)) + (smooth if smooth > 1 and len(s[key]) >= smooth else 1), values, label=name)
        ax.set_title(LOSS_TITLES.get(key, key))
        ax.set_xlabel(per)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
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


def _shape_label(name: str, shape: Sequence[int]) -> str:
    return f"{name}\n{'×'.join(str(s) for s in shape)}"


def _map_box(ax, x: float, y: float, shape: Sequence[int], largest: int, label: str, predicted: bool = False,
             color: str = "#90caf9", side: str = "right", power: float = 0.7) -> None:
    """A map drawn as a box whose sides follow its (H, W) (compressed by ``power``, so that a
    stride-32 map stays visible), centred at (x, y), labelled on ``side`` (right, left, below)."""
    from matplotlib.patches import Rectangle

    h, w = (0.35 + 1.6 * (s / largest) ** power for s in shape[-2:])
    ax.add_patch(Rectangle((x - w / 2, y - h / 2), w, h, facecolor=color, alpha=0.9,
                           edgecolor="#c62828" if predicted else "#37474f", linewidth=2.2 if predicted else 0.8))
    where = {"right": (x + w / 2 + 0.12, y, "left", "center"), "left": (x - w / 2 - 0.12, y, "right", "center"),
             "below": (x, y - h / 2 - 0.1, "center", "top")}[side]
    ax.text(where[0], where[1], label, fontsize=7, ha=where[2], va=where[3])


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", style: str = "-|>",
           color: str = "#455a64") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=color, lw=1.0))
    if text:
        vertical = abs(end[0] - start[0]) < abs(end[1] - start[1])
        ax.text((start[0] + end[0]) / 2 + (0.15 if vertical else 0), (start[1] + end[1]) / 2 + (0 if vertical else 0.12),
                text, fontsize=6.5, color=color, ha="left" if vertical else "center", va="center" if vertical else "bottom")


def draw_pyramid_designs(shapes: Mapping[str, Mapping[str, Sequence[Sequence[int]]]]) -> Figure:
    """The FPN paper's Figure 1 (a)–(d), drawn from real tensor shapes.

    ``shapes`` is :func:`course_lib.pyramids.design_shapes`: per design the input images, the
    maps computed and the maps predicted from, each ``(C, H, W)``. Box sides follow the maps'
    heights and widths (compressed, so that a stride-32 map stays visible); the maps a head
    predicts from are outlined in red.
    """
    fig, axes = plt.subplots(1, 4, figsize=(17, 5.2))
    largest = max(max(s[-2:]) for d in shapes.values() for s in d["images"])
    for ax, (name, design) in zip(axes, shapes.items()):
        ax.set_xlim(0, 10)
        ax.set_ylim(-0.5, 11)
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
        images, computed, predicted = design["images"], list(design["computed"]), list(design["predicted"])
        if len(images) > 1:  # (a): one backbone run per image scale, C5 of each
            per_scale = len(computed) // len(images)
            for k, image in enumerate(images):
                x = 1.7 + 3.3 * k
                _map_box(ax, x, 1.4, image, largest, _shape_label("image", image), color="#fff59d", side="below")
                c5 = computed[per_scale * (k + 1) - 1]
                _map_box(ax, x, 8.5, c5, largest, _shape_label("C5", c5), predicted=True, side="below")
                _arrow(ax, (x, 2.9), (x, 7.2), "backbone" if k == 0 else "")
            continue
        image = images[0]
        top_down = len(computed) > 4
        xc = 3.2 if top_down else 2.5
        _map_box(ax, xc, 0.6, image, largest, _shape_label("input", image), color="#fff59d", side="left" if top_down else "right")
        ys = [2.6, 4.9, 7.0, 9.0]
        previous = 1.4
        for k, (shape, y) in enumerate(zip(computed[:4], ys)):
            used = shape in predicted and not top_down
            _map_box(ax, xc, y, shape, largest, _shape_label(f"C{k + 2}", shape), predicted=used,
                     side="left" if top_down else "right")
            _arrow(ax, (xc, previous), (xc, y - 0.5))
            previous = y + 0.5
        if top_down:  # (d): lateral 1×1 convs and the top-down pathway
            for k, (shape, y) in enumerate(zip(computed[4:], ys)):
                _map_box(ax, 7.4, y, shape, largest, _shape_label(f"P{k + 2}", shape), predicted=True, color="#a5d6a7")
                _arrow(ax, (4.4, y), (6.4, y), "1×1" if k == 3 else "")
                if k < 3:
                    _arrow(ax, (7.4, ys[k + 1] - 0.45), (7.4, y + 0.6), "2× up" if k == 2 else "")
    fig.suptitle(f"FPN Figure 1 for a {images[0][-2]}×{images[0][-1]} input: real shapes (C×H×W); red: what the head predicts from",
                 fontsize=10)
    fig.tight_layout()
    return fig


def draw_fpn_merge(level: str, lateral_in: Sequence[int], coarser: Sequence[int] | None, out: Sequence[int],
                   ax=None) -> Figure:
    """The FPN paper's Figure 3 for one level: ``C_i`` → 1×1 conv, the coarser merged map →
    nearest upsampling to the lateral's size, their sum → 3×3 conv → ``P_i``; every box is
    labelled with its real shape ``(C, H, W)`` (``coarser`` is None at the top level).
    Draws into ``ax`` when given."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.8))
    fig = ax.figure
    ax.set_xlim(0, 13)
    ax.set_ylim(-0.4, 6.2)
    ax.set_axis_off()
    largest = max(max(s[-2:]) for s in (lateral_in, out, *([coarser] if coarser else [])))
    k = level[1:]
    box = dict(largest=largest, side="below", power=1.0)
    _map_box(ax, 1.2, 1.6, lateral_in, label=_shape_label(f"C{k}", lateral_in), **box)
    lateral = (out[0], *lateral_in[-2:])
    _map_box(ax, 5.4, 1.6, lateral, label=_shape_label("lateral", lateral), color="#ce93d8", **box)
    _arrow(ax, (2.3, 1.6), (4.3, 1.6), "1×1 conv")
    if coarser is not None:
        _map_box(ax, 1.2, 4.7, coarser, label=_shape_label(f"M{int(k) + 1}", coarser), color="#a5d6a7", **box)
        _map_box(ax, 5.4, 4.7, out, label=_shape_label("upsampled", out), color="#a5d6a7", **box)
        _arrow(ax, (2.3, 4.7), (4.3, 4.7), "nearest, to the\nlateral's size")
        ax.text(8.0, 3.15, "+", fontsize=22, ha="center", va="center")
        _arrow(ax, (6.6, 4.5), (7.7, 3.5))
        _arrow(ax, (6.6, 1.8), (7.7, 2.8))
    _map_box(ax, 11.4, 3.15, out, label=_shape_label(f"P{k}", out), predicted=True, **box)
    _arrow(ax, (8.4, 3.15), (10.2, 3.15), "3×3 conv")
    title = f"FPN Figure 3 at {level}" + ("" if coarser is not None else " (top level: no top-down input)")
    ax.set_title(title, fontsize=10)
    return fig


def show_top_down_step(steps: Sequence[Mapping[str, Any]], features: Mapping[str, Any], index: int) -> Figure:
    """Step ``index`` of :meth:`course_lib.models.FPN.top_down_steps`: the Figure 3 block with the
    step's real shapes, and below it the mean |activation| of the lateral, the upsampled
    coarser map, their sum and the output ``P_i``."""
    step = steps[index]
    level = str(step["level"])
    c_in = features["c" + level[1:]]
    coarser = steps[index - 1]["merged"] if index else None
    fig = plt.figure(figsize=(11, 6.4))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.5, 1])
    draw_fpn_merge(level, tuple(c_in.shape[1:]), None if coarser is None else tuple(coarser.shape[1:]),
                   tuple(step["output"].shape[1:]), ax=fig.add_subplot(grid[0, :]))
    for col, key in enumerate(("lateral", "top_down", "merged", "output")):
        ax = fig.add_subplot(grid[1, col])
        ax.set_axis_off()
        value = step[key]
        if value is None:
            ax.set_title(f"{key}: none at the top", fontsize=8)
            continue
        ax.imshow(np.abs(to_numpy(_first(value)).astype(np.float32)).mean(axis=0), cmap="viridis")
        ax.set_title(f"{key} mean|·| {tuple(value.shape[-2:])}", fontsize=8)
    fig.tight_layout()
    return fig


def _first(x: Any) -> Any:
    """Drop a batch dimension if there is one."""
    return x[0] if getattr(x, "ndim", 0) == 4 else x
