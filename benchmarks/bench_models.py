"""Benchmark: our ResNet-FPN and CombinedLoss against segmentation_models_pytorch and MONAI.

Speed is measured interleaved in one process (ours, theirs, ours, theirs, ...) so that
machine noise hits both alike; peak memory of a training step is measured in a fresh
subprocess per model (peak RSS growth on CPU, ``max_memory_allocated`` on CUDA).

    python benchmarks/bench_models.py --out build/bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from course_lib.device import resolve_device
from course_lib.losses import CombinedLoss
from course_lib.models import ResNetFPN
from course_lib.train import mixed_precision_dtype, prepare_model, train_step

NUM_CLASSES = 4


# variant -> (library, mixed precision): "ours" is how course_lib.train.fit trains (channels-last,
# bf16 autocast where the processor has it), "ours_fp32" the like-for-like float32 run,
# "smp" how smp's documentation trains its FPN (float32, default layout).
VARIANTS = {"ours": ("ours", True), "ours_fp32": ("ours", False), "smp": ("smp", False)}


def build(variant: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer, bool, bool]:
    """The model as each library's user trains it; returns (model, optimizer, channels_last, amp)."""
    library, amp = VARIANTS[variant]
    torch.manual_seed(0)
    if library == "ours":
        model = ResNetFPN(NUM_CLASSES, backbone="resnet34")
        channels_last = prepare_model(model, device)  # what course_lib.train.fit does
    else:
        import segmentation_models_pytorch as smp

        model = smp.FPN("resnet34", encoder_weights=None, classes=NUM_CLASSES).to(device)
        channels_last = False
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4), channels_last, amp


def batch(args, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (args.batch, args.size, args.size), generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device), y.to(device)


def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_models(args, device) -> dict[str, float]:
    runs = {}
    for variant in VARIANTS:
        model, opt, cl, amp = build(variant, device)
        runs[variant] = (model, opt, amp, *batch(args, device, cl))
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    for rep in range(args.warmup + args.repeats):
        for variant, (model, opt, amp, x, y) in runs.items():
            sync(device)
            start = time.perf_counter()
            train_step(model, x, y, ce, opt, amp=amp)
            sync(device)
            if rep >= args.warmup:
                seconds[variant].append(time.perf_counter() - start)
    return {k: args.batch / statistics.median(v) for k, v in seconds.items()}


def training_flops(args) -> dict[str, int]:
    """Forward + backward FLOPs of one training step (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for variant in ("ours_fp32", "smp"):
        model, _, _, _ = build(variant, torch.device("cpu"))
        x, y = batch(argparse.Namespace(batch=1, size=args.size), torch.device("cpu"), False)
        with FlopCounterMode(display=False) as counter:
            ce(model(x), y).backward()
        flops[variant] = int(counter.get_total_flops())
    return flops


def time_losses(args, device) -> dict[str, float]:
    from monai.losses import DiceCELoss

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(args.batch, NUM_CLASSES, args.size, args.size, generator=g).to(device)
    target = torch.randint(0, NUM_CLASSES, (args.batch, args.size, args.size), generator=g).to(device)
    ours, theirs = CombinedLoss(ce=1.0, dice=1.0), DiceCELoss(softmax=True, to_onehot_y=True, batch=True)
    calls = {
        "ours": lambda z: ours(z, target)["loss"],
        "monai": lambda z: theirs(z, target[:, None]),
    }
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    for rep in range(args.warmup + 3 * args.repeats):
        for name, fn in calls.items():
            z = logits.detach().requires_grad_(True)
            sync(device)
            start = time.perf_counter()
            fn(z).backward()
            sync(device)
            if rep >= args.warmup:
                seconds[name].append(time.perf_counter() - start)
    return {k: args.batch / statistics.median(v) for k, v in seconds.items()}


def peak_memory_mb(which: str, args) -> float:
    """Peak memory of training steps, in a fresh process so that RSS belongs to one model."""
    cmd = [sys.executable, __file__, "--memory-probe", which, "--size", str(args.size),
           "--batch", str(args.batch), "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def memory_probe(variant: str, args) -> None:
    device = resolve_device(args.device)
    model, opt, cl, amp = build(variant, device)
    x, y = batch(args, device, cl)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak_rss()
        base = _rss_mb()
    for _ in range(3):  # the optimizer state appears on the first step
        train_step(model, x, y, ce, opt, amp=amp)
    sync(device)
    if device.type == "cuda":
        print((torch.cuda.max_memory_allocated() - base) / 2**20)
    else:
        print(_peak_rss_mb() - base)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water mark: a child starts with its parent's (ru_maxrss keeps it)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("build/bench.json"))
    parser.add_argument("--memory-probe", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args.memory_probe, args)

    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} × 3 × {args.size} × {args.size}", flush=True)
    speed = time_models(args, device)
    memory = {k: peak_memory_mb(k, args) for k in VARIANTS}
    flops = training_flops(args)
    losses = time_losses(args, device)
    result = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "size": args.size,
        "mixed_precision": str(mixed_precision_dtype(device)),
        "fpn_images_per_s": speed,
        "fpn_peak_memory_mb": memory,
        "fpn_train_gflops_per_image": {k: v / 1e9 for k, v in flops.items()},
        "loss_images_per_s": losses,
        "fpn_vs_smp_speed_ratio": speed["ours"] / speed["smp"],
        "fpn_vs_smp_memory_ratio": memory["ours"] / memory["smp"],
        "fpn_vs_smp_speed_ratio_fp32": speed["ours_fp32"] / speed["smp"],
        "fpn_vs_smp_memory_ratio_fp32": memory["ours_fp32"] / memory["smp"],
        "fpn_vs_smp_flop_ratio": flops["ours_fp32"] / flops["smp"],
        "loss_vs_monai_speed_ratio": losses["ours"] / losses["monai"],
    }
    rows = [
        ("train step (fit's defaults)", "images/s", speed["ours"], speed["smp"], "smp FPN, float32"),
        ("train step, float32", "images/s", speed["ours_fp32"], speed["smp"], "smp FPN, float32"),
        ("train step peak memory", "MB", memory["ours"], memory["smp"], "smp FPN, float32"),
        ("  same, float32", "MB", memory["ours_fp32"], memory["smp"], "smp FPN, float32"),
        ("train step work", "GFLOP/img", flops["ours_fp32"] / 1e9, flops["smp"] / 1e9, "smp FPN (no 3x3 output convs)"),
        ("CE + Dice loss fwd+bwd", "images/s", losses["ours"], losses["monai"], "MONAI DiceCELoss"),
    ]
    print(f"mixed precision of fit's defaults here: {result['mixed_precision']}")
    print(f"{'measure':30s} {'unit':10s} {'ours':>10s} {'theirs':>10s} {'ratio':>7s}  peer")
    for name, unit, a, b, peer in rows:
        print(f"{name:30s} {unit:10s} {a:10.2f} {b:10.2f} {a / b:7.3f}  {peer}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
