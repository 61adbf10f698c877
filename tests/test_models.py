"""The ResNet-FPN segmenter against torchvision, on odd sizes, and its weight loading."""

import math
import urllib.error

import pytest
import torch
import torchvision
from torchvision.ops import FeaturePyramidNetwork

from course_lib.models import (
    FPN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNetBackbone,
    ResNetFPN,
    SemanticFPNHead,
    SingleScaleSegmenter,
    build_model,
)


def _random_features(channels, size=(64, 80), batch=2):
    h, w = size
    feats = {}
    for k, c in enumerate(channels):
        feats[f"c{k + 2}"] = torch.randn(batch, c, h, w)
        h, w = (h + 1) // 2, (w + 1) // 2
    return feats


@pytest.mark.parametrize("name,channels", [("resnet18", [64, 128, 256, 512]), ("resnet34", [64, 128, 256, 512]),
                                           ("resnet50", [256, 512, 1024, 2048])])
def test_backbone_returns_c2_to_c5_at_strides_4_to_32(name, channels):
    backbone = ResNetBackbone(name).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 128, 192))
    assert list(feats) == ["c2", "c3", "c4", "c5"]
    assert backbone.out_channels == channels
    for (key, f), c, stride in zip(feats.items(), channels, [4, 8, 16, 32]):
        assert f.shape == (1, c, 128 // stride, 192 // stride), key


def test_backbone_matches_torchvision_resnet_stages():
    resnet = torchvision.models.resnet18(weights=None).eval()
    backbone = ResNetBackbone("resnet18").eval()
    backbone.load_state_dict({k: v for k, v in _backbone_state_from_resnet(resnet).items()})
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        x1 = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        c2 = resnet.layer1(x1)
        c5 = resnet.layer4(resnet.layer3(resnet.layer2(c2)))
        feats = backbone(x)
    torch.testing.assert_close(feats["c2"], c2)
    torch.testing.assert_close(feats["c5"], c5)


def _backbone_state_from_resnet(resnet):
    rename = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    out = {}
    for k, v in resnet.state_dict().items():
        if k.startswith("fc."):
            continue
        for old, new in rename.items():
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


@pytest.mark.parametrize("size", [(64, 64), (97, 131), (33, 47)])
def test_fpn_equals_torchvision_feature_pyramid_network(size):
    channels = [64, 128, 256, 512]
    ours = FPN(channels, out_channels=32).eval()
    theirs = FeaturePyramidNetwork(channels, out_channels=32).eval()
    for i in range(len(channels)):  # copy our weights into torchvision's modules
        theirs.inner_blocks[i][0].load_state_dict(ours.lateral_convs[i].state_dict())
        theirs.layer_blocks[i][0].load_state_dict(ours.output_convs[i].state_dict())
    feats = _random_features(channels, size)
    with torch.no_grad():
        p = ours(feats)
        q = theirs(feats)
    assert list(p) == ["p2", "p3", "p4", "p5"]
    for a, b in zip(p.values(), q.values()):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fpn_parameter_count_and_linearity():
    channels, d = [64, 128, 256, 512], 256
    fpn = FPN(channels, d)
    expected = sum(c * d + d for c in channels) + len(channels) * (9 * d * d + d)
    assert sum(p.numel() for p in fpn.parameters()) == expected
    # no non-linearity: with zero biases the FPN is linear in its inputs
    for m in fpn.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.bias)
    a, b = _random_features(channels), _random_features(channels)
    with torch.no_grad():
        pa, pb = fpn(a), fpn(b)
        psum = fpn({k: a[k] + 2 * b[k] for k in a})
    for k in psum:
        torch.testing.assert_close(psum[k], pa[k] + 2 * pb[k], rtol=1e-4, atol=1e-4)


def test_fpn_top_down_pathway_carries_coarse_information_to_p2():
    fpn = FPN([8, 8, 8, 8], 8).eval()
    feats = _random_features([8, 8, 8, 8], (32, 32))
    changed = dict(feats, c5=feats["c5"] + 1.0)
    with torch.no_grad():
        assert not torch.allclose(fpn(feats)["p2"], fpn(changed)["p2"])
        # ... but C2 never reaches P5
        assert torch.equal(fpn(feats)["p5"], fpn(dict(feats, c2=feats["c2"] + 1.0))["p5"])


@pytest.mark.parametrize("cls", [ResNetFPN, SingleScaleSegmenter])
@pytest.mark.parametrize("size", [(97, 131), (32, 32), (64, 96)])
def test_segmenters_return_logits_at_input_size(cls, size):
    model = cls(num_classes=5, fpn_channels=64, head_channels=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()
    assert model.num_classes == 5


def test_resnet_fpn_exposes_backbone_and_fpn_and_trains_every_parameter():
    model = ResNetFPN(3, fpn_channels=32, head_channels=32)
    assert isinstance(model.backbone, ResNetBackbone)
    assert isinstance(model.fpn, FPN)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="H, W >= 32"):
        ResNetFPN(2)(torch.randn(1, 3, 31, 64))


def test_head_sums_all_levels_at_stride_4():
    head = SemanticFPNHead(16, num_classes=3, strides=[4, 8, 16, 32], head_channels=32)
    assert [len(s) for s in head.scale_heads] == [1, 1, 2, 3]
    pyramid = {f"p{k}": torch.randn(1, 16, *s) for k, s in zip(range(2, 6), [(25, 33), (13, 17), (7, 9), (4, 5)])}
    assert head(pyramid).shape == (1, 3, 25, 33)


def test_build_model_rebuilds_the_architecture_from_plain_config():
    for cls in (ResNetFPN, SingleScaleSegmenter):
        model = cls(4, backbone="resnet18", fpn_channels=32, head_channels=32).eval()
        clone = build_model(model.config).eval()
        assert type(clone) is cls
        clone.load_state_dict(model.state_dict())
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(model(x), clone(x))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"arch": "unet", "num_classes": 2})


def test_segmenter_standardises_its_input_with_the_imagenet_statistics():
    model = ResNetFPN(3, backbone="resnet18", fpn_channels=32, head_channels=32).eval()
    raw = ResNetFPN(3, backbone="resnet18", fpn_channels=32, head_channels=32, normalize=False).eval()
    raw.load_state_dict(model.state_dict())  # the statistics are no state: the same weights fit both
    assert model.config["normalize"] is True and raw.config["normalize"] is False
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), raw((x - mean) / std))
        assert not torch.allclose(model(x), raw(x))
    legacy = {k: v for k, v in model.config.items() if k != "normalize"}  # saved before normalisation existed
    assert build_model(legacy).normalize is False and build_model(model.config).normalize is True


def test_untrained_segmenter_starts_near_the_uniform_prediction():
    """The classifier starts small: the first cross-entropy is close to log(C), not 7-10."""
    torch.manual_seed(0)
    model = ResNetFPN(5, backbone="resnet18", fpn_channels=64, head_channels=32)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    assert 0.2 < logits.std() < 1.5  # He init on the classifier gives about 5
    ce = torch.nn.functional.cross_entropy(logits, torch.randint(0, 5, (4, 64, 64)))
    assert abs(ce.item() - math.log(5)) < 0.6


def test_backbone_weights_from_local_state_dict_file(tmp_path):
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    backbone = ResNetBackbone("resnet18", weights=path)
    torch.testing.assert_close(backbone.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    model = ResNetFPN(2, weights=str(path))
    torch.testing.assert_close(model.backbone.stem[0].weight, resnet.conv1.weight)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResNetBackbone("resnet18", weights=tmp_path / "missing.pth")


def test_imagenet_weights_load_from_torch_hub_cache(tmp_path, monkeypatch):
    # torchvision looks in $TORCH_HOME/hub/checkpoints before downloading
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), cache / url.rsplit("/", 1)[-1])
    backbone = ResNetBackbone("resnet18", weights="imagenet")
    torch.testing.assert_close(backbone.layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)


def test_imagenet_weights_offline_fail_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):  # what urllib raises without a network
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="offline.*pass its path"):
        ResNetBackbone("resnet18", weights="imagenet")


def test_unknown_backbone_is_rejected():
    with pytest.raises(ValueError, match="unknown backbone"):
        ResNetBackbone("vgg16")
