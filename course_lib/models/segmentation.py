"""Full segmenters: encoder + decoder + head (notebooks 02 and 04)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.models.backbone import IMAGENET_MEAN, IMAGENET_STD, ResNetBackbone
from course_lib.models.fpn import FPN, SingleScaleNeck
from course_lib.models.heads import SemanticFPNHead

MIN_INPUT_SIZE = 32


class Segmenter(nn.Module):
    """``normalise → backbone → neck → head → bilinear upsampling to the input size``.

    The three parts are kept apart (as in segmentation_models_pytorch) so that swapping
    one never touches the others. ``config`` holds the constructor arguments, so
    :func:`build_model` can rebuild the architecture from plain data.

    With ``normalize`` (the default) images in [0, 1] are standardised with the ImageNet
    channel statistics first, as torchvision's pretrained weights expect and as a randomly
    initialised network also trains better with (zero-mean inputs, unit scale); the
    statistics are constants, not parameters or state.

    Shape: ``(N, 3, H, W)`` with ``H, W >= 32`` → logits ``(N, num_classes, H, W)``.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: SemanticFPNHead, config: dict[str, Any],
                 normalize: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.config = dict(config, normalize=normalize)
        self.normalize = normalize
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.head.classifier.out_channels

    def _stem_weight(self) -> Tensor:
        return next(self.backbone.parameters())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"expected images (N, C, H, W) with H, W >= {MIN_INPUT_SIZE}, got {tuple(x.shape)}")
        if self.normalize:
            x = (x - self.pixel_mean) / self.pixel_std
        if self._stem_weight().is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # match a channels-last model
        features = self.backbone(x)
        pyramid = self.neck(features)
        stride4_size = features["c2"].shape[-2:]
        logits = self.head(pyramid, output_size=stride4_size)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ResNetFPN(Segmenter):
    """ResNet backbone → FPN (P2-P5) → semantic-FPN head: the course's reference segmenter.

    Args:
        num_classes: output classes (background included).
        backbone: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        weights: backbone weights, see :class:`ResNetBackbone`.
        fpn_channels: channels of every pyramid level (``d = 256`` in the paper).
        head_channels: channels of the semantic head (128 in Panoptic FPN).
        normalize: standardise the input with the ImageNet statistics (see :class:`Segmenter`);
            keep it with ``weights``, which were trained on standardised inputs.

    ``model.backbone`` is the :class:`ResNetBackbone`, ``model.fpn`` the :class:`FPN`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        weights: str | os.PathLike | None = None,
        fpn_channels: int = 256,
        head_channels: int = 128,
        normalize: bool = True,
    ) -> None:
        encoder = ResNetBackbone(backbone, weights=weights)
        super().__init__(
            backbone=encoder,
            neck=FPN(encoder.out_channels, fpn_channels),
            head=SemanticFPNHead(fpn_channels, num_classes, strides=encoder.strides, head_channels=head_channels),
            config={"arch": "fpn", "num_classes": num_classes, "backbone": backbone,
                    "fpn_channels": fpn_channels, "head_channels": head_channels},
            normalize=normalize,
        )

    @property
    def fpn(self) -> FPN:
        return self.neck


class SingleScaleSegmenter(Segmenter):
    """The FPN paper's Figure 1(b) baseline: the same backbone and head, predicting from C5 alone.

    Same arguments and interface as :class:`ResNetFPN`, so the two can be compared
    one-for-one (notebook 04 compares them on small and large objects).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        weights: str | os.PathLike | None = None,
        fpn_channels: int = 256,
        head_channels: int = 128,
        normalize: bool = True,
    ) -> None:
        encoder = ResNetBackbone(backbone, weights=weights)
        super().__init__(
            backbone=encoder,
            neck=SingleScaleNeck(encoder.out_channels[-1], fpn_channels, level="c5"),
            head=SemanticFPNHead(fpn_channels, num_classes, strides=[32], head_channels=head_channels),
            config={"arch": "single_scale", "num_classes": num_classes, "backbone": backbone,
                    "fpn_channels": fpn_channels, "head_channels": head_channels},
            normalize=normalize,
        )


_ARCHITECTURES = {"fpn": ResNetFPN, "single_scale": SingleScaleSegmenter}


def build_model(config: dict[str, Any]) -> Segmenter:
    """Rebuild a segmenter from its ``model.config`` (plain data; no pickled code).

    A config without ``normalize`` comes from a model saved before input normalisation
    existed, which saw raw [0, 1] images: it is rebuilt without it."""
    config = dict(config)
    config.setdefault("normalize", False)
    arch = config.pop("arch", "fpn")
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[arch](**config)
