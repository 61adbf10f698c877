"""The decoder: the Feature Pyramid Network top-down pathway (notebook 02)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """Feature Pyramid Network (Lin et al., CVPR 2017), as in ``torchvision.ops.FeaturePyramidNetwork``.

    For each level, finest first: a 1×1 *lateral* conv brings ``C_i`` to ``out_channels``;
    going top-down, the coarser merged map is upsampled (nearest) to the lateral's exact
    size and added; a 3×3 *output* conv then reduces the aliasing of the upsampling.
    The extra layers have biases and no normalisation or non-linearity, as in the paper.

    Args:
        in_channels: channels of ``c2, c3, ...`` (finest first), e.g. ``[64, 128, 256, 512]``.
        out_channels: ``d`` in the paper (256).

    Shape:
        - input: ``{"c2": (N, in_channels[0], H2, W2), ..., "c5": (N, in_channels[3], H5, W5)}``
        - output: ``{"p2": (N, out_channels, H2, W2), ..., "p5": (N, out_channels, H5, W5)}``

    Any spatial sizes work, odd ones included, because upsampling targets the lateral's
    size instead of a fixed factor of 2.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256) -> None:
        super().__init__()
        if not in_channels or any(c <= 0 for c in in_channels):
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in in_channels)
        self.output_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1) for _ in in_channels
        )
        for conv in [*self.lateral_convs, *self.output_convs]:  # torchvision's init
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        names = list(features)
        if len(names) != len(self.lateral_convs):
            raise ValueError(f"expected {len(self.lateral_convs)} feature maps, got {names}")
        maps = list(features.values())

        # Top-down: start from the coarsest level and walk to the finest.
        merged = self.lateral_convs[-1](maps[-1])
        outputs = [self.output_convs[-1](merged)]
        for i in range(len(maps) - 2, -1, -1):
            lateral = self.lateral_convs[i](maps[i])
            top_down = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral + top_down
            outputs.insert(0, self.output_convs[i](merged))
        return {_output_name(n): p for n, p in zip(names, outputs)}

    def top_down_steps(self, features: dict[str, Tensor]) -> list[dict[str, Tensor | str | None]]:
        """The forward pass one merge at a time, coarsest level first (for notebook 02's
        step-through): ``[{"level": "p5", "lateral": ..., "top_down": None, "merged": ...,
        "output": ...}, {"level": "p4", "lateral": ..., "top_down": ..., ...}, ...]``.
        ``top_down`` is the coarser merged map upsampled to the lateral's size; the
        ``output`` maps are exactly those of :meth:`forward`."""
        names, maps = list(features), list(features.values())
        steps, merged = [], None
        for i in range(len(maps) - 1, -1, -1):
            lateral = self.lateral_convs[i](maps[i])
            top_down = None if merged is None else F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral if top_down is None else lateral + top_down
            steps.append({"level": _output_name(names[i]), "lateral": lateral, "top_down": top_down,
                          "merged": merged, "output": self.output_convs[i](merged)})
        return steps


class SingleScaleNeck(nn.Module):
    """The baseline decoder of FPN's Figure 1(b): predict from the coarsest map alone.

    A 1×1 conv and a 3×3 conv on C5 give one map with the same channels as an FPN level,
    so the same head can sit on top.

    Shape: ``{"c2": ..., "c5": (N, in_channels, H5, W5)}`` → ``{"p5": (N, out_channels, H5, W5)}``.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, level: str = "c5") -> None:
        super().__init__()
        self.level = level
        self.lateral_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.output_conv = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        return {_output_name(self.level): self.output_conv(self.lateral_conv(features[self.level]))}


def _output_name(name: str) -> str:
    """``"c3"`` -> ``"p3"``; other names are kept with a ``p_`` prefix."""
    return "p" + name[1:] if name.startswith("c") else "p_" + name
