"""Figures render headless and show what they claim."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_lib import viz
from course_lib.pyramids import gaussian_pyramid, laplacian_pyramid
from course_lib.train import History


def test_colorize_mask_gives_each_class_its_own_colour_and_marks_ignored_pixels():
    mask = torch.tensor([[0, 1, 2], [3, 4, 255]])
    rgb = viz.colorize_mask(mask)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    colours = {tuple(c) for c in rgb.reshape(-1, 3)[:5]}
    assert len(colours) == 5
    assert tuple(rgb[1, 2]) == (255, 255, 255)
    assert tuple(rgb[0, 0]) == (0, 0, 0)


def test_overlay_keeps_background_pixels_and_tints_objects():
    image = torch.full((3, 4, 4), 0.5)
    mask = torch.zeros(4, 4, dtype=torch.long)
    mask[0, 0] = 1
    out = viz.overlay(image, mask, alpha=0.5)
    assert out.shape == (4, 4, 3)
    np.testing.assert_allclose(out[1:, 1:], 0.5)
    assert not np.allclose(out[0, 0], 0.5)


def test_show_predictions_draws_three_panels_per_image():
    images = torch.rand(3, 3, 32, 32)
    masks = torch.randint(0, 3, (3, 32, 32))
    fig = viz.show_predictions(images, masks, masks, class_names=("bg", "a", "b"), max_items=2)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "ground truth", "prediction"]


@pytest.mark.parametrize("per", ["step", "epoch"])
def test_loss_curves_have_one_panel_per_loss_with_the_recorded_values(per):
    history = History()
    for step in range(6):
        history.log(getattr(history, per), {"loss_ce": 1.0 / (step + 1), "loss_dice": 0.5, "loss_iou": 0.7, "loss": 2.0})
    fig = viz.plot_loss_curves(history, per=per)
    assert [ax.get_title() for ax in fig.axes] == ["IoU loss", "Cross-entropy loss", "Dice loss", "Total loss"]
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [1.0 / (s + 1) for s in range(6)])
    with pytest.raises(ValueError, match="none of the loss keys"):
        viz.plot_loss_curves({"accuracy": [1.0]})


def test_pyramid_and_feature_map_figures():
    img = torch.rand(1, 3, 64, 48)
    assert len(viz.show_pyramid(gaussian_pyramid(img, 3)).axes) == 3
    assert len(viz.show_pyramid(laplacian_pyramid(img, 3), signed=True).axes) == 3
    feats = {"p2": torch.randn(1, 8, 16, 12), "p3": torch.randn(1, 8, 8, 6)}
    fig = viz.show_feature_maps(feats, channels=4)
    assert len(fig.axes) == 2 * 5


def test_design_comparison_accepts_rows_and_dicts():
    rows = [{"name": "a", "seconds": 2.0, "peak_memory_mb": 10.0}, {"name": "b", "seconds": 1.0, "peak_memory_mb": 5.0}]
    fig = viz.plot_design_comparison(rows)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [2.0, 1.0]


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_figure_1_is_drawn_from_the_real_shapes_of_a_97x131_input():
    from course_lib.models import FPN, ResNetBackbone
    from course_lib.pyramids import DESIGN_NAMES, design_shapes

    net = ResNetBackbone("resnet18").eval()
    fpn = FPN(net.out_channels, 32).eval()
    shapes = design_shapes(net, fpn, (97, 131), scales=(2.0, 1.0, 0.5))
    assert list(shapes) == list(DESIGN_NAMES)
    assert shapes[DESIGN_NAMES[1]]["predicted"] == [(512, 4, 5)]  # ⌈97/32⌉ × ⌈131/32⌉
    assert shapes[DESIGN_NAMES[2]]["predicted"] == [(64, 25, 33), (128, 13, 17), (256, 7, 9), (512, 4, 5)]
    assert shapes[DESIGN_NAMES[3]]["predicted"] == [(32, 25, 33), (32, 13, 17), (32, 7, 9), (32, 4, 5)]
    assert shapes[DESIGN_NAMES[0]]["images"] == [(3, 194, 262), (3, 97, 131), (3, 48, 66)]
    assert shapes[DESIGN_NAMES[0]]["predicted"] == [(512, 7, 9), (512, 4, 5), (512, 2, 3)]
    fig = viz.draw_pyramid_designs(shapes)
    labels = _texts(fig)
    assert len(fig.axes) == 4 and "P2\n32×25×33" in labels and "C5\n512×2×3" in labels and "input\n3×97×131" in labels


def test_top_down_steps_are_the_forward_pass_one_merge_at_a_time_and_are_drawn_with_their_shapes():
    from course_lib.models import FPN, ResNetBackbone

    net = ResNetBackbone("resnet18").eval()
    fpn = FPN(net.out_channels, 16).eval()
    with torch.no_grad():
        features = net(torch.rand(1, 3, 97, 131))
        steps = fpn.top_down_steps(features)
        outputs = fpn(features)
    assert [s["level"] for s in steps] == ["p5", "p4", "p3", "p2"]
    assert steps[0]["top_down"] is None and torch.equal(steps[0]["merged"], steps[0]["lateral"])
    for step in steps:
        torch.testing.assert_close(step["output"], outputs[step["level"]], rtol=0, atol=0)
    assert tuple(steps[2]["top_down"].shape) == (1, 16, 13, 17)  # 7×9 upsampled to the lateral's 13×17
    fig = viz.show_top_down_step(steps, features, 2)
    labels = _texts(fig)
    assert "C3\n128×13×17" in labels and "M4\n16×7×9" in labels and "P3\n16×13×17" in labels
    assert any("none at the top" in ax.get_title() for ax in viz.show_top_down_step(steps, features, 0).axes)
