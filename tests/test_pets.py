"""Oxford-IIIT Pet (course_lib.data.OxfordPets) on a tiny copy of its layout built here, and the
input normalisation that goes with pretrained weights. Nothing is downloaded from outside: the
download test serves tiny archives from a local HTTP server to torchvision's own download code."""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from course_lib.data import IGNORE_INDEX, OxfordPets
from course_lib.losses import CombinedLoss
from course_lib.models import ResNetFPN, SingleScaleSegmenter, build_model
from course_lib.train import evaluate, train_step

# image id -> (height, width); cats are capitalised, as in the release
SPLITS = {
    "trainval": {"Abyssinian_1": (45, 60), "beagle_2": (50, 40), "Bengal_3": (32, 32)},
    "test": {"beagle_7": (36, 48)},
}


def _trimap(h: int, w: int) -> np.ndarray:
    """Background (2) with a pet (1) in the middle third of the columns and border (3) on the right."""
    trimap = np.full((h, w), 2, dtype=np.uint8)
    trimap[:, w // 3: 2 * w // 3] = 1
    trimap[:, 2 * w // 3:] = 3
    return trimap


def make_pets(root: Path, splits: dict = SPLITS) -> Path:
    """Write the layout torchvision's OxfordIIITPet reads under ``root/oxford-iiit-pet``:
    ``images/<id>.jpg``, ``annotations/trimaps/<id>.png`` and ``annotations/<split>.txt``
    with lines ``<id> <class 1-37> <species 1=cat 2=dog> <breed id>``."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, ids in splits.items():
        lines = []
        for k, (image_id, (h, w)) in enumerate(ids.items()):
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "images" / f"{image_id}.jpg", quality=95)
            Image.fromarray(_trimap(h, w)).save(base / "annotations" / "trimaps" / f"{image_id}.png")
            species = 1 if image_id[0].isupper() else 2
            lines.append(f"{image_id} {k + 1} {species} {k + 1}")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return base


@pytest.fixture
def pets_root(tmp_path: Path) -> Path:
    make_pets(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- the dataset


def test_items_have_the_course_shapes_and_dtypes(pets_root):
    ds = OxfordPets(pets_root, split="trainval", size=48)
    assert len(ds) == 3 and len(OxfordPets(pets_root, split="test", size=48)) == 1
    assert ds.num_classes == 2 and ds.class_names == ("background", "pet") and ds.ignore_index == IGNORE_INDEX
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and image.is_contiguous()
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.1
        assert mask.shape == (48, 48) and mask.dtype == torch.int64
    assert "trainval" in repr(ds) and "n=3" in repr(ds)


def test_trimap_values_map_to_background_pet_and_ignore(pets_root):
    ds = OxfordPets(pets_root, size=32)
    image, mask = ds[2]  # Bengal_3 is 32 × 32: no resizing, so the mapping is pixel for pixel
    trimap = torch.from_numpy(_trimap(32, 32).astype(np.int64))
    assert torch.equal(mask == 1, trimap == 1)  # pet
    assert torch.equal(mask == 0, trimap == 2)  # background
    assert torch.equal(mask == IGNORE_INDEX, trimap == 3)  # border / unclassified
    assert set(mask.unique().tolist()) == {0, 1, IGNORE_INDEX}


def test_resize_stretches_to_a_square_nearest_for_the_mask(pets_root):
    ds = OxfordPets(pets_root, size=48)
    for i in range(len(SPLITS["trainval"])):
        _, mask = ds[i]
        # nearest neighbour: no value between the classes appears, e.g. 2 from averaging 1 and 3
        assert set(mask.unique().tolist()) <= {0, 1, IGNORE_INDEX}
        # stretched (not cropped): the thirds of the columns stay thirds, in every row
        assert (mask[:, :14] == 0).all() and (mask[:, 18:30] == 1).all() and (mask[:, 34:] == IGNORE_INDEX).all()
        assert (mask == mask[:1]).all()


def test_image_resize_is_antialiased(tmp_path):
    base = make_pets(tmp_path, {"trainval": {"Abyssinian_1": (128, 128)}})
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(
        base / "images" / "Abyssinian_1.png", format="PNG")
    (base / "images" / "Abyssinian_1.png").replace(base / "images" / "Abyssinian_1.jpg")  # lossless noise
    full, small = OxfordPets(tmp_path, size=128)[0][0], OxfordPets(tmp_path, size=16)[0][0]
    # Shrinking 8× averages about 8×8 pixels of noise: its std falls about 8×. Bilinear without
    # antialiasing would sample 2×2 pixels and keep half of it.
    assert small.std() < 0.25 * full.std()
    assert abs(small.mean() - full.mean()) < 0.02
    reference = torchvision.transforms.functional.resize(full, [16, 16], antialias=True)
    assert (small - reference).abs().mean() < 0.02


def test_limit_keeps_the_first_images(pets_root):
    full = OxfordPets(pets_root, size=40)
    two = OxfordPets(pets_root, size=40, limit=2)
    assert len(two) == 2 and len(OxfordPets(pets_root, limit=10)) == 3 and len(OxfordPets(pets_root, limit=0)) == 0
    for i in range(2):
        assert all(torch.equal(a, b) for a, b in zip(two[i], full[i]))
    assert torch.equal(two[-1][1], full[1][1])
    with pytest.raises(IndexError):
        two[2]
    with pytest.raises(ValueError, match="limit"):
        OxfordPets(pets_root, limit=-1)
    with pytest.raises(ValueError, match="split"):
        OxfordPets(pets_root, split="val")


def test_available_checks_the_files_of_each_split(tmp_path):
    assert not OxfordPets.available(tmp_path)
    make_pets(tmp_path)
    assert OxfordPets.available(tmp_path) and OxfordPets.available(tmp_path, "test")
    (tmp_path / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()
    assert OxfordPets.available(tmp_path, "trainval")
    assert not OxfordPets.available(tmp_path, "test") and not OxfordPets.available(tmp_path)


def test_missing_data_raise_a_clear_error_without_downloading(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("download=False must not touch the network")

    monkeypatch.setattr("torchvision.datasets.oxford_iiit_pet.download_and_extract_archive", no_network)
    with pytest.raises(FileNotFoundError) as info:
        OxfordPets(tmp_path / "nowhere")
    message = str(info.value)
    assert "download=True" in message and "images.tar.gz" in message and "annotations.tar.gz" in message
    assert str(tmp_path / "nowhere" / "oxford-iiit-pet") in message


def test_download_offline_says_the_course_runs_offline(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(f"[Errno -3] Temporary failure in name resolution: {url}")

    monkeypatch.setattr("torchvision.datasets.oxford_iiit_pet.download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match="offline") as info:
        OxfordPets(tmp_path, download=True)
    assert "images.tar.gz" in str(info.value) and isinstance(info.value.__cause__, urllib.error.URLError)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(tmp_path):
    """``serve(folder) -> base URL``: a local HTTP server for ``folder`` (stopped after the test)."""
    servers = []

    def start(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_fetches_and_extracts_the_archives(tmp_path, monkeypatch, serve):
    """torchvision's real download code (with its md5 check), served the release's two archives locally."""
    source = make_pets(tmp_path / "source")
    served = tmp_path / "served"
    served.mkdir()
    resources = []
    for name, folders in (("images", ["images"]), ("annotations", ["annotations"])):
        archive = served / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:  # the release's archives hold images/ and annotations/
            for folder in folders:
                tar.add(source / folder, arcname=folder)
        resources.append((archive.name, hashlib.md5(archive.read_bytes()).hexdigest()))
    url = serve(served)
    resources = [(f"{url}/{name}", md5) for name, md5 in resources]
    monkeypatch.setattr(torchvision.datasets.OxfordIIITPet, "_RESOURCES", tuple(resources))
    root = tmp_path / "data"
    assert not OxfordPets.available(root)
    ds = OxfordPets(root, split="test", size=32, download=True)
    assert OxfordPets.available(root) and len(ds) == 1 and ds[0][1].shape == (32, 32)
    assert len(OxfordPets(root, size=32)) == 3  # now present: no download needed


# --------------------------------------------------------------------------- training on it


def test_a_training_step_skips_the_border_with_ignore_index(pets_root):
    loader = DataLoader(OxfordPets(pets_root, size=64), batch_size=3)
    images, masks = next(iter(loader))
    assert (masks == IGNORE_INDEX).any()
    with pytest.raises(ValueError):  # without ignore_index the 255s are an error, not a class
        CombinedLoss()(torch.randn(3, 2, 64, 64), masks)
    loss = CombinedLoss(ce=1.0, dice=1.0, iou=1.0, ignore_index=IGNORE_INDEX)
    # The border pixels do not count: any logits there leave the loss as it is.
    logits = torch.randn(3, 2, 64, 64)
    changed = torch.where((masks == IGNORE_INDEX)[:, None], torch.randn_like(logits) * 10, logits)
    torch.testing.assert_close(loss(logits, masks)["loss"], loss(changed, masks)["loss"])

    model = ResNetFPN(OxfordPets.num_classes, fpn_channels=32, head_channels=32)
    before = model.head.classifier.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    values = train_step(model, images, masks, loss, optimizer)
    assert np.isfinite(values["loss"]) and set(values) >= {"loss", "loss_ce", "loss_dice", "loss_iou"}
    assert not torch.equal(before, model.head.classifier.weight)
    scores = evaluate(model, loader, ignore_index=IGNORE_INDEX)
    assert 0.0 <= scores["miou"] <= 1.0 and len(scores["per_class_iou"]) == 2


# --------------------------------------------------------------------------- normalisation and weights


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)  # random init, no download
    return path


@pytest.mark.parametrize("cls", [ResNetFPN, SingleScaleSegmenter])
def test_pretrained_weights_get_the_imagenet_input_statistics(cls, resnet18_file):
    small = dict(fpn_channels=32, head_channels=32)
    with_weights = cls(2, weights=resnet18_file, **small)
    assert with_weights.normalize is True and with_weights.config["normalize"] is True
    torch.testing.assert_close(with_weights.backbone.stem[0].weight,
                               torch.load(resnet18_file, weights_only=True)["conv1.weight"])
    explicit = cls(2, weights=str(resnet18_file), normalize=False, **small)  # an explicit choice wins
    assert explicit.normalize is False and explicit.config["normalize"] is False
    assert cls(2, **small).normalize is True  # without weights too (benchmarks/reference_study.py)
    # build_model: the saved choice is kept; a config saved before normalisation existed means raw inputs
    assert build_model(with_weights.config).normalize is True and build_model(explicit.config).normalize is False
    legacy = {k: v for k, v in with_weights.config.items() if k != "normalize"}
    assert build_model(legacy).normalize is False
