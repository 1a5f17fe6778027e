"""The feature pyramid (models/fpn.py) and the FCOS head (models/fcos_head.py): shapes and wiring.

FPN reference values come from ``tests/reference/make_fpn_refs.py`` (torchvision 0.29's
``FeaturePyramidNetwork``), frozen in ``tests/fixtures/fpn_refs.pt``; weights are refilled
here by the script's deterministic rule and renamed by its ``torchvision_key_to_ours``.
"""

import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from fcos_from_scratch.models.detectors.fcos import FCOSHead
from fcos_from_scratch.models.fpn import FPN
from conftest import TESTS, load_reference

HERE = TESTS
FPN_REFS = torch.load(HERE / "fixtures" / "fpn_refs.pt", weights_only=True)


REF = load_reference("make_fpn_refs")


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


# --- torchvision parity and the extra-level rules -----------------------------------


def _our_fpn_from_torchvision_case(name):
    """Our FPN for case ``name``, float64, with the case's weights under our key names."""
    _, channels, out_channels, extra_source, norm = REF.CASES[name]
    case = FPN_REFS["cases"][name]
    fpn = FPN(channels, out_channels, len(case["outputs"]), extra_source, norm).double()
    state = {}
    for key, shape in zip(case["keys"], case["shapes"]):
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(0)
        else:
            value = REF.BACKBONE_REFS.deterministic_tensor(
                key, shape, *REF.BACKBONE_REFS.fill_rule(key, shape), torch.float64)
        state[REF.torchvision_key_to_ours(key, norm)] = value
    fpn.load_state_dict(state, strict=True)  # every key maps, none is left over
    return fpn.eval()


def test_fpn_fixture_records_versions():
    assert FPN_REFS["versions"]["torchvision"].startswith("0.29")
    assert set(FPN_REFS["cases"]) == set(REF.CASES)


@pytest.mark.parametrize("name", list(REF.CASES))
def test_fpn_matches_torchvision_feature_pyramid_network(name):
    case = FPN_REFS["cases"][name]
    fpn = _our_fpn_from_torchvision_case(name)
    inputs = REF.case_inputs(name)
    assert [tuple(x.shape) for x in inputs] == [tuple(s) for s in case["input_shapes"]]
    with torch.no_grad():
        outputs = fpn(inputs)
    assert len(outputs) == len(case["outputs"]) == fpn.num_levels
    for level, (ours, ref) in enumerate(zip(outputs, case["outputs"])):
        assert ours.dtype == torch.float64 and ours.shape == ref.shape, level
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


def test_default_state_dict_keys_are_unchanged():
    # FCOS checkpoints (P3..P7, P6 from P5, no norm) must keep loading.
    keys = list(FPN([8, 16, 32], 16).state_dict())
    expected = [f"{block}.{i}.{leaf}" for block, count in (("lateral", 3), ("output", 3),
                                                           ("extra", 2))
                for i in range(count) for leaf in ("weight", "bias")]
    assert keys == expected


def test_maxpool_level_is_every_second_pixel_of_the_top_level():
    fpn = FPN([8, 16, 32, 32], 16, extra_source="maxpool")  # C2..C5 -> P2..P6
    assert fpn.num_levels == 5 and len(fpn.extra) == 0
    sizes = [(18, 10), (9, 5), (5, 3), (3, 2)]  # a 72x40 image at strides 4, 8, 16, 32
    features = [torch.randn(2, c, h, w) for c, (h, w) in zip([8, 16, 32, 32], sizes)]
    outputs = fpn(features)
    assert [tuple(o.shape[-2:]) for o in outputs] == [(18, 10), (9, 5), (5, 3), (3, 2), (2, 1)]
    assert torch.equal(outputs[-1], outputs[-2][:, :, ::2, ::2])  # ceil(3/2) = 2, ceil(2/2) = 1
    sum(o.sum() for o in outputs).backward()  # the parameter-free level passes gradients
    assert fpn.lateral[-1].weight.grad.abs().sum() > 0


def test_none_rule_returns_only_the_input_levels():
    fpn = FPN([8, 16, 32], 16, extra_source="none")
    outputs = fpn(trunk_features())
    assert fpn.num_levels == 3 and len(outputs) == 3 and len(fpn.extra) == 0


@pytest.mark.parametrize("extra_source, expected", [("p5", 5), ("c5", 5), ("maxpool", 4),
                                                    ("none", 3)])
def test_default_num_levels_per_rule(extra_source, expected):
    assert FPN([8, 16, 32], 16, extra_source=extra_source).num_levels == expected


def test_fpn_takes_a_trunk_dict_in_order():
    fpn = FPN([8, 16, 32], 16)
    features = trunk_features()
    as_dict = OrderedDict(zip(("C3", "C4", "C5"), features))
    assert all(torch.equal(a, b) for a, b in zip(fpn(as_dict), fpn(features)))


@pytest.mark.parametrize("norm, norm_type", [("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)])
def test_norm_follows_every_lateral_and_output_conv_and_drops_their_bias(norm, norm_type):
    fpn = FPN([8, 16, 32], 32, num_levels=5, norm=norm)
    for block in list(fpn.lateral) + list(fpn.output):
        assert isinstance(block.conv, nn.Conv2d) and block.conv.bias is None
        assert isinstance(block.norm, norm_type)
        assert torch.equal(block.norm.weight, torch.ones(32))  # identity at init
        assert torch.equal(block.norm.bias, torch.zeros(32))
    assert all(conv.bias is not None for conv in fpn.extra)  # extra convs: never normalised
    assert list(fpn.state_dict())[:3] == ["lateral.0.conv.weight", "lateral.0.norm.weight",
                                          "lateral.0.norm.bias"]
    if norm == "gn":
        assert fpn.lateral[0].norm.num_groups == 32


def test_initialisation_is_torchvisions():
    # kaiming_uniform(a=1): bound = sqrt(6 / ((1 + a^2) fan_in)) = sqrt(3 / fan_in).
    torch.manual_seed(0)
    fpn = FPN([8, 16, 32], 16, extra_source="c5")
    for conv in [m for m in fpn.modules() if isinstance(m, nn.Conv2d)]:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(3.0 / fan_in)
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.8 * bound  # uniform over the whole range
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))


def test_fpn_option_errors():
    with pytest.raises(ValueError, match=r"num_levels must be 4 .*extra_source='maxpool'"):
        FPN([8, 16, 32], 16, num_levels=5, extra_source="maxpool")
    with pytest.raises(ValueError, match=r"num_levels must be 3 .*extra_source='none'"):
        FPN([8, 16, 32], 16, num_levels=4, extra_source="none")
    with pytest.raises(ValueError, match="norm must be one of"):
        FPN([8, 16, 32], 16, norm="batchnorm")
    with pytest.raises(ValueError, match="norm='gn' needs out_channels divisible by 32"):
        FPN([8, 16, 32], 48, norm="gn")
    with pytest.raises(ValueError, match="in_channels must be positive"):
        FPN([], 16)


# --- head ------------------------------------------------------------------------

def test_head_shapes_and_initialisation():
    head = FCOSHead(in_channels=32, num_classes=7, num_levels=3, num_convs=2)
    features = [torch.randn(2, 32, 8, 12), torch.randn(2, 32, 4, 6), torch.randn(2, 32, 2, 3)]
    cls_logits, box, ctr = head(features)
    num_points = 8 * 12 + 4 * 6 + 2 * 3
    assert cls_logits.shape == (2, num_points, 7) and box.shape == (2, num_points, 4)
    assert ctr.shape == (2, num_points)
    # Prior probability 0.01 ([focal] Sec. 3.3) and centerness bias 0 ([cs771-hw3]).
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
