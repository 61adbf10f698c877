"""Image pyramids and the four pyramid designs of the FPN paper (notebook 01).

Building blocks, after Burt & Adelson (1983):

- :func:`pyramid_down`: blur with the 5×5 binomial kernel, keep every other pixel.
- :func:`pyramid_up`: the inverse-direction step (zero insertion + 4× the same blur).
- :func:`gaussian_pyramid`, :func:`laplacian_pyramid`, :func:`reconstruct_from_laplacian`.

Stride arithmetic of a ResNet (:func:`conv_output_size`, :func:`feature_map_sizes`) and
the cost comparison of FPN's Figure 1 (:func:`pyramid_designs`, :func:`compare_pyramid_designs`,
:func:`measure`, :func:`count_flops`), and a real photograph to run them on (:func:`sample_image`).

All image functions take a batch ``(N, C, H, W)`` or a single image ``(C, H, W)`` and
return tensors of the same rank. Integer images are converted to float32; floating
images keep their dtype.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.device import resolve_device
from course_lib.widgets import progress_bar

BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)
"""The 1-D binomial filter; ``outer(k, k) / 256`` is the 5×5 blur of :func:`pyramid_down`."""


# --------------------------------------------------------------------------- single steps


def pyramid_down(img: Tensor) -> Tensor:
    """One Gaussian pyramid step: 5×5 binomial blur, then keep every other row and column.

    The blur is separable (``[1, 4, 6, 4, 1] / 16`` along W, then along H), applied to each
    channel alone (depthwise ``F.conv2d(groups=C)``) with reflect padding (the border
    pixel is not repeated, as OpenCV's default; sides under 3 pixels, too small to
    reflect, replicate instead). Subsampling keeps pixels 0, 2, 4, ..., so a side of
    ``n`` becomes ``ceil(n / 2)``.

    Shape: ``(N, C, H, W)`` → ``(N, C, ⌈H/2⌉, ⌈W/2⌉)`` (or the same without ``N``).
    """
    x, unbatched = _as_batch(img)
    kernel = _binomial(x)
    channels = x.shape[1]
    # Blurring then subsampling = a stride-2 convolution: no work is spent on dropped pixels.
    x = F.pad(x, (2, 2, 0, 0), mode=_pad_mode(x.shape[-1]))
    x = F.conv2d(x, kernel.view(1, 1, 1, 5).expand(channels, 1, 1, 5), stride=(1, 2), groups=channels)
    x = F.pad(x, (0, 0, 2, 2), mode=_pad_mode(x.shape[-2]))
    x = F.conv2d(x, kernel.view(1, 1, 5, 1).expand(channels, 1, 5, 1), stride=(2, 1), groups=channels)
    return x.squeeze(0) if unbatched else x


def pyramid_up(img: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """One expand step: upsample by 2 to exactly ``size = (H, W)`` (odd sizes work).

    Equivalent to inserting zeros between the pixels and blurring with 4× the binomial
    kernel of :func:`pyramid_down`, computed without the zeros (polyphase): along each
    axis, even outputs are ``(x[i-1] + 6 x[i] + x[i+1]) / 8`` and odd outputs
    ``(x[i] + x[i+1]) / 2``. The coarse image is padded by replicating its border, so a
    constant image stays constant and any size (even 1×1) works.

    Shape: ``(N, C, h, w)`` → ``(N, C, H, W)`` with ``h = ⌈H/2⌉``, ``w = ⌈W/2⌉``.
    """
    x, unbatched = _as_batch(img)
    height, width = int(size[0]), int(size[1])
    if (x.shape[-2], x.shape[-1]) != ((height + 1) // 2, (width + 1) // 2):
        raise ValueError(f"cannot expand {tuple(x.shape[-2:])} to {(height, width)}: expected ⌈size/2⌉")
    x = _expand_last_axis(x, width)
    x = _expand_last_axis(x.transpose(-1, -2), height).transpose(-1, -2)
    return x.squeeze(0) if unbatched else x


def _expand_last_axis(x: Tensor, n: int) -> Tensor:
    """Upsample the last axis from ``m`` to ``n`` (``m = ⌈n/2⌉``)."""
    p = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)  # replicate padding by one pixel
    even = (p[..., :-2] + 6 * p[..., 1:-1] + p[..., 2:]) / 8
    odd = (p[..., 1:-1] + p[..., 2:]) / 2
    return torch.stack([even, odd], dim=-1).flatten(-2)[..., :n]


def _binomial(x: Tensor) -> Tensor:
    k = torch.tensor(BINOMIAL_5, dtype=x.dtype, device=x.device)
    return k / k.sum()


def _pad_mode(side: int) -> str:
    return "reflect" if side >= 3 else "replicate"


def _as_batch(img: Tensor) -> tuple[Tensor, bool]:
    if img.dim() not in (3, 4):
        raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W), got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        img = img.float()
    return (img.unsqueeze(0), True) if img.dim() == 3 else (img, False)


# --------------------------------------------------------------------------- pyramids


def gaussian_pyramid(img: Tensor, levels: int) -> list[Tensor]:
    """``[G_0, ..., G_{levels-1}]``: ``G_0`` is ``img``, each next level is :func:`pyramid_down` of the last.

    Shape: level ``k`` is ``(N, C, H_k, W_k)`` with ``H_{k+1} = ⌈H_k / 2⌉``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    pyramid = [img if img.is_floating_point() else img.float()]
    for _ in range(levels - 1):
        pyramid.append(pyramid_down(pyramid[-1]))
    return pyramid


def laplacian_pyramid(img: Tensor, levels: int) -> list[Tensor]:
    """``[L_0, ..., L_{levels-1}]``: ``L_k = G_k − pyramid_up(G_{k+1})``; the last is ``G_{levels-1}``.

    Each ``L_k`` holds the detail lost between two Gaussian levels (a band-pass image),
    so :func:`reconstruct_from_laplacian` gets ``img`` back exactly. Shapes as in
    :func:`gaussian_pyramid`.
    """
    gaussians = gaussian_pyramid(img, levels)
    details = [fine - pyramid_up(coarse, fine.shape[-2:]) for fine, coarse in zip(gaussians, gaussians[1:], strict=False)]
    return [*details, gaussians[-1]]


def reconstruct_from_laplacian(pyramid: list[Tensor]) -> Tensor:
    """Invert :func:`laplacian_pyramid`: from the coarsest level, ``G_k = L_k + pyramid_up(G_{k+1})``.

    Exact up to float rounding (about 1e-6 for float32 images in [0, 1]).
    """
    if not pyramid:
        raise ValueError("empty pyramid")
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = detail + pyramid_up(image, detail.shape[-2:])
    return image


# --------------------------------------------------------------------------- stride arithmetic


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution or pooling along one axis (PyTorch's formula, floor mode).

    ``⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1``
    """
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(f"input of size {size} is too small for kernel {kernel} with padding {padding}")
    return out


def feature_map_sizes(h: int, w: int) -> dict[str, tuple[int, int]]:
    """``{"c1": (H1, W1), ..., "c5": (H5, W5)}`` for a torchvision ResNet on an ``h × w`` input.

    c1: stem conv (7×7, stride 2, padding 3); c2: max pool (3×3, stride 2, padding 1),
    layer1 keeps the size; c3, c4, c5: the first 3×3 conv of layer2, 3, 4 (stride 2,
    padding 1). Every stride-2 step maps ``n`` to ``⌈n/2⌉``, hence the strides 2..32.
    """
    sizes: dict[str, tuple[int, int]] = {}
    current = (h, w)
    steps = [("c1", 7, 2, 3), ("c2", 3, 2, 1), ("c3", 3, 2, 1), ("c4", 3, 2, 1), ("c5", 3, 2, 1)]
    for name, kernel, stride, padding in steps:
        current = tuple(conv_output_size(n, kernel, stride, padding) for n in current)
        sizes[name] = current
    return sizes


# --------------------------------------------------------------------------- FPN Figure 1


def featurized_image_pyramid(
    backbone: nn.Module, img: Tensor, levels: int, scales: Sequence[float] | None = None
) -> list[dict[str, Tensor]]:
    """FPN Figure 1(a): run ``backbone`` on every level of an image pyramid of ``img``.

    Without ``scales``, the pyramid is the Gaussian pyramid of ``levels`` levels (scales
    1, 1/2, 1/4, ...); with ``scales`` (e.g. ``(2, 1, 0.5)``, as detectors use to find
    small objects), it is :func:`image_scales` and ``levels`` is ignored.

    Returns one feature dict (``{"c2": ..., "c5": ...}`` for a
    :class:`course_lib.models.ResNetBackbone`) per image scale, in the order of the scales.
    """
    pyramid = gaussian_pyramid(img, levels) if scales is None else image_scales(img, scales)
    return [backbone(level) for level in pyramid]


def image_scales(img: Tensor, scales: Sequence[float]) -> list[Tensor]:
    """``img`` resized by each factor of ``scales`` (bilinear; antialiased when shrinking).

    A side of ``n`` becomes ``max(1, round(n * scale))``; a scale of 1 returns ``img`` itself.

    Shape: ``(N, C, H, W)`` or ``(C, H, W)`` → a list of the same rank.
    """
    x, unbatched = _as_batch(img)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {scales}")
    out = []
    for scale in scales:
        if scale == 1:
            level = x
        else:
            size = tuple(max(1, round(n * scale)) for n in x.shape[-2:])
            level = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        out.append(level.squeeze(0) if unbatched else level)
    return out


SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "camera")
"""Photographs that ship inside scikit-image (``skimage/data``): they load without a download."""


def sample_image(name: str = "astronaut", size: int | None = None) -> Tensor:
    """A real photograph bundled with scikit-image, as a float32 ``(3, H, W)`` tensor in [0, 1].

    Works offline: the :data:`SAMPLE_IMAGES` are files inside the installed package
    (``skimage.data.astronaut()`` etc.); grey images get three equal channels. With
    ``size``, the largest centred square is cut out and resized (antialiased bilinear) to
    ``size × size``; without it the image keeps its own shape.
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; choose one of {SAMPLE_IMAGES}")
    import skimage.data  # imported here: only this function needs scikit-image

    array = getattr(skimage.data, name)()
    img = torch.from_numpy(array.copy()).float().div_(255.0)
    img = img.unsqueeze(0).expand(3, -1, -1) if img.dim() == 2 else img.permute(2, 0, 1)[:3]
    img = img.contiguous()
    if size is not None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        height, width = img.shape[-2:]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = img[:, top:top + side, left:left + side].unsqueeze(0)
        img = F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=size < side)[0].clamp_(0.0, 1.0)
    return img


@dataclass(frozen=True)
class Measurement:
    """Cost of one call: median wall time in seconds and peak extra memory in MiB."""

    seconds: float
    peak_memory_mb: float


def measure(
    fn: Callable[..., Any],
    *args: Any,
    repeats: int = 3,
    warmup: int = 1,
    device: str | torch.device | None = None,
) -> Measurement:
    """Time ``fn(*args)`` and measure the memory it needs on top of what is already allocated.

    Time: the median of ``repeats`` calls after ``warmup`` calls (which absorb one-off
    costs such as kernel selection); CUDA and MPS are synchronised so queued work counts.

    Peak memory is the highest amount of memory the call holds at any moment above what
    was allocated when it started (its intermediates and outputs, not the weights or the
    inputs):

    - CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at the start.
    - CPU: one extra call under ``torch.profiler`` with ``profile_memory=True``, which
      records every allocation and free of PyTorch's CPU allocator; the running sum of
      those events, in time order, peaks at the answer. Memory that libraries take
      outside PyTorch's allocator is not seen, so compare designs with each other rather
      than with the process size. The profiled call is not timed (the profiler slows it).
    - Other devices: ``nan``.

    ``device`` (default: that of the first tensor in ``args``, else CPU) says where to
    synchronise and measure.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = _infer_device(args) if device is None else resolve_device(device)

    for _ in range(warmup):
        fn(*args)
        _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        _synchronize(device)
        times.append(time.perf_counter() - start)

    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        fn(*args)
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline
    elif device.type == "cpu":
        peak = _cpu_peak_bytes(fn, args)
    else:
        peak = float("nan")
    return Measurement(seconds=statistics.median(times), peak_memory_mb=peak / 2**20)


def _infer_device(args: tuple[Any, ...]) -> torch.device:
    for arg in args:
        if isinstance(arg, Tensor):
            return arg.device
    return torch.device("cpu")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _cpu_peak_bytes(fn: Callable[..., Any], args: tuple[Any, ...]) -> float:
    """Peak of the running sum of CPU allocator events during ``fn(*args)``; ``nan`` if unavailable."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn(*args)
        del result  # freed inside the window, like any other intermediate
    try:
        # The raw allocation records; prof.events() folds them into per-op totals,
        # which hides peaks inside an op (e.g. a convolution's scratch buffer).
        records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        records = [e for e in records if e.device_type() == torch.autograd.DeviceType.CPU]
    except AttributeError:  # a torch without this (semi-private) interface
        return float("nan")
    live = peak = 0
    for event in sorted(records, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return float(peak)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment.

    The profiler's C++ library (kineto) logs every start and stop to stderr, whatever
    the log level; in a notebook those lines would bury the results. Python-level errors
    still show: they propagate as exceptions and are printed after the descriptor is back.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (some embedded interpreters): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def count_flops(fn: Callable[..., Any], *args: Any) -> int:
    """Floating-point operations of ``fn(*args)`` (a multiply-add counts 2), by
    :class:`torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products
    only, which is where a CNN spends its time. Deterministic, unlike timings."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


class DesignCost(NamedTuple):
    """One row of :func:`compare_pyramid_designs`."""

    name: str
    seconds: float
    peak_memory_mb: float
    n_feature_maps: int


DESIGN_NAMES = (
    "(a) featurized image pyramid",
    "(b) single feature map",
    "(c) pyramidal feature hierarchy",
    "(d) feature pyramid network",
)


def pyramid_designs(
    backbone: nn.Module,
    fpn: nn.Module,
    levels: int = 3,
    scales: Sequence[float] | None = None,
) -> list[tuple[str, Callable[[Tensor], list[Tensor]], int]]:
    """The four designs of FPN's Figure 1 as functions ``image -> maps a head would predict from``.

    Returns ``[(name, fn, n_feature_maps), ...]`` in the order of :data:`DESIGN_NAMES`:

    (a) featurized image pyramid: ``backbone`` on every image scale (see
        :func:`featurized_image_pyramid` for ``levels`` and ``scales``), C5 of each;
    (b) single feature map: ``backbone`` once, ``[C5]``;
    (c) pyramidal feature hierarchy: ``backbone`` once, ``[C2, ..., C5]``;
    (d) feature pyramid network: ``backbone`` once, then ``fpn``: ``[P2, ..., P5]``.

    Designs (b) and (c) run the same computation; they differ in what they offer the head
    (only (c) has fine, but semantically weak, maps).
    """
    n_scales = levels if scales is None else len(scales)
    return [
        (DESIGN_NAMES[0], lambda x: [f["c5"] for f in featurized_image_pyramid(backbone, x, levels, scales)],
         n_scales),
        (DESIGN_NAMES[1], lambda x: [backbone(x)["c5"]], 1),
        (DESIGN_NAMES[2], lambda x: list(backbone(x).values()), 4),
        (DESIGN_NAMES[3], lambda x: list(fpn(backbone(x)).values()), 4),
    ]


@torch.no_grad()
def design_shapes(
    backbone: nn.Module,
    fpn: nn.Module,
    image_size: tuple[int, int] = (97, 131),
    scales: Sequence[float] = (2.0, 1.0, 0.5),
) -> dict[str, dict[str, list[tuple[int, ...]]]]:
    """The real tensor shapes behind the FPN paper's Figure 1, for one ``image_size`` input.

    Runs ``backbone`` (and ``fpn``) on a random ``(1, 3, H, W)`` image and returns, for each
    of :data:`DESIGN_NAMES`, ``{"images": [...], "computed": [...], "predicted": [...]}``:
    the input shapes (one per scale for (a)), every map the backbone computes (C2..C5 per
    scale, then P2..P5 for (d)) and the maps the head predicts from, each as ``(C, H, W)``.
    :func:`course_lib.viz.draw_pyramid_designs` draws them.
    """
    device = next(backbone.parameters()).device
    x = torch.rand(1, 3, *image_size, device=device)
    shape = lambda t: tuple(t.shape[1:])  # noqa: E731
    per_scale = [(level, backbone(level)) for level in image_scales(x, scales)]
    single = backbone(x)
    pyramid = fpn(single)
    return {
        DESIGN_NAMES[0]: {"images": [shape(img) for img, _ in per_scale],
                          "computed": [shape(t) for _, f in per_scale for t in f.values()],
                          "predicted": [shape(f["c5"]) for _, f in per_scale]},
        DESIGN_NAMES[1]: {"images": [shape(x)], "computed": [shape(t) for t in single.values()],
                          "predicted": [shape(single["c5"])]},
        DESIGN_NAMES[2]: {"images": [shape(x)], "computed": [shape(t) for t in single.values()],
                          "predicted": [shape(t) for t in single.values()]},
        DESIGN_NAMES[3]: {"images": [shape(x)], "computed": [shape(t) for t in single.values()]
                          + [shape(t) for t in pyramid.values()],
                          "predicted": [shape(t) for t in pyramid.values()]},
    }


def compare_pyramid_designs(
    backbone_name: str = "resnet18",
    image: Tensor | None = None,
    levels: int = 3,
    device: str | torch.device | None = None,
    repeats: int = 3,
    *,
    scales: Sequence[float] | None = None,
    fpn_channels: int = 256,
    training: bool = False,
    progress: bool = False,
) -> list[DesignCost]:
    """Time and memory of the four designs of FPN's Figure 1 (see :func:`pyramid_designs`).

    The networks are in eval mode (batch-norm statistics frozen). By default the designs
    run without gradients, as at inference. With ``training=True`` autograd records the
    forward pass as in a training step: every activation the backward pass will need
    stays in memory until the outputs are freed, so the peak memory is what a training
    step holds before its backward pass (the backward pass itself is not run, so the time
    is that of the recorded forward pass).

    ``n_feature_maps`` counts the maps a head would predict from: (a) one per image scale
    (its C5), (b) 1, (c) and (d) 4.

    Args:
        backbone_name: a :class:`course_lib.models.ResNetBackbone` name (random weights:
            the cost does not depend on them).
        image: ``(N, 3, H, W)`` or ``(3, H, W)``; default a random ``(1, 3, 256, 256)``.
        levels: image scales of design (a) when ``scales`` is not given (a Gaussian pyramid).
        device: ``"auto"``/``None`` (best available), ``"cpu"``, ``"cuda"``, ...
        repeats: timed calls per design (see :func:`measure`).
        scales: the image scales of design (a), e.g. ``(2, 1, 0.5)`` (see :func:`image_scales`).
        fpn_channels: ``d``, the channels of the FPN levels (256 in the paper).
        training: record the autograd graph (see above).
        progress: show a progress bar (a widget under JupyterLab), one step per design.
    """
    from course_lib.models import FPN, ResNetBackbone  # models import torchvision: slow

    device = resolve_device(device)
    if image is None:
        image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    image = (image.unsqueeze(0) if image.dim() == 3 else image).to(device)
    backbone = ResNetBackbone(backbone_name).to(device).eval()
    fpn = FPN(backbone.out_channels, fpn_channels).to(device).eval()
    designs = pyramid_designs(backbone, fpn, levels, scales)

    with torch.set_grad_enabled(training):
        # One call of each design first: the first calls of a process pay one-off costs
        # (allocator growth, kernel selection) that would otherwise all land on design (a).
        for _, fn, _ in designs:
            fn(image)
        rows = []
        for name, fn, n_maps in progress_bar(designs, desc="training" if training else "inference",
                                             disable=not progress):
            cost = measure(fn, image, repeats=repeats, device=device)
            rows.append(DesignCost(name, cost.seconds, cost.peak_memory_mb, n_maps))
    return rows
