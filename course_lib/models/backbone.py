"""The encoder: a torchvision ResNet that returns C2-C5 (notebook 02)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models as tv_models

# name -> (constructor, torchvision weights enum name, channels of C2..C5)
_RESNETS: dict[str, tuple] = {
    "resnet18": (tv_models.resnet18, "ResNet18_Weights", [64, 128, 256, 512]),
    "resnet34": (tv_models.resnet34, "ResNet34_Weights", [64, 128, 256, 512]),
    "resnet50": (tv_models.resnet50, "ResNet50_Weights", [256, 512, 1024, 2048]),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The per-channel statistics torchvision's ImageNet weights expect of RGB images in [0, 1]."""

FEATURE_NAMES = ("c2", "c3", "c4", "c5")
FEATURE_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


class ResNetBackbone(nn.Module):
    """A torchvision ResNet cut into the FPN paper's stages.

    C1 (the stem at stride 2) is computed but not returned: at half resolution its
    maps would dominate memory, which is why the FPN paper leaves it out.

    Args:
        name: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        weights: ``None`` (random init), a path to a torchvision ResNet ``state_dict``
            file (``torch.save(resnet.state_dict(), path)``; works offline), or
            ``"imagenet"`` (torchvision's ImageNet weights; downloaded once when online).

    Shape:
        - input ``x``: ``(N, 3, H, W)``
        - output: ``{"c2": (N, C2, ⌈H/4⌉, ⌈W/4⌉), ..., "c5": (N, C5, ⌈H/32⌉, ⌈W/32⌉)}``
          (for sizes that are not multiples of 32 each stride-2 step rounds up).
    """

    def __init__(self, name: str = "resnet18", weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(_RESNETS)}")
        constructor, _, channels = _RESNETS[name]
        resnet = constructor(weights=None)
        if weights is not None:
            resnet.load_state_dict(_load_resnet_state_dict(name, weights))
        self.name = name
        self.out_channels: list[int] = list(channels)
        self.strides: list[int] = [FEATURE_STRIDES[k] for k in FEATURE_NAMES]
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}


def _load_resnet_state_dict(name: str, weights: str | os.PathLike) -> dict[str, Tensor]:
    if str(weights).lower() == "imagenet":
        enum = getattr(tv_models, _RESNETS[name][1]).IMAGENET1K_V1
        try:
            return enum.get_state_dict(progress=False)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise RuntimeError(
                f"could not download the ImageNet weights for {name} ({err}). This machine looks offline: "
                f"download {enum.url} on a machine that is online, copy the file here and pass its path, "
                f"e.g. ResNetBackbone({name!r}, weights='/path/to/{Path(enum.url).name}')."
            ) from err
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass None, 'imagenet' or the path of a torchvision "
            f"{name} state_dict file"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state
