"""course_lib.pyramids: Gaussian/Laplacian pyramids, stride arithmetic, FPN Figure 1 costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.models import FPN, ResNetBackbone
from course_lib.pyramids import (
    DESIGN_NAMES,
    SAMPLE_IMAGES,
    Measurement,
    compare_pyramid_designs,
    conv_output_size,
    count_flops,
    feature_map_sizes,
    featurized_image_pyramid,
    gaussian_pyramid,
    image_scales,
    laplacian_pyramid,
    measure,
    pyramid_designs,
    pyramid_down,
    pyramid_up,
    reconstruct_from_laplacian,
    sample_image,
)

SIZES = [(64, 64), (65, 47), (33, 18), (7, 5)]


@pytest.mark.parametrize("size", SIZES)
def test_gaussian_pyramid_shapes_and_rank(size):
    h, w = size
    batch = torch.rand(2, 3, h, w)
    levels = gaussian_pyramid(batch, 5)
    assert len(levels) == 5 and levels[0] is batch
    for k, level in enumerate(levels):
        expected = (h, w)
        for _ in range(k):
            expected = (math.ceil(expected[0] / 2), math.ceil(expected[1] / 2))
        assert level.shape == (2, 3, *expected) and level.dtype == torch.float32
    single = gaussian_pyramid(batch[1], 5)
    assert [t.shape for t in single] == [t.shape[1:] for t in levels]
    assert torch.allclose(single[3], levels[3][1], atol=1e-6)


def test_integer_images_become_float32():
    img = torch.randint(0, 256, (3, 20, 21), dtype=torch.uint8)
    assert all(t.dtype == torch.float32 for t in gaussian_pyramid(img, 3))
    assert pyramid_down(img).dtype == torch.float32


def test_constant_image_stays_constant():
    img = torch.full((1, 3, 37, 20), 0.3)
    for level in gaussian_pyramid(img, 7):  # down to 1x1, where padding cannot reflect
        assert torch.allclose(level, torch.full_like(level, 0.3), atol=1e-6)
    up = pyramid_up(torch.full((1, 3, 19, 10), 0.3), (37, 20))
    assert up.shape == img.shape and torch.allclose(up, img, atol=1e-6)
    laplacian = laplacian_pyramid(img, 4)
    assert all(detail.abs().max() < 1e-6 for detail in laplacian[:-1])


def _numpy_pyramid_down(channel: np.ndarray) -> np.ndarray:
    """Reference: a direct (non-separable) 5×5 binomial convolution, then every other pixel."""
    k1 = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
    kernel = np.outer(k1, k1)
    padded = np.pad(channel.astype(np.float64), 2, mode="reflect")  # numpy's reflect = torch's
    h, w = channel.shape
    out = np.zeros((h, w))
    for dy in range(5):
        for dx in range(5):
            out += kernel[dy, dx] * padded[dy:dy + h, dx:dx + w]
    return out[::2, ::2]


@pytest.mark.parametrize("size", [(16, 16), (15, 22), (9, 3)])
def test_pyramid_down_matches_direct_5x5_convolution(size):
    img = torch.rand(2, 3, *size)
    down = pyramid_down(img)
    for n in range(2):
        for c in range(3):
            expected = _numpy_pyramid_down(img[n, c].numpy())
            assert np.allclose(down[n, c].numpy(), expected, atol=1e-6)


def test_pyramid_up_is_zero_insertion_and_4x_blur():
    # Reference on the interior, where border handling plays no part.
    coarse = torch.rand(1, 1, 8, 8)
    up = pyramid_up(coarse, (16, 16))
    zeros = torch.zeros(1, 1, 16, 16)
    zeros[..., ::2, ::2] = coarse
    k1 = torch.tensor([1.0, 4, 6, 4, 1]) / 16
    kernel = 4 * torch.outer(k1, k1)
    expected = torch.nn.functional.conv2d(zeros, kernel.view(1, 1, 5, 5))  # valid: outputs 2..13
    assert torch.allclose(up[..., 2:14, 2:14], expected, atol=1e-6)
    with pytest.raises(ValueError):
        pyramid_up(coarse, (20, 16))


@pytest.mark.parametrize("size", [(64, 64), (65, 47), (31, 100), (3, 3)])
def test_laplacian_reconstruction_is_exact(size):
    img = torch.rand(2, 3, *size)
    pyramid = laplacian_pyramid(img, 5)
    assert len(pyramid) == 5
    assert [t.shape for t in pyramid] == [t.shape for t in gaussian_pyramid(img, 5)]
    assert pyramid[0].abs().max() > 0.01  # the finest level does hold detail
    assert (reconstruct_from_laplacian(pyramid) - img).abs().max() < 1e-5
    single = laplacian_pyramid(img[0], 3)
    assert (reconstruct_from_laplacian(single) - img[0]).abs().max() < 1e-5


def test_conv_output_size():
    assert conv_output_size(224, kernel=7, stride=2, padding=3) == 112
    assert conv_output_size(7, kernel=3, stride=2, padding=1) == 4
    assert conv_output_size(10, kernel=3) == 8
    assert conv_output_size(10, kernel=3, dilation=2) == 6
    with pytest.raises(ValueError):
        conv_output_size(2, kernel=7)


@pytest.mark.parametrize("size", [(97, 130), (33, 65), (64, 64)])
def test_feature_map_sizes_match_the_real_resnet(size):
    sizes = feature_map_sizes(*size)
    assert list(sizes) == ["c1", "c2", "c3", "c4", "c5"]
    assert sizes["c1"] == tuple(math.ceil(n / 2) for n in size)
    backbone = ResNetBackbone("resnet18").eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, *size))
    for name in ("c2", "c3", "c4", "c5"):
        assert tuple(features[name].shape[-2:]) == sizes[name], name


def test_featurized_image_pyramid_runs_the_backbone_on_every_scale():
    backbone = ResNetBackbone("resnet18").eval()
    img = torch.rand(1, 3, 96, 80)
    with torch.no_grad():
        per_level = featurized_image_pyramid(backbone, img, 3)
    assert len(per_level) == 3
    for level, features in zip(gaussian_pyramid(img, 3), per_level, strict=True):
        assert features["c5"].shape[-2:] == feature_map_sizes(*level.shape[-2:])["c5"]


def test_measure_reports_time_and_peak_memory():
    result = measure(lambda n: torch.ones(n).sum(), 2_000_000, repeats=2)
    assert isinstance(result, Measurement) and result.seconds > 0
    # 2e6 float32 = 7.6 MiB live at once; the tracker should see about that much.
    assert 7.0 < result.peak_memory_mb < 9.0
    bigger = measure(lambda n: torch.ones(n).sum(), 8_000_000, repeats=1)
    assert bigger.peak_memory_mb > 3.5 * result.peak_memory_mb


def test_design_a_does_more_work_than_b():
    backbone = ResNetBackbone("resnet18").eval()
    img = torch.rand(1, 3, 256, 256)
    flops_a = count_flops(lambda x: featurized_image_pyramid(backbone, x, 3), img)
    flops_b = count_flops(backbone, img)
    # Each scale has a quarter of the pixels of the one before: 1 + 1/4 + 1/16.
    assert flops_a / flops_b == pytest.approx(1 + 1 / 4 + 1 / 16, rel=0.02)


def test_compare_pyramid_designs():
    torch.manual_seed(0)
    rows = compare_pyramid_designs("resnet18", torch.rand(1, 3, 256, 256), levels=3, device="cpu")
    assert [row.name for row in rows] == list(DESIGN_NAMES)
    for row in rows:
        name, seconds, peak_memory_mb, n_feature_maps = row
        assert seconds > 0 and peak_memory_mb > 0 and n_feature_maps >= 1
    assert [row.n_feature_maps for row in rows] == [3, 1, 4, 4]
    _, design_b, _, design_d = rows  # timings are compared in notebook 01, not asserted here
    assert design_d.peak_memory_mb > design_b.peak_memory_mb  # FPN keeps 256-channel maps at stride 4


@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_sample_images_load_offline_as_float_rgb(name):
    img = sample_image(name)
    assert img.dim() == 3 and img.shape[0] == 3 and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05  # a real photograph
    small = sample_image(name, size=40)
    assert small.shape == (3, 40, 40) and 0.0 <= small.min() and small.max() <= 1.0


def test_sample_image_crops_the_centre_square():
    full = sample_image("chelsea")  # 300 x 451
    side = min(full.shape[-2:])
    square = sample_image("chelsea", size=side)
    left = (full.shape[-1] - side) // 2
    assert torch.allclose(square, full[:, :, left:left + side], atol=1e-5)
    with pytest.raises(ValueError):
        sample_image("not-an-image")


def test_image_scales():
    img = torch.rand(1, 3, 40, 30)
    up, same, down = image_scales(img, (2, 1, 0.5))
    assert up.shape == (1, 3, 80, 60) and same is img and down.shape == (1, 3, 20, 15)
    flat = torch.full((3, 9, 7), 0.25)
    assert all(torch.allclose(t, torch.full_like(t, 0.25), atol=1e-6) for t in image_scales(flat, (3, 0.4)))
    with pytest.raises(ValueError):
        image_scales(img, (1, 0))


def test_pyramid_designs_with_upsampled_scales_cost_the_sum_of_their_pixels():
    backbone = ResNetBackbone("resnet18").eval()
    fpn = FPN(backbone.out_channels, 32).eval()
    img = torch.rand(1, 3, 64, 64)
    designs = pyramid_designs(backbone, fpn, scales=(2, 1, 0.5))
    assert [d[0] for d in designs] == list(DESIGN_NAMES) and [d[2] for d in designs] == [3, 1, 4, 4]
    with torch.no_grad():
        outputs = [fn(img) for _, fn, _ in designs]
    assert [tuple(t.shape[-2:]) for t in outputs[0]] == [(4, 4), (2, 2), (1, 1)]
    assert [t.shape[1] for t in outputs[3]] == [32] * 4
    flops = [count_flops(fn, img) for _, fn, _ in designs]
    assert flops[0] / flops[1] == pytest.approx(4 + 1 + 1 / 4, rel=0.05)
    assert flops[1] == flops[2] < flops[3]


def test_compare_pyramid_designs_training_keeps_every_scale_in_memory():
    img = torch.rand(1, 3, 128, 128)
    kwargs = dict(levels=3, device="cpu", repeats=1, scales=(1, 1, 1), fpn_channels=64)
    inference = compare_pyramid_designs("resnet18", img, **kwargs)
    training = compare_pyramid_designs("resnet18", img, training=True, **kwargs)
    assert [row.n_feature_maps for row in training] == [3, 1, 4, 4]
    # At inference each scale's activations are freed before the next scale runs;
    # in training all three graphs stay alive at once.
    assert inference[0].peak_memory_mb < 1.5 * inference[1].peak_memory_mb
    assert training[0].peak_memory_mb > 2.5 * training[1].peak_memory_mb
    assert training[1].peak_memory_mb > 2 * inference[1].peak_memory_mb


def test_measure_on_cpu_does_not_print_the_profilers_logs(capfd):
    measure(lambda n: torch.ones(n).sum(), 1000, repeats=1, device="cpu")
    captured = capfd.readouterr()
    assert "profiler" not in captured.err and "USDT" not in captured.err
    import sys

    print("still here", file=sys.stderr)  # stderr works again afterwards
    assert "still here" in capfd.readouterr().err
