"""``python -m course_lib.demo``: train the reference FPN and the single-scale baseline on
ShapesDataset, then save the course's figures and print their scores.

``--budget reference`` is the course's CPU training budget (:data:`REFERENCE_CPU`, about
4-5 minutes per model on two cores); ``brief`` (the default) a fifth of it; ``quick`` a
tiny smoke test. Results go to ``--out``: loss curves and predictions as PNG, plus
``results.json`` with the held-out mIoU by object size.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import torch
from torch import nn
from torch.utils.data import DataLoader

matplotlib.use("Agg")

from course_lib.data import ShapesDataset, make_loaders  # noqa: E402
from course_lib.device import resolve_device  # noqa: E402
from course_lib.losses import CombinedLoss  # noqa: E402
from course_lib.models import ResNetFPN, SingleScaleSegmenter  # noqa: E402
from course_lib.train import REFERENCE_CPU, History, evaluate, evaluate_by_object_size, fit, predict  # noqa: E402
from course_lib.viz import plot_loss_curves, show_predictions  # noqa: E402

BUDGETS = {
    "reference": REFERENCE_CPU,
    "brief": dict(REFERENCE_CPU, train_size=1200, epochs=2, test_size=200),
    "quick": dict(REFERENCE_CPU, train_size=32, val_size=16, test_size=16, epochs=1),
}


ARCHITECTURES = {"fpn": ResNetFPN, "single_scale": SingleScaleSegmenter}


class TrainedReference(NamedTuple):
    model: nn.Module
    history: History
    seconds: float
    train_loader: DataLoader
    val_loader: DataLoader


def train_reference(settings: dict[str, Any], arch: str = "fpn", seed: int | None = None, validate: bool = True,
                    device: str = "auto", progress: bool = False,
                    init: Callable[[nn.Module], None] | None = None) -> TrainedReference:
    """Train the course's reference model with ``settings`` (the keys of :data:`REFERENCE_CPU`;
    ``normalize`` optional): CE + Dice + IoU, AdamW one-cycle, seeded by ``seed`` (default
    ``settings["seed"]``). ``init(model)`` may change the fresh model first (the reference study
    tries classifier inits); ``validate=False`` skips the per-epoch validation mIoU. The one
    training recipe of ``make train``/``make reference``, the reference study and the threshold
    calibration."""
    seed = settings["seed"] if seed is None else seed
    train, val = make_loaders(settings["train_size"], settings["val_size"], settings["batch_size"],
                              size=settings["size"], seed=seed)
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch](train.dataset.num_classes, backbone=settings["backbone"],
                                fpn_channels=settings["fpn_channels"], head_channels=settings["head_channels"],
                                normalize=settings.get("normalize", True))
    if init is not None:
        init(model)
    started = time.perf_counter()
    history = fit(model, train, val if validate else None, CombinedLoss(ce=1.0, dice=1.0, iou=1.0),
                  epochs=settings["epochs"], lr=settings["lr"], device=device, seed=seed, progress=progress)
    return TrainedReference(model, history, time.perf_counter() - started, train, val)


def run(out: Path, settings: dict, device: str = "auto", progress: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # held-out test split from a seed used nowhere else
    test = ShapesDataset(settings["test_size"], size=settings["size"], seed=settings["test_seed"])
    results = {"settings": settings, "device": str(resolve_device(device)), "models": {}}
    for name in ARCHITECTURES:
        model, history, seconds, _, _ = train_reference(settings, name, device=device, progress=progress)
        scores = evaluate_by_object_size(model, test)
        test_miou = evaluate(model, DataLoader(test, batch_size=32))["miou"]
        results["models"][name] = {"train_seconds": seconds, "test_miou": test_miou,
                                   "test_miou_by_size": scores, "val_miou": history["val_miou"]}
        plot_loss_curves(history, smooth=5).savefig(out / f"{name}_loss_curves.png", dpi=100)
        images, masks = ShapesDataset(4, size=settings["size"], seed=settings["test_seed"]).materialize()
        show_predictions(images, masks, predict(model, images).cpu(), test.class_names).savefig(
            out / f"{name}_predictions.png", dpi=80)
        print(f"{name:13s} trained {seconds:6.1f} s  test mIoU {test_miou:.3f}; shape classes only, by size: "
              + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    fpn, single = (results["models"][k]["test_miou_by_size"] for k in ("fpn", "single_scale"))
    results["fpn_minus_single_scale"] = {k: fpn[k] - single[k] for k in fpn}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("FPN − single-scale mIoU: " + "  ".join(f"{k} {v:+.3f}" for k, v in results["fpn_minus_single_scale"].items()))
    print(f"figures and results.json in {out}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget", choices=list(BUDGETS), default="brief")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    run(args.out, dict(BUDGETS[args.budget]), args.device, progress=not args.no_progress)


if __name__ == "__main__":
    main()
