"""The feature pyramid (models/fpn.py) and the FCOS head (models/fcos_head.py): shapes and wiring."""

import math

import pytest
import torch
from torch import nn

from fcos_from_scratch.models.detectors.fcos import FCOSHead
from fcos_from_scratch.models.fpn import FPN


def trunk_features(batch=2, height=64, width=96, channels=(8, 16, 32), seed=0):
    """C3..C5 for an input of (height, width): strides 8, 16, 32 (rounded up)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, math.ceil(height / s), math.ceil(width / s), generator=generator)
        for c, s in zip(channels, (8, 16, 32))
    ]


@pytest.mark.parametrize("height, width", [(64, 96), (100, 70)])
def test_p3_to_p7_shapes(height, width):
    fpn = FPN([8, 16, 32], out_channels=24, num_levels=5)
    outputs = fpn(trunk_features(height=height, width=width))
    sizes = [math.ceil(height / 8), math.ceil(width / 8)]
    assert len(outputs) == 5
    for level, out in enumerate(outputs):
        assert out.shape == (2, 24, *sizes), level
        sizes = [math.ceil(v / 2) for v in sizes]  # stride-2 3x3 conv, padding 1
    assert fpn.out_channels == 24


def test_p3_to_p5_only_and_c5_source():
    assert len(FPN([8, 16, 32], 16, num_levels=3)(trunk_features())) == 3
    assert len(FPN([8, 16, 32], 16, num_levels=3).extra) == 0
    fpn = FPN([8, 16, 32], 16, num_levels=5, extra_source="c5")
    assert fpn.extra[0].in_channels == 32 and fpn.extra[1].in_channels == 16
    assert [o.shape[-1] for o in fpn(trunk_features())] == [12, 6, 3, 2, 1]


def test_top_down_wiring():
    fpn = FPN([8, 16, 32], 16, num_levels=5)
    features = trunk_features()
    base = fpn(features)
    # C3 feeds only P3; C5 feeds every level.
    changed = fpn([features[0] + 1, features[1], features[2]])
    assert not torch.allclose(changed[0], base[0])
    for level in range(1, 5):
        assert torch.equal(changed[level], base[level])
    changed = fpn([features[0], features[1], features[2] + 1])
    assert all(not torch.allclose(c, b) for c, b in zip(changed, base))


def identity_conv_(conv: nn.Conv2d) -> None:
    """Make a width-preserving conv the identity map (centre tap 1, bias 0)."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        centre = conv.kernel_size[0] // 2
        for channel in range(conv.out_channels):
            conv.weight[channel, channel, centre, centre] = 1.0


def test_nearest_upsampling_by_hand():
    # Laterals and output convs = identity, C3/C4 laterals zero: P4 = C5 repeated 2x2,
    # P3 = C5 repeated 4x4 (nearest neighbour), P6 = P5 sampled every 2nd pixel.
    fpn = FPN([4, 4, 4], 4, num_levels=4)
    for conv in list(fpn.lateral) + list(fpn.output) + list(fpn.extra):
        identity_conv_(conv)
    with torch.no_grad():
        fpn.lateral[0].weight.zero_()
        fpn.lateral[1].weight.zero_()
    c5 = torch.arange(2 * 4 * 2 * 3, dtype=torch.float32).reshape(2, 4, 2, 3)
    p3, p4, p5, p6 = fpn([torch.randn(2, 4, 8, 12), torch.randn(2, 4, 4, 6), c5])
    assert torch.equal(p5, c5)
    assert torch.equal(p4, c5.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert torch.equal(p3, c5.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))
    assert torch.equal(p6, c5[:, :, ::2, ::2])


def test_fpn_bad_arguments():
    with pytest.raises(ValueError, match="num_levels"):
        FPN([8, 16, 32], 16, num_levels=2)
    with pytest.raises(ValueError, match="extra_source"):
        FPN([8, 16, 32], 16, extra_source="p4")
    with pytest.raises(ValueError, match="feature maps"):
        FPN([8, 16, 32], 16)(trunk_features()[:2])


# --- head ------------------------------------------------------------------------

def test_head_shapes_and_initialisation():
    head = FCOSHead(in_channels=32, num_classes=7, num_levels=3, num_convs=2)
    features = [torch.randn(2, 32, 8, 12), torch.randn(2, 32, 4, 6), torch.randn(2, 32, 2, 3)]
    cls_logits, box, ctr = head(features)
    num_points = 8 * 12 + 4 * 6 + 2 * 3
    assert cls_logits.shape == (2, num_points, 7) and box.shape == (2, num_points, 4)
    assert ctr.shape == (2, num_points)
    # Prior probability 0.01 ([focal] Sec. 3.3) and centerness bias 0 (seed 001).
    assert torch.allclose(head.cls_logits.bias, torch.full((7,), -math.log(99.0)))
    assert (head.centerness.bias == 0).all() and head.scales.shape == (3,)
    assert abs(torch.sigmoid(cls_logits).mean().item() - 0.01) < 2e-3
    assert (box >= 0).all()
    # 4 x (conv, GroupNorm, ReLU) by default; GroupNorm(32) for width 256 and fewer groups if needed.
    default = FCOSHead(256, 3, 5)
    norms = [m for m in default.cls_tower if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 4 and norms[0].num_groups == 32
    assert [m for m in head.reg_tower if isinstance(m, nn.GroupNorm)][0].num_groups == 32
    assert FCOSHead(24, 3, 1).cls_tower[1].num_groups == 8


def test_head_levels_are_flattened_in_point_order():
    head = FCOSHead(in_channels=8, num_classes=2, num_levels=2, num_convs=1)
    p3, p4 = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)
    cls_all, _, _ = head([p3, p4])
    cls_p4, _, _ = FCOSHead.forward(head, [p4, p4])
    # Points of P4 follow the 16 points of P3, row-major.
    assert torch.allclose(cls_all[:, 16:], cls_p4[:, :4])
    logits = head.cls_logits(head.cls_tower(p3))  # (1, 2, 4, 4)
    assert torch.allclose(cls_all[0, 5], logits[0, :, 1, 1])  # point 5 = row 1, col 1


def test_regression_scale_and_activation():
    features = [torch.randn(1, 16, 4, 4)]
    head = FCOSHead(16, 2, 1, num_convs=1, reg_activation="exp")
    with torch.no_grad():
        head.scales.fill_(0.0)
    _, box, _ = head(features)
    assert torch.allclose(box, torch.ones_like(box))  # exp(0 * x) = 1
    relu_head = FCOSHead(16, 2, 1, num_convs=1)
    with torch.no_grad():
        relu_head.scales.fill_(-1.0)
    _, box_neg, _ = relu_head(features)
    with torch.no_grad():
        relu_head.scales.fill_(1.0)
    _, box_pos, _ = relu_head(features)
    assert torch.allclose(box_pos - box_neg, relu_head.bbox_pred(relu_head.reg_tower(features[0]))
                          .permute(0, 2, 3, 1).reshape(1, -1, 4), atol=1e-6)
    with pytest.raises(ValueError, match="reg_activation"):
        FCOSHead(16, 2, 1, reg_activation="softplus")
