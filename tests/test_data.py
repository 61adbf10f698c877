"""course_lib.data: the synthetic shapes, the loaders and the Oxford-IIIT Pet wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.data import (
    IGNORE_INDEX,
    MIN_OBJECT_SIZE,
    SIZE_BIN_NAMES,
    SMALL_OBJECT_MAX,
    VAL_SEED_OFFSET,
    Augment,
    OxfordPets,
    ShapesDataset,
    make_loaders,
    size_bin_regions,
    size_bins,
)


@pytest.fixture(scope="module")
def shapes() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    ds = ShapesDataset(40, size=128, seed=0)
    return [ds.item_with_scales(i) for i in range(len(ds))]


def test_item_contract(shapes):
    ds = ShapesDataset(40, size=128, seed=0)
    image, mask = ds[0]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert mask.shape == (128, 128) and mask.dtype == torch.int64
    assert len(ds.class_names) == ds.num_classes >= 4 and ds.class_names[0] == "background"
    for image, mask, scale in shapes:
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert 0 <= mask.min() and mask.max() < ds.num_classes
        assert scale.shape == mask.shape and scale.dtype == torch.int64


def test_every_class_appears_and_images_hold_several_objects(shapes):
    ds = ShapesDataset(40, size=128, seed=0)
    seen = torch.zeros(ds.num_classes, dtype=torch.bool)
    for _, mask, _ in shapes:
        seen[mask.unique()] = True
    assert seen.all()
    counts = [len(ds.objects(i)) for i in range(len(ds))]
    assert min(counts) >= 3 and max(counts) > 3


def test_deterministic_and_independent_of_access_order():
    a, b = ShapesDataset(10, seed=3), ShapesDataset(10, seed=3)
    later_first = b[7]
    for x, y in zip(a[2], b[2], strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a[7], later_first, strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a[-1][0], a[9][0])
    assert not torch.equal(a[2][0], ShapesDataset(10, seed=4)[2][0])
    assert not torch.equal(a[2][0], a[3][0])
    with pytest.raises(IndexError):
        a[10]


def test_scale_map_marks_objects_with_their_sizes(shapes):
    all_sizes = []
    for _, mask, scale in shapes:
        assert torch.equal(scale > 0, mask > 0)  # background is exactly scale 0
        all_sizes.append(scale[scale > 0].unique())
    sizes = torch.cat(all_sizes)
    # Sizes span well over 8x, and small objects are common, not a rarity.
    assert sizes.min() <= MIN_OBJECT_SIZE + 2 and sizes.max() >= 56
    assert sizes.max() / sizes.min() >= 8
    with_small = sum(bool(((scale > 0) & (scale <= SMALL_OBJECT_MAX)).any()) for _, _, scale in shapes)
    assert with_small >= len(shapes) // 2


def test_objects_diameter_matches_drawn_area():
    # The size is the diameter of the disc of equal area: check it on unoccluded shapes.
    ds = ShapesDataset(30, size=128, seed=1)
    checked = 0
    for i in range(len(ds)):
        _, mask, scale = ds.item_with_scales(i)
        objects = ds.objects(i)
        keys = [(o.class_id, o.diameter) for o in objects]
        for obj in objects:
            if obj.diameter < 24 or ds.class_names[obj.class_id] == "ring":
                continue
            if keys.count((obj.class_id, obj.diameter)) > 1:  # two objects share this label
                continue
            area = int((scale == obj.diameter).logical_and(mask == obj.class_id).sum())
            expected = np.pi * obj.diameter**2 / 4
            if area < 0.9 * expected:  # partly hidden by a later object
                continue
            assert area == pytest.approx(expected, rel=0.1)
            checked += 1
    assert checked >= 10


def test_colour_does_not_give_the_class():
    ds = ShapesDataset(60, size=64, seed=2)
    per_class: dict[int, list[tuple[float, ...]]] = {}
    backgrounds = []
    for i in range(len(ds)):
        image, mask = ds[i]
        for obj in ds.objects(i):
            per_class.setdefault(obj.class_id, []).append(obj.color)
        backgrounds.append(image[:, mask == 0].mean(dim=1))
    for class_id, colors in per_class.items():
        spread = torch.tensor(colors).std(dim=0)
        assert (spread > 0.15).all(), (ds.class_names[class_id], spread)
    assert (torch.stack(backgrounds).std(dim=0) > 0.1).all()


def test_backgrounds_are_textured(shapes):
    # The pixel noise alone gives a std of 0.02; a flat background would stay there.
    stds = torch.stack([image[:, mask == 0].std(dim=1).max() for image, mask, _ in shapes])
    assert stds.min() > 0.035 and stds.median() > 0.08


def test_size_bins():
    scale = torch.tensor([[0, 6, 16], [17, 32, 33]])
    assert size_bins(scale).tolist() == [[0, 1, 1], [2, 2, 3]]
    assert SIZE_BIN_NAMES[0] == "background" and len(SIZE_BIN_NAMES) == 4


def test_size_bin_regions_give_the_background_to_the_nearest_object_within_the_margin():
    scale = torch.zeros(1, 20, 20, dtype=torch.int64)
    scale[0, 2:4, 2:4] = 8      # a small object
    scale[0, 2:12, 9:19] = 40   # a large one, 5 px to the right of it
    regions = size_bin_regions(scale, margin=3)
    assert regions.shape == scale.shape and regions.dtype == torch.int64
    assert (regions[scale > 0] == size_bins(scale)[scale > 0]).all()  # objects keep their own bin
    assert regions[0, 2, 5].item() == 1 and regions[0, 2, 6].item() == 1  # 2 and 3 px from the small object
    assert regions[0, 2, 7].item() == 3 and regions[0, 2, 8].item() == 3  # nearer the large one
    assert regions[0, 14, 9].item() == 3 and regions[0, 15, 9].item() == 0  # 3 and 4 px below the large one
    assert regions[0, 19, 0].item() == 0  # far from everything
    assert torch.equal(size_bin_regions(scale, margin=0), size_bins(scale))
    assert torch.equal(size_bin_regions(scale[0], margin=3), regions[0])  # any leading shape
    with pytest.raises(ValueError, match="margin"):
        size_bin_regions(scale, margin=-1)


def test_materialize_stacks_the_items():
    ds = ShapesDataset(5, size=32, seed=0)
    images, masks, scales = ds.materialize(with_scales=True)
    assert images.shape == (5, 3, 32, 32) and masks.shape == scales.shape == (5, 32, 32)
    image, mask, scale = ds.item_with_scales(4)
    assert torch.equal(images[4], image) and torch.equal(masks[4], mask) and torch.equal(scales[4], scale)
    assert len(ds.materialize()) == 2


def test_make_loaders_are_seeded_and_disjoint():
    train, val = make_loaders(12, 6, batch_size=4, size=32, seed=5)
    assert val.dataset.seed == 5 + VAL_SEED_OFFSET and train.dataset.seed == 5
    images, masks = next(iter(train))
    assert images.shape == (4, 3, 32, 32) and masks.shape == (4, 32, 32)
    again, _ = next(iter(make_loaders(12, 6, batch_size=4, size=32, seed=5)[0]))
    assert torch.equal(images, again)
    val_images, _ = next(iter(val))
    assert torch.equal(val_images[0], val.dataset[0][0])  # validation is not shuffled
    train_all = torch.stack([train.dataset[i][0] for i in range(12)])
    assert not any(torch.equal(v, t) for v in val_images for t in train_all)
    # Shuffled: over a few epochs the first batch is not always items 0..3.
    firsts = [next(iter(train))[0] for _ in range(3)]
    assert not all(torch.equal(f, train_all[:4]) for f in firsts)


# --------------------------------------------------------------------------- Oxford-IIIT Pet


def _fake_pets(root: Path) -> None:
    """The layout torchvision's OxfordIIITPet reads, with tiny images and trimaps."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = {"trainval": ["Abyssinian_1", "beagle_2", "Bengal_3"], "test": ["beagle_7"]}
    for split, ids in names.items():
        lines = []
        for image_id in ids:
            w, h = 60, 45
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "images" / f"{image_id}.jpg")
            trimap = np.full((h, w), 2, dtype=np.uint8)  # background
            trimap[:, 20:40] = 1  # pet in the middle third
            trimap[:, 40:] = 3  # "border" on the right
            Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{image_id}.png")
            species = 1 if image_id[0].isupper() else 2  # cats are capitalised
            lines.append(f"{image_id} 1 {species} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_oxford_pets_end_to_end(tmp_path):
    _fake_pets(tmp_path)
    ds = OxfordPets(tmp_path, split="trainval", size=48)
    assert len(ds) == 3 and len(OxfordPets(tmp_path, split="test", size=48)) == 1
    assert ds.num_classes == 2 and ds.class_names == ("background", "pet") and ds.ignore_index == IGNORE_INDEX == 255
    image, mask = ds[1]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.1
    assert mask.shape == (48, 48) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) == {0, 1, 255}
    # Columns 20:40 of 60 become 16:32 of 48; check away from the edges.
    assert (mask[:, :14] == 0).all() and (mask[:, 18:30] == 1).all() and (mask[:, 34:] == 255).all()


def test_oxford_pets_missing_data_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        OxfordPets(tmp_path / "nowhere")
    with pytest.raises(ValueError):
        OxfordPets(tmp_path, split="val")


def test_augment_moves_image_and_mask_together_and_draws_per_image():
    images, masks = ShapesDataset(6, size=40, seed=3).materialize()
    flipped, flipped_masks = Augment(hflip=1.0, scale=None, color=0.0)(images, masks)
    torch.testing.assert_close(flipped, images.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(flipped_masks, masks.flip(-1))
    up, up_masks = Augment(hflip=0.0, vflip=1.0, scale=None, color=0.0)(images, masks)
    assert torch.equal(up_masks, masks.flip(-2))
    same, same_masks = Augment(hflip=0.0, scale=None, color=0.0)(images, masks)
    assert torch.equal(same, images) and torch.equal(same_masks, masks)

    out, out_masks = Augment(hflip=0.5, vflip=0.5, scale=(0.6, 1.6), color=0.4, seed=1)(images, masks)
    assert out.shape == images.shape and out_masks.shape == masks.shape and out_masks.dtype == torch.int64
    assert set(out_masks.unique().tolist()) <= set(masks.unique().tolist())  # no invented class ids
    assert 0 <= out.min() and out.max() <= 1
    changed = [(not torch.equal(out_masks[i], masks[i])) for i in range(len(masks))]
    assert any(changed)  # per-image draws: not every image treated alike
    # zooming in by 2 grows an object's area about 4-fold; colour jitter never moves a label
    big, big_masks = Augment(hflip=0.0, scale=(2.0, 2.0), color=0.0)(images, masks)
    ratio = (big_masks > 0).float().sum() / (masks > 0).float().sum()
    assert 2.0 < ratio < 6.0
    _, colour_masks = Augment(hflip=0.0, scale=None, color=0.5)(images, masks)
    assert torch.equal(colour_masks, masks)
    # seeded: the same seed gives the same batch
    a = Augment(seed=7)(images, masks)
    b = Augment(seed=7)(images, masks)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        Augment(hflip=1.5)
    with pytest.raises(ValueError):
        Augment(scale=(1.2, 0.8))
