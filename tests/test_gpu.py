"""Checks that need a CUDA GPU (marker ``gpu``: skipped elsewhere by conftest; ``make gpu-check``
runs them): mixed precision as fit uses it, memory layouts, and the GPU numbering of
:mod:`autograder.gpus` against what CUDA itself reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from course_lib.data import make_loaders
from course_lib.losses import CombinedLoss
from course_lib.models import ResNetFPN
from course_lib.train import fit, mixed_precision_dtype, prepare_model, train_step

pytestmark = pytest.mark.gpu


def small_model(num_classes=5):
    return ResNetFPN(num_classes, backbone="resnet18", fpn_channels=64, head_channels=32)


def test_mixed_precision_dtype_follows_the_compute_capability():
    device = torch.device("cuda", 0)
    major, minor = torch.cuda.get_device_capability(device)
    expected = torch.bfloat16 if major >= 8 else torch.float16
    assert mixed_precision_dtype(device) == expected, f"capability {major}.{minor}"


def autocast_dtypes(model):
    """The dtypes the convolutions produce during the next forward passes."""
    seen = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
    return seen


@pytest.mark.parametrize("capability", [None, (7, 5)], ids=["native", "as-if-fp16-gpu"])
def test_a_short_fit_on_cuda_runs_in_the_chosen_dtype_with_finite_losses(monkeypatch, capability):
    if capability is not None:  # the float16 + GradScaler path of older GPUs, on this one
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    device = torch.device("cuda")
    dtype = mixed_precision_dtype(device)
    train, val = make_loaders(train_size=64, val_size=16, batch_size=8, size=64, seed=0)
    model = small_model()
    seen = autocast_dtypes(model)
    history = fit(model, train, val, CombinedLoss(ce=1.0, dice=1.0), epochs=1, lr=1e-3, device=device,
                  progress=False)
    assert seen == {dtype}
    assert all(math.isfinite(v) for v in history.step["loss"]) and len(history.step["loss"]) == len(train)
    assert math.isfinite(history["val_miou"][0])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).device.type == "cuda"


def test_train_step_with_float16_and_a_grad_scaler_updates_the_weights(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # float16 here
    device = torch.device("cuda")
    assert mixed_precision_dtype(device) == torch.float16
    model = small_model().to(device)
    x = torch.rand(4, 3, 64, 64, device=device)
    y = torch.randint(0, 5, (4, 64, 64), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cuda")
    losses = train_step(model, x, y, CombinedLoss(ce=1.0), opt, scaler=scaler, amp=True)
    assert math.isfinite(losses["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scaler.get_scale() > 0


def test_channels_last_and_contiguous_forward_agree_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    device = torch.device("cuda")
    model = small_model().eval().to(device)
    x = torch.rand(2, 3, 67, 93, device=device)  # odd sizes: the FPN's nearest upsampling by size
    with torch.no_grad():
        ref = model(x)
        assert prepare_model(model, device) is True
        assert model.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)


CHILD = """
import json, torch
print(json.dumps([str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]))
"""


def cuda_uuids(visible: str | None) -> list[str]:
    """The UUIDs CUDA enumerates in a fresh process with that CUDA_VISIBLE_DEVICES, PCI bus order."""
    from autograder.gpus import kernel_environment

    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(kernel_environment(visible) if visible is not None else {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return ["GPU-" + u.removeprefix("GPU-") for u in json.loads(out.strip().splitlines()[-1])]


def test_nvidia_smi_order_is_cudas_pci_bus_order_and_pinning_ids_select_one_gpu():
    from autograder.gpus import device_nodes, list_gpus, pinning_ids

    gpus = list_gpus()
    if not gpus:
        pytest.skip("nvidia-smi is not available here")
    full = [g for g in gpus if not g.mig_mode]
    if len(full) == len(gpus):  # CUDA enumerates MIG devices otherwise
        assert cuda_uuids(None) == [g.uuid for g in gpus]
    for pinned in pinning_ids("auto", gpus, environ={})[:2]:
        if pinned.startswith("GPU-"):
            assert cuda_uuids(pinned) == [pinned]
        nodes = device_nodes(pinned, gpus)
        gpu = next(g for g in gpus if g.uuid == pinned or any(m.uuid == pinned for m in g.mig))
        if gpu.minor >= 0 and os.path.exists(f"/dev/nvidia{gpu.minor}"):
            assert f"/dev/nvidia{gpu.minor}" in nodes and "/dev/nvidiactl" in nodes
        others = {f"/dev/nvidia{g.minor}" for g in gpus if g is not gpu}
        assert not others & set(nodes)
