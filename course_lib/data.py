"""Datasets of notebook 04: synthetic multi-scale shapes and Oxford-IIIT Pet.

Both datasets return the same thing, so the trainer and the metrics never care which
one they get::

    image: float32 tensor (3, size, size) in [0, 1]
    mask:  int64 tensor (size, size) of class ids; ``ignore_index`` (255) marks pixels
           that the loss and the metrics must skip

:class:`ShapesDataset` ships with the package (no download) and is built for studying
scale: object sizes span more than 8× in every image, so small-versus-large comparisons
(:func:`size_bins`) are meaningful. :class:`OxfordPets` is the real-image counterpart.
:class:`Augment` jitters training batches (flips, scale, colour).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

IGNORE_INDEX = 255
"""Mask value of pixels without a label (the Oxford-IIIT Pet border); CrossEntropyLoss skips it."""

SHAPE_CLASS_NAMES = ("background", "circle", "square", "triangle", "ring")

MIN_OBJECT_SIZE = 6
"""Smallest object size in pixels; the largest is ``size // 2`` (64 px at size 128: a 10× span)."""

SMALL_OBJECT_MAX = 16
"""Objects of size <= 16 px are *small*: at stride 32 (C5) they cover at most half a cell."""

MEDIUM_OBJECT_MAX = 32
"""Objects of size in (16, 32] px are *medium*; larger ones are *large*."""

SIZE_BIN_NAMES = ("background", "small", "medium", "large")

OWNERSHIP_MARGIN = 4
"""Background pixels up to this many pixels (chessboard distance) from an object belong to its
size bin in :func:`size_bin_regions`: one stride-4 cell, enough for a boundary's bleed."""

VAL_SEED_OFFSET = 1_000_003
""":func:`make_loaders` builds the validation set with ``seed + VAL_SEED_OFFSET``."""

_OBJECTS_PER_IMAGE = (3, 8)  # inclusive
_MIN_CONTRAST = 0.3  # RGB distance of an object's colour from the background's colours
_NOISE_STD = 0.02


@dataclass(frozen=True)
class ShapeObject:
    """One object of a :class:`ShapesDataset` image, as drawn.

    Attributes:
        class_id: index into ``class_names`` (1 = circle, ...).
        center: ``(y, x)`` in pixels.
        diameter: the object's size in pixels (see :class:`ShapesDataset`), an int.
        angle: rotation in radians (squares and triangles).
        color: RGB in [0, 1].
    """

    class_id: int
    center: tuple[float, float]
    diameter: int
    angle: float
    color: tuple[float, float, float]


# Regular polygons are drawn as the intersection of half-planes: x·n_k <= apothem.
# Factors make every filled shape's area that of a disc of the object's diameter d.
_SQUARE_APOTHEM = math.sqrt(math.pi) / 4  # side d·√π/2
_TRIANGLE_APOTHEM = math.sqrt(math.pi / math.sqrt(3)) / (2 * math.sqrt(3))  # side ≈ 1.35 d
_RING_INNER = 0.5  # inner radius / outer radius


class ShapesDataset(Dataset):
    """Synthetic multi-scale segmentation: circles, squares, triangles and rings on textured backgrounds.

    Every image holds 3 to 8 objects whose sizes are drawn log-uniformly between
    :data:`MIN_OBJECT_SIZE` (6 px) and ``size // 2`` px, so there are as many objects
    from 6 to 12 px as from 32 to 64 px. Objects are drawn largest first and later ones
    win in the mask, so small objects sit on top and stay visible; a ring's hole shows
    whatever lies below it. Squares and triangles are randomly rotated.

    Colour never gives the class: every object and both colours of the background are
    drawn from the same distribution (uniform RGB), independently of the class. An
    object's colour is kept at least 0.3 (RGB distance) from the background's two
    colours so it stays visible. Backgrounds blend those two colours through smooth
    noise, a gradient or stripes; objects get a gentle shading ramp and every pixel
    a little noise.

    The *size* (``diameter``) of an object is that of the disc with the same area as
    the object's outline (a ring counts with its hole filled): a circle's diameter, a
    square's side / 0.89, a triangle's side / 1.35. It is an integer number of pixels.

    Item ``i`` is a pure function of ``(seed, i, size)`` — it is generated on the fly
    from ``np.random.default_rng([seed, i])`` — so access order, workers and caching
    never change the data. Nothing is cached; :meth:`materialize` stacks everything
    in memory when a training loop wants that.

    Args:
        n: number of images.
        size: side of the square images (>= 2 * MIN_OBJECT_SIZE).
        seed: a non-negative int; different seeds give independent datasets.

    Shape:
        ``ds[i]`` → ``(image (3, size, size) float32 in [0, 1], mask (size, size) int64)``;
        :meth:`item_with_scales` adds ``scale_map (size, size) int64``.
    """

    num_classes: int = len(SHAPE_CLASS_NAMES)
    class_names: tuple[str, ...] = SHAPE_CLASS_NAMES
    # No pixel carries it; present so training code can treat both datasets alike.
    ignore_index: int = IGNORE_INDEX

    def __init__(self, n: int, size: int = 128, seed: int = 0) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if size < 2 * MIN_OBJECT_SIZE:
            raise ValueError(f"size must be >= {2 * MIN_OBJECT_SIZE}, got {size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask, _ = self.item_with_scales(i)
        return image, mask

    def item_with_scales(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(image, mask, scale_map)``: ``scale_map[y, x]`` is the size in pixels of the
        object that pixel belongs to, 0 on background. Feed it to :func:`size_bins`."""
        rng = self._rng(i)
        background, objects = _sample_scene(rng, self.size)
        image, mask, scale = _render(rng, self.size, background, objects)
        return torch.from_numpy(image), torch.from_numpy(mask), torch.from_numpy(scale)

    def objects(self, i: int) -> list[ShapeObject]:
        """The objects of item ``i`` in drawing order (largest first); cheap, renders nothing."""
        return _sample_scene(self._rng(i), self.size)[1]

    def materialize(self, with_scales: bool = False) -> tuple[Tensor, ...]:
        """All items stacked: ``images (n, 3, size, size)``, ``masks (n, size, size)``
        (and ``scale_maps (n, size, size)`` if asked). 1,000 items at size 128 take
        about 200 MB of images plus 130 MB per int64 map."""
        s = self.size
        # Preallocated, so memory never holds the items twice (as torch.stack of a list would).
        images = torch.empty(self.n, 3, s, s, dtype=torch.float32)
        masks = torch.empty(self.n, s, s, dtype=torch.int64)
        scales = torch.empty(self.n, s, s, dtype=torch.int64)
        for i in range(self.n):
            images[i], masks[i], scales[i] = self.item_with_scales(i)
        return (images, masks, scales) if with_scales else (images, masks)

    def _rng(self, i: int) -> np.random.Generator:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} items")
        return np.random.default_rng([self.seed, i % self.n])

    def __repr__(self) -> str:
        return f"ShapesDataset(n={self.n}, size={self.size}, seed={self.seed})"


def size_bins(scale_map: Tensor) -> Tensor:
    """Bin a ``scale_map`` into 0 = background, 1 = small, 2 = medium, 3 = large (:data:`SIZE_BIN_NAMES`).

    Small is ``<= SMALL_OBJECT_MAX`` (16 px), medium ``<= MEDIUM_OBJECT_MAX`` (32 px).
    Any shape works; the output has the input's shape and dtype int64.
    """
    bins = torch.zeros_like(scale_map, dtype=torch.int64)
    bins[scale_map > 0] = 1
    bins[scale_map > SMALL_OBJECT_MAX] = 2
    bins[scale_map > MEDIUM_OBJECT_MAX] = 3
    return bins


def size_bin_regions(scale_map: Tensor, margin: int = OWNERSHIP_MARGIN) -> Tensor:
    """The pixels each size bin owns: its objects' pixels, and the background within ``margin``
    pixels of them (the ring where a prediction of the object bleeds out).

    A background pixel near objects of several bins goes to the nearest one (ties to the smaller
    bin), so the boundary bleed of a large object is never charged to a small one; background
    farther than ``margin`` from every object gets 0 (it belongs to no bin).

    Args:
        scale_map: ``(..., H, W)`` object diameters, 0 on the background (``ShapesDataset``).
        margin: width of the ring in pixels, >= 0.

    Returns:
        int64 tensor of the input's shape: 1, 2, 3 = small, medium, large, 0 = no bin.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    bins = size_bins(scale_map)
    shape = bins.shape
    regions = bins.reshape(-1, 1, *shape[-2:])
    unowned = len(SIZE_BIN_NAMES)  # larger than every bin
    for _ in range(margin):  # grow every bin by one pixel (3×3 neighbourhood) per step
        candidates = torch.where(regions > 0, regions, unowned).float()
        nearest = -torch.nn.functional.max_pool2d(-candidates, 3, stride=1, padding=1)  # min over 3×3
        regions = torch.where((regions == 0) & (nearest < unowned), nearest.long(), regions)
    return regions.reshape(shape)


def make_loaders(
    train_size: int,
    val_size: int,
    batch_size: int,
    size: int = 128,
    seed: int = 0,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, val_loader)`` over two independent :class:`ShapesDataset`.

    The validation set uses ``seed + VAL_SEED_OFFSET`` so it never repeats a training
    image. Training batches are shuffled with a generator seeded by ``seed`` (same
    seed, same batches); validation is not shuffled.
    """
    train_set = ShapesDataset(train_size, size=size, seed=seed)
    val_set = ShapesDataset(val_size, size=size, seed=seed + VAL_SEED_OFFSET)
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, val_loader


# --------------------------------------------------------------------------- augmentation


class Augment:
    """Random flips, scale jitter and colour jitter of a training batch, drawn per image.

    Called as ``images, masks = augment(images, masks)`` on a batch ``(N, 3, H, W)`` /
    ``(N, H, W)``, on whatever device it lives (:func:`course_lib.train.fit` applies it after
    moving the batch, so on a GPU it costs next to nothing). Every image gets its own draw
    (torchvision's ``transforms.v2`` would draw once per call, i.e. per batch). The geometry
    is applied to image and mask alike (the mask with nearest neighbour, so no new class ids);
    the colour only to the image.

    Args:
        hflip, vflip: probability of a horizontal / vertical flip.
        scale: ``(low, high)`` range of the zoom factor, drawn log-uniformly; > 1 zooms in
            (objects grow), < 1 zooms out (the border is filled by reflection, in image and
            mask alike). ``None`` or ``(1, 1)``: no scale jitter.
        color: strength ``c`` of the colour jitter: brightness, contrast and saturation
            factors drawn from ``[1 - c, 1 + c]``, as in ``torchvision.transforms.ColorJitter``.
        seed: seeds the draws (same seed, same augmentations, on any device).
    """

    def __init__(self, hflip: float = 0.5, vflip: float = 0.0, scale: tuple[float, float] | None = (0.8, 1.25),
                 color: float = 0.2, seed: int = 0) -> None:
        if not (0 <= hflip <= 1 and 0 <= vflip <= 1):
            raise ValueError(f"flip probabilities must be in [0, 1], got hflip={hflip}, vflip={vflip}")
        if scale is not None and not (0 < scale[0] <= scale[1]):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        if not 0 <= color < 1:
            raise ValueError(f"color must be in [0, 1), got {color}")
        self.hflip, self.vflip, self.scale, self.color = float(hflip), float(vflip), scale, float(color)
        self.generator = torch.Generator().manual_seed(seed)

    def __repr__(self) -> str:
        return f"Augment(hflip={self.hflip}, vflip={self.vflip}, scale={self.scale}, color={self.color})"

    def _uniform(self, n: int, low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def __call__(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        n, device = images.shape[0], images.device
        # Geometry as one affine map per image: flips are a sign, the zoom a factor.
        sx = torch.where(torch.rand(n, generator=self.generator) < self.hflip, -1.0, 1.0)
        sy = torch.where(torch.rand(n, generator=self.generator) < self.vflip, -1.0, 1.0)
        zoom = torch.ones(n)
        if self.scale is not None and tuple(self.scale) != (1, 1):
            zoom = torch.exp(self._uniform(n, math.log(self.scale[0]), math.log(self.scale[1])))
        if self.hflip or self.vflip or not torch.all(zoom == 1):
            theta = torch.zeros(n, 2, 3)
            theta[:, 0, 0], theta[:, 1, 1] = sx / zoom, sy / zoom
            grid = F.affine_grid(theta.to(device, images.dtype), list(images.shape), align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            masks = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="reflection",
                                  align_corners=False)[:, 0].round().to(masks.dtype)
        if self.color:
            brightness, contrast, saturation = (self._uniform(n, 1 - self.color, 1 + self.color).to(device, images.dtype)
                                                .view(n, 1, 1, 1) for _ in range(3))
            images = images * brightness
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = (images - mean) * contrast + mean
            grey = (images * torch.tensor([0.299, 0.587, 0.114], device=device, dtype=images.dtype).view(1, 3, 1, 1)
                    ).sum(dim=1, keepdim=True)
            images = ((images - grey) * saturation + grey).clamp(0, 1)
        return images, masks


# --------------------------------------------------------------------------- generation


def _sample_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[ShapeObject]]:
    """The background's two colours ``(2, 3)`` and the objects, in drawing order.

    Drawn first from ``rng``, so :meth:`ShapesDataset.objects` is cheap (nothing rendered).
    """
    # Two background colours at least _MIN_CONTRAST apart, or the texture would be invisible.
    candidates = rng.uniform(0, 1, size=(17, 3))
    far = np.flatnonzero(np.linalg.norm(candidates[1:] - candidates[0], axis=1) >= _MIN_CONTRAST)
    background = candidates[[0, 1 + (far[0] if far.size else 0)]]
    n = int(rng.integers(_OBJECTS_PER_IMAGE[0], _OBJECTS_PER_IMAGE[1] + 1))
    class_ids = rng.integers(1, len(SHAPE_CLASS_NAMES), size=n)
    # Log-uniform sizes: as many objects per octave, from a few pixels to half the image.
    log_d = rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(size // 2), size=n)
    diameters = np.clip(np.rint(np.exp(log_d)), MIN_OBJECT_SIZE, size // 2).astype(int)
    angles = rng.uniform(0, 2 * math.pi, size=n)
    unit = rng.uniform(0, 1, size=(n, 2))
    # Each object takes the first of 16 colour candidates far enough from the background.
    colors = rng.uniform(0, 1, size=(n, 16, 3))
    objects = []
    for k in np.argsort(-diameters, kind="stable"):  # largest first: small objects stay on top
        d, c = int(diameters[k]), int(class_ids[k])
        r = _circumradius(c, d)
        # Keep the whole shape inside the image so its size is its visible size.
        lo, hi = r, size - 1 - r
        center = (float(lo + unit[k, 0] * (hi - lo)), float(lo + unit[k, 1] * (hi - lo)))
        color = _contrasting_color(colors[k], *background)
        objects.append(ShapeObject(c, center, d, float(angles[k]), tuple(float(v) for v in color)))
    return background, objects


def _circumradius(class_id: int, d: float) -> float:
    name = SHAPE_CLASS_NAMES[class_id]
    if name == "square":
        return _SQUARE_APOTHEM * d * math.sqrt(2)
    if name == "triangle":
        return _TRIANGLE_APOTHEM * d * 2
    return d / 2


def _render(
    rng: np.random.Generator, size: int, background: np.ndarray, objects: list[ShapeObject]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image (3, S, S) float32``, ``mask (S, S) int64``, ``scale (S, S) int64``."""
    c1, c2 = background.astype(np.float32)[:, :, None, None]
    t = _background_pattern(rng, size)
    image = c1 + (c2 - c1) * t[None]  # float32 throughout: float64 would double the cost
    mask = np.zeros((size, size), dtype=np.int64)
    scale = np.zeros((size, size), dtype=np.int64)

    shading = rng.uniform(-0.08, 0.08, size=(len(objects), 2))
    for k, obj in enumerate(objects):
        color = np.asarray(obj.color, dtype=np.float32)
        r = _circumradius(obj.class_id, obj.diameter)
        cy, cx = obj.center
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, size)
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, size)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        inside = _inside(obj, dy, dx)
        # A linear shading ramp across the object: flat colour would be too easy a cue.
        ramp = (shading[k, 0] * dy + shading[k, 1] * dx) / max(r, 1.0)
        patch = color[:, None, None] + ramp[None].astype(np.float32)
        image[:, y0:y1, x0:x1] = np.where(inside[None], patch, image[:, y0:y1, x0:x1])
        mask[y0:y1, x0:x1][inside] = obj.class_id
        scale[y0:y1, x0:x1][inside] = obj.diameter

    # Grey (per-pixel, not per-channel) noise: a third of the cost of RGB noise.
    image += _NOISE_STD * rng.standard_normal(size=(size, size), dtype=np.float32)
    np.clip(image, 0.0, 1.0, out=image)
    return image, mask, scale


def _inside(obj: ShapeObject, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels (offsets ``dy``, ``dx`` from the centre) inside ``obj``."""
    name = SHAPE_CLASS_NAMES[obj.class_id]
    d = obj.diameter
    if name in ("circle", "ring"):
        r2 = dy * dy + dx * dx
        inside = r2 <= (d / 2) ** 2
        if name == "ring":
            inside &= r2 >= (_RING_INNER * d / 2) ** 2
        return inside
    sides, apothem = (4, _SQUARE_APOTHEM * d) if name == "square" else (3, _TRIANGLE_APOTHEM * d)
    normals = obj.angle + 2 * math.pi * np.arange(sides) / sides
    proj = dx[..., None] * np.cos(normals).astype(np.float32) + dy[..., None] * np.sin(normals).astype(np.float32)
    return proj.max(axis=-1) <= apothem


def _contrasting_color(candidates: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """First of ``candidates (K, 3)`` at least ``_MIN_CONTRAST`` from the segment c1–c2, else the farthest."""
    seg = c2 - c1
    s = np.clip(((candidates - c1) @ seg) / max(float(seg @ seg), 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(candidates - (c1 + s[:, None] * seg), axis=1)
    ok = np.flatnonzero(dist >= _MIN_CONTRAST)
    return candidates[ok[0] if ok.size else int(np.argmax(dist))]


def _background_pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A blend weight ``t (S, S)`` in [0, 1]: smooth noise, a gradient or stripes, plus smooth noise."""
    kind = int(rng.integers(3))
    angle = rng.uniform(0, 2 * math.pi)
    coords = np.arange(size, dtype=np.float32)
    along = coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle)  # (S, S)
    noise = _smooth_noise(rng, size, cells=int(rng.integers(2, 7)))
    if kind == 0:
        pattern = _smooth_noise(rng, size, cells=int(rng.integers(3, 10)))
    elif kind == 1:
        pattern = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    else:
        period = rng.uniform(6, size / 3)
        pattern = 0.5 + 0.5 * np.sin(2 * math.pi * along / period + rng.uniform(0, 2 * math.pi))
    weight = rng.uniform(0.2, 0.5)
    t = (1 - weight) * pattern + weight * noise
    # Stretched to [0, 1] so the background always spans both of its colours.
    return ((t - t.min()) / max(float(t.max() - t.min()), 1e-6)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a random ``(cells+1)²`` grid upsampled with smoothstep weights.

    The upsampling is two small matrix products ``My @ grid @ Mx.T``; no per-pixel loop.
    """
    grid = rng.uniform(0, 1, size=(cells + 1, cells + 1))
    pos = np.linspace(0, cells, size, dtype=np.float64)
    lo = np.minimum(pos.astype(int), cells - 1)
    w = pos - lo
    w = w * w * (3 - 2 * w)  # smoothstep: no visible creases at the grid lines
    interp = np.zeros((size, cells + 1))
    rows = np.arange(size)
    interp[rows, lo] = 1 - w
    interp[rows, lo + 1] = w
    return (interp @ grid @ interp.T).astype(np.float32)


# --------------------------------------------------------------------------- Oxford-IIIT Pet

PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
"""Home page of Oxford-IIIT Pet; torchvision downloads ``data/images.tar.gz`` (~790 MB) and
``data/annotations.tar.gz`` (~19 MB) from there."""

_TRIMAP_TO_CLASS = np.full(256, IGNORE_INDEX, dtype=np.int64)
_TRIMAP_TO_CLASS[1], _TRIMAP_TO_CLASS[2], _TRIMAP_TO_CLASS[3] = 1, 0, IGNORE_INDEX  # pet, background, border
# Any other value (there is none in the release) is ignored rather than mislabelled.


class OxfordPets(Dataset):
    """Oxford-IIIT Pet (Parkhi et al., 2012) as foreground/background segmentation.

    Wraps :class:`torchvision.datasets.OxfordIIITPet` with ``target_types="segmentation"``.
    Trimap values map to classes: 1 (pet) → 1, 2 (background) → 0, 3 (border /
    unclassified) → ``ignore_index`` (:data:`IGNORE_INDEX`, 255), which
    :class:`~course_lib.losses.CombinedLoss` and the metrics skip when given it.

    Every image is resized to ``size × size``, stretching it (the images are 4:3 or 3:4 at
    most, mostly, so the stretch stays below about 1.5×): a centre crop would keep the
    aspect but cut off pets that are not centred, and their border pixels with them. The
    image is resized bilinearly with antialiasing (PIL widens the filter when it shrinks an
    image), the mask with nearest neighbour (interpolating class ids would invent classes).

    The data are never downloaded behind your back: with ``download=False`` (the default)
    missing files raise :class:`FileNotFoundError` saying where to put them. The course
    machines run offline; on a machine that is online ``download=True`` fetches the two
    archives (about 800 MB) into ``root/oxford-iiit-pet`` and extracts them there.

    Args:
        root: folder holding (or to receive) ``oxford-iiit-pet/images/*.jpg``,
            ``oxford-iiit-pet/annotations/trimaps/*.png`` and
            ``oxford-iiit-pet/annotations/{trainval,test}.txt``.
        split: ``"trainval"`` (3,680 images) or ``"test"`` (3,669).
        size: side of the output images and masks, >= 1.
        download: fetch and extract the archives from the VGG site if files are missing.
        limit: keep only the first ``limit`` images of the split (``None``: all), for quick runs.

    Shape: ``ds[i]`` → ``(image (3, size, size) float32 in [0, 1], mask (size, size) int64)``.

    Raises:
        FileNotFoundError: the files are missing and ``download`` is False.
        RuntimeError: ``download`` is True and the download failed (e.g. no internet).
    """

    num_classes: int = 2
    class_names: tuple[str, ...] = ("background", "pet")
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "trainval",
        size: int = 128,
        download: bool = False,
        limit: int | None = None,
    ) -> None:
        if split not in ("trainval", "test"):
            raise ValueError(f"split must be 'trainval' or 'test', got {split!r}")
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if limit is not None and int(limit) < 0:
            raise ValueError(f"limit must be None or >= 0, got {limit}")
        from torchvision.datasets import OxfordIIITPet  # torchvision is slow to import

        self.root, self.split, self.size = Path(root), split, int(size)
        base = self.root / "oxford-iiit-pet"
        if not self.available(root, split):
            if not download:
                missing = ", ".join(str(p) for p in _pets_required_paths(base, split) if not p.exists())
                raise FileNotFoundError(
                    f"Oxford-IIIT Pet not found under {base} (missing {missing}). {_pets_how_to_get(base)} "
                    f"Or pass download=True on a machine that is online (about 800 MB)."
                )
            try:
                OxfordIIITPet(root, split=split, target_types="segmentation", download=True)
            except OSError as err:  # urllib's URLError is an OSError; so is a full disk
                raise RuntimeError(
                    f"could not download Oxford-IIIT Pet ({err}). The course machines run offline. "
                    f"{_pets_how_to_get(base)}"
                ) from err
            if not self.available(root, split):
                raise RuntimeError(f"the Oxford-IIIT Pet download did not produce the expected files. "
                                   f"{_pets_how_to_get(base)}")
        self._pets = OxfordIIITPet(root, split=split, target_types="segmentation", download=False)
        total = len(self._pets)
        self.n = total if limit is None else min(int(limit), total)

    @classmethod
    def available(cls, root: str | os.PathLike, split: str | None = None) -> bool:
        """Whether the files of ``split`` (``None``: both splits) are under ``root/oxford-iiit-pet``.

        Checks the folder layout and the split lists, not every image: a partially extracted
        ``images/`` folder shows as a missing file when an item is read."""
        splits = ("trainval", "test") if split is None else (split,)
        base = Path(root) / "oxford-iiit-pet"
        return all(p.exists() for s in splits for p in _pets_required_paths(base, s))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n} items")
        image, trimap = self._pets[i % self.n]
        image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        trimap = trimap.resize((self.size, self.size), Image.NEAREST)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        mask = torch.from_numpy(_TRIMAP_TO_CLASS[np.asarray(trimap, dtype=np.uint8)])
        return pixels, mask

    def __repr__(self) -> str:
        return f"OxfordPets(root={str(self.root)!r}, split={self.split!r}, size={self.size}, n={len(self)})"


def _pets_required_paths(base: Path, split: str) -> list[Path]:
    return [base / "images", base / "annotations" / "trimaps", base / "annotations" / f"{split}.txt"]


def _pets_how_to_get(base: Path) -> str:
    return (
        f"On a machine that is online, download {PETS_URL}data/images.tar.gz and "
        f"{PETS_URL}data/annotations.tar.gz, extract both into {base} (giving {base}/images/*.jpg and "
        f"{base}/annotations/trimaps/*.png, trainval.txt, test.txt) and copy that folder here."
    )
