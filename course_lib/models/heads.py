"""The head: Panoptic-FPN's semantic segmentation branch (notebook 02)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ConvGNReLU(nn.Sequential):
    """3×3 conv (no bias) → GroupNorm(32) → ReLU; keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 32) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(min(groups, out_channels), out_channels),
            nn.ReLU(inplace=True),
        )


class SemanticFPNHead(nn.Module):
    """Per-pixel classifier over a feature pyramid (Kirillov et al., 2019; detectron2 ``SemSegFPNHead``).

    Each level ``p_k`` (stride ``s_k``) goes through ``log2(s_k / 4)`` stages of
    ConvGNReLU + 2× bilinear upsampling (one ConvGNReLU without upsampling for stride 4),
    which brings every level to stride 4; the maps are summed and a 1×1 conv gives logits.

    Upsampling targets the next finer level's exact size (the size of ``p2`` at the end),
    so odd input sizes line up.

    Args:
        in_channels: channels of every pyramid level (the FPN's ``out_channels``).
        num_classes: output classes.
        strides: stride of each input level, in the order the pyramid dict gives them,
            e.g. ``[4, 8, 16, 32]`` for ``p2..p5`` or ``[32]`` for a single C5 map.
        head_channels: channels inside the head (128 in Panoptic FPN).

    Shape: ``{"p2": (N, in_channels, H/4, W/4), ...}`` → logits ``(N, num_classes, H/4, W/4)``.
    The output size is the stride-4 size: that of ``p2`` if present, else ``output_size``.
    """

    def __init__(self, in_channels: int, num_classes: int, strides: list[int], head_channels: int = 128) -> None:
        super().__init__()
        if any(s < 4 or s & (s - 1) for s in strides) or sorted(set(strides)) != list(strides):
            raise ValueError(f"strides must be increasing powers of two >= 4, got {strides}")
        self.strides = list(strides)
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            n_stages = max(1, (stride // 4).bit_length() - 1)
            stages = [ConvGNReLU(in_channels if k == 0 else head_channels, head_channels) for k in range(n_stages)]
            self.scale_heads.append(nn.ModuleList(stages))
        self.classifier = nn.Conv2d(head_channels, num_classes, kernel_size=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Logits of std ~1 at the start: with He init on the classifier too they have std ~5-8, the
        # softmax is confidently wrong and the first CE is 3-10 instead of about log(num_classes);
        # much smaller (std 0.01, as mmsegmentation) stalls short runs on "all background"
        # (benchmarks/reference_study.py).
        nn.init.normal_(self.classifier.weight, std=0.1)

    def forward(self, pyramid: dict[str, Tensor], output_size: tuple[int, int] | None = None) -> Tensor:
        maps = list(pyramid.values())
        if len(maps) != len(self.scale_heads):
            raise ValueError(f"expected {len(self.scale_heads)} pyramid levels, got {list(pyramid)}")
        # Target size of each stride 4, 8, 16, ...: taken from the pyramid where a level has it.
        sizes = {s: m.shape[-2:] for s, m in zip(self.strides, maps)}
        if 4 not in sizes:
            if output_size is None:
                raise ValueError("output_size (the stride-4 size) is needed when the pyramid has no stride-4 level")
            sizes[4] = tuple(output_size)

        # Coarsest level first: its upsampled map is saved by no autograd node, so the sum
        # can accumulate into it in place (one stride-4 map less at peak memory).
        total: Tensor | None = None
        for stride, x, stages in reversed(list(zip(self.strides, maps, self.scale_heads))):
            for stage in stages:
                x = stage(x)
                if stride > 4:
                    stride //= 2
                    size = sizes.get(stride) or _half_up(sizes[4], stride // 4)
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            total = x if total is None else total.add_(x)
        return self.classifier(total)


def _half_up(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """The size a stride-4 map has after ``log2(factor)`` stride-2 convs (ceil each time)."""
    h, w = size
    while factor > 1:
        h, w, factor = (h + 1) // 2, (w + 1) // 2, factor // 2
    return h, w
