"""The reference model study: which settings make the reference FPN segment well within the
course's CPU budget (about 5 minutes per model on two cores).

Each row trains one model from :data:`course_lib.train.REFERENCE_CPU` with some settings
changed and reports: the settings, training seconds, validation mIoU (background included),
and the held-out mIoU of the shape classes by object size. Rows are appended to
``<out>/rows.jsonl`` (a rerun skips rows already there) and the table is printed as markdown::

    python -m benchmarks.reference_study --out build/study            # every row, in order
    python -m benchmarks.reference_study --rows "old defaults,lr 6e-3"

Knobs beyond REFERENCE_CPU's keys: ``arch`` (fpn / single_scale), ``classifier_init``
(``"he"`` reproduces the old He-initialised classifier, ``"small"`` the library's, a number
the std of a normal init),
``normalize`` (input standardisation), ``channels_last`` (``"auto"``, ``"1"``, ``"0"``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from course_lib.data import ShapesDataset
from course_lib.demo import train_reference
from course_lib.train import REFERENCE_CPU, evaluate, evaluate_by_object_size

OLD = dict(classifier_init="he", normalize=False, channels_last="1")  # the library before this study
STD001 = dict(classifier_init=0.01)  # the first small init tried (mmsegmentation's)

ROWS: dict[str, dict] = {
    "old defaults": dict(OLD),
    "+ small classifier init": dict(OLD, classifier_init=0.01),
    "+ normalised input": dict(OLD, classifier_init=0.01, normalize=True),
    "+ measured layout": dict(classifier_init=0.01),
    "lr 6e-3": dict(STD001, lr=6e-3),
    "lr 1.5e-3": dict(STD001, lr=1.5e-3),
    "6 epochs of 2000": dict(STD001, epochs=6, train_size=2000),
    "size 128 with 2000 images": dict(STD001, size=128, train_size=2000),
    "single-scale with new defaults": dict(STD001, arch="single_scale"),
    "classifier init std 0.1 (new defaults)": {},
    "single-scale with std 0.1": dict(arch="single_scale"),
}


def train_row(settings: dict, progress: bool = False) -> dict:
    s = {**REFERENCE_CPU, "arch": "fpn", "classifier_init": "small", "normalize": True, "channels_last": "auto", **settings}
    if s["channels_last"] == "auto":
        os.environ.pop("COURSE_LIB_CHANNELS_LAST", None)
    else:
        os.environ["COURSE_LIB_CHANNELS_LAST"] = s["channels_last"]
    test = ShapesDataset(s["test_size"], size=s["size"], seed=s["test_seed"])

    def init(model: nn.Module) -> None:
        if s["classifier_init"] == "he":
            nn.init.kaiming_normal_(model.head.classifier.weight, mode="fan_out", nonlinearity="relu")
        elif s["classifier_init"] != "small":  # a number: the std of a normal init
            nn.init.normal_(model.head.classifier.weight, std=float(s["classifier_init"]))

    model, history, seconds, _, val = train_reference(s, s["arch"], progress=progress, init=init)
    first_ce = history.step["loss_ce"][0] if history.step.get("loss_ce") else float("nan")
    return {"settings": s, "train_seconds": seconds, "first_ce": first_ce,
            "val_miou": evaluate(model, val)["miou"],
            "test_miou": evaluate(model, DataLoader(test, batch_size=32))["miou"],
            "by_size": evaluate_by_object_size(model, test), "torch_threads": torch.get_num_threads()}


def table(rows: dict[str, dict]) -> str:
    lines = ["| row | changed settings | s | first CE | val mIoU | test mIoU | small | medium | large |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        changed = ", ".join(f"{k}={v}" for k, v in ROWS.get(name, {}).items()) or "—"
        b = r["by_size"]
        lines.append(f"| {name} | {changed} | {r['train_seconds']:.0f} | {r['first_ce']:.2f} | {r['val_miou']:.3f} | "
                     f"{r['test_miou']:.3f} | {b['small']:.3f} | {b['medium']:.3f} | {b['large']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/study"))
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"
    done = {json.loads(line)["name"]: json.loads(line) for line in log.read_text().splitlines()} if log.exists() else {}
    for name in args.rows.split(","):
        if name not in done:
            result = {"name": name, **train_row(ROWS[name])}
            with log.open("a") as f:
                f.write(json.dumps(result) + "\n")
            done[name] = result
            print(table({name: result}).splitlines()[-1], flush=True)
    print(table({name: done[name] for name in args.rows.split(",")}))


if __name__ == "__main__":
    main()
