"""Calibrate the final assignment's graded mIoU thresholds from runs of the reference.

For every budget the grader pins (``small``: the test/demo setting, ``full``: the notebook's
defaults), the reference solution's training (``course_lib.train.fit``, CE + Dice + IoU,
the notebook's settings) runs with several seeds, and so does a deliberately weaker
setting (the same budget with a quarter of the steps). Each model is scored as the grader
scores it: float32, mIoU with background, on a split of ``HIDDEN_SIZE`` images drawn from a
seed used nowhere else (not the installation's secret split, which stays secret).

The three thresholds are then: the lowest reference score minus the margin (third cell),
the weaker setting's median but at least 0.02 above a model that predicts background
everywhere (first cell: a model that learned something), and their mean (second cell). The margin is ``max(MIN_MARGIN, 3 × the reference's standard deviation)``,
so a correct solution stays clear of the top threshold on an unlucky seed or another CPU.
The result is written to the assignment's ``calibration.json``, which the notebook shows and
the grader and the tests read::

    python -m benchmarks.calibrate_thresholds                    # both budgets, 5 seeds
    python -m benchmarks.calibrate_thresholds --budgets small --seeds 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import nbformat
import torch
from torch.utils.data import DataLoader

from autograder import course
from autograder.course import SMALL_PARAMETERS, solution_path
from autograder.trusted import notebook_parameters
from course_lib.data import ShapesDataset
from course_lib.demo import train_reference
from course_lib.metrics import ConfusionMatrix
from course_lib.train import evaluate

final = course.grading_module("04_segmentation_assignment")  # its trusted scorer

CALIBRATION_SPLIT_SEED = 31_415_926  # a scoring split of its own (the grader's is the installation's secret)
MIN_MARGIN = 0.03


def budget_settings(budget: str) -> dict:
    """The notebook's parameters under ``budget`` (the locked cell's defaults, pinned as the grader pins them)."""
    params = notebook_parameters(nbformat.read(solution_path(final.ASSIGNMENT), as_version=4))
    if budget == "small":
        params.update(SMALL_PARAMETERS[final.ASSIGNMENT])
    return params


def train_and_score(p: dict, seed: int, epochs: float) -> tuple[float, float]:
    """(hidden-style mIoU, seconds) of the reference trained with seed ``seed`` for ``epochs``
    (a fraction trains on that share of the images for one epoch)."""
    train_size = p["train_size"] if epochs >= 1 else max(p["batch_size"], int(p["train_size"] * epochs))
    settings = {"backbone": "resnet18", "fpn_channels": p["fpn_channels"], "head_channels": p["head_channels"],
                "size": p["image_size"], "batch_size": p["batch_size"], "lr": p["lr"], "epochs": max(1, int(epochs)),
                "train_size": train_size, "val_size": p["val_size"], "seed": seed}
    model, _, seconds, _, _ = train_reference(settings, validate=False)
    split = DataLoader(ShapesDataset(final.HIDDEN_SIZE, size=p["image_size"], seed=CALIBRATION_SPLIT_SEED), batch_size=32)
    miou = evaluate(model.float(), split, num_classes=final.NUM_CLASSES, amp=False)["miou"]
    return float(miou), seconds


def background_everywhere_miou(p: dict) -> float:
    """What a model that predicts background everywhere scores on the calibration split."""
    split = ShapesDataset(final.HIDDEN_SIZE, size=p["image_size"], seed=CALIBRATION_SPLIT_SEED)
    _, masks = split.materialize()
    cm = ConfusionMatrix(final.NUM_CLASSES)
    cm.update(torch.zeros_like(masks), masks)
    return cm.mean_iou()


def thresholds_from(reference: list[float], weaker: list[float], trivial: float) -> tuple[list[float], float]:
    """(the three thresholds, the margin) from the calibration runs: see the module docstring.
    Rounded down to 0.01, so that the margin below the worst reference run is never smaller."""
    margin = max(MIN_MARGIN, 3 * statistics.pstdev(reference))
    top = math.floor((min(reference) - margin) * 100) / 100
    if top - 0.02 < trivial + 0.02:
        raise ValueError(f"the reference ({min(reference):.3f} at worst) is too close to predicting background "
                         f"everywhere ({trivial:.3f}) for three thresholds: give the budget more steps")
    bottom = min(max(statistics.median(weaker), trivial + 0.02), top - 0.02)
    bottom = math.ceil(bottom * 100) / 100
    return [bottom, math.floor((bottom + top) / 2 * 100) / 100, top], margin


def calibrate(budget: str, seeds: list[int]) -> dict:
    p = budget_settings(budget)
    trivial = background_everywhere_miou(p)
    weaker_epochs = p["epochs"] / 4
    runs = {"reference": [], "weaker": []}
    for name, epochs in (("reference", p["epochs"]), ("weaker", weaker_epochs)):
        for seed in seeds:
            miou, seconds = train_and_score(p, seed, epochs)
            runs[name].append({"seed": seed, "miou": round(miou, 4), "seconds": round(seconds, 1)})
            print(f"{budget:5s} {name:9s} seed {seed}: mIoU {miou:.4f} in {seconds:.0f} s", flush=True)
    thresholds, margin = thresholds_from([r["miou"] for r in runs["reference"]], [r["miou"] for r in runs["weaker"]], trivial)
    return {
        "settings": {k: p[k] for k in ("image_size", "train_size", "batch_size", "epochs", "fpn_channels", "head_channels", "lr")},
        "weaker_setting": f"the same with a quarter of the steps ({weaker_epochs:g} epochs)",
        "scored_on": f"{final.HIDDEN_SIZE} images, seed {CALIBRATION_SPLIT_SEED}, float32, mIoU with background",
        "background_everywhere": round(trivial, 4),
        "runs": runs,
        "margin": round(margin, 3),
        "thresholds": thresholds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="small,full")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    path = final.CALIBRATION_FILE
    data = json.loads(path.read_text()) if path.exists() else {"budgets": {}}
    data["version"] = data.get("version", 0) + 1
    for budget in args.budgets.split(","):
        data["budgets"][budget] = calibrate(budget, list(range(args.seeds)))
        data["torch"] = torch.__version__
        path.write_text(json.dumps(data, indent=1) + "\n")  # after each budget: a long run keeps what it has
        print(f"{budget}: thresholds {data['budgets'][budget]['thresholds']} -> {path}")


if __name__ == "__main__":
    main()
