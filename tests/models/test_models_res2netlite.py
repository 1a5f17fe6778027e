"""Res2NetLite ([refinedetlite] Table 1) and the MAC counter it is measured with."""

import pytest
import torch
from torch import nn

from fcos_from_scratch.models.backbones import BACKBONES, build_backbone
from fcos_from_scratch.models.backbones.res2netlite import (
    DownBottleneck,
    Res2Block,
    Res2NetLite,
    ResBlock,
)
from fcos_from_scratch.models.complexity import count_macs, count_parameters


def _meta(*args, **kwargs):
    """A Res2NetLite on the meta device: shapes without memory or init time."""
    with torch.device("meta"):
        return Res2NetLite(*args, **kwargs)


# --- the pinned layout -------------------------------------------------------------------

def test_res2netlite72_arm_features_at_320_are_the_papers():
    # [refinedetlite] Sec. 3.1-3.2: {20, 10, 5, 3} pixels with {576, 1152, 512, 512} channels.
    model = _meta(72)
    assert model.out_channels == (576, 1152, 512, 512)
    assert model.strides == (16, 32, 64, 128)
    features = model(torch.zeros(1, 3, 320, 320, device="meta"))
    assert [tuple(f.shape) for f in features] == [
        (1, 576, 20, 20), (1, 1152, 10, 10), (1, 512, 5, 5), (1, 512, 3, 3)]


def test_stage_layout_blocks_and_widths():
    model = _meta(72)
    # Stage0 = conv 3×3/2 to 32 + max-pool 3×3/2; stages: Bottleneck + 3 / 7 / 3 blocks.
    assert model.stage0.conv.conv.out_channels == 32 and model.stage0.conv.conv.stride == (2, 2)
    assert isinstance(model.stage0.pool, nn.MaxPool2d)
    for name, count, width in [("stage1", 3, 288), ("stage2", 7, 576), ("stage3", 3, 1152)]:
        stage = getattr(model, name)
        assert isinstance(stage[0], DownBottleneck) and stage[0].expand.conv.out_channels == width
        assert [type(b) for b in stage[1:]] == [Res2Block] * count, name
    assert isinstance(model.input_bn, nn.BatchNorm2d) and model.input_bn.num_features == 3
    # Res2Blocks keep their width; no conv has more than 2 groups (no depth-wise convs).
    groups = {m.groups for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert groups == {1, 2}


def test_classical_resblock_baseline_has_the_same_stages():
    res2, res = _meta(72), _meta(72, block="res")
    assert res.out_channels == res2.out_channels
    assert [type(b) for b in res.stage2[1:]] == [ResBlock] * 7
    features = res(torch.zeros(1, 3, 320, 320, device="meta"))
    assert [f.shape[-1] for f in features] == [20, 10, 5, 3]


@pytest.mark.parametrize("width, extras, expected", [
    (24, (128, 128), (192, 384, 128, 128)),  # CPU width: 8c, 16c, extras as given
    (32, (512, 512), (256, 512, 512, 512)),
    (16, (), (128, 256)),  # no extras: stage 2 and stage 3 only
])
def test_small_widths_scale_out_channels(width, extras, expected):
    torch.manual_seed(0)
    model = Res2NetLite(width, extra_channels=extras).eval()
    assert model.out_channels == expected
    with torch.no_grad():
        features = model(torch.rand(2, 3, 64, 96))
    for f, c, s in zip(features, expected, (16, 32, 64, 128)):
        assert f.shape[:2] == (2, c)
    assert [tuple(f.shape[-2:]) for f in features] == [(4, 6), (2, 3), (1, 2), (1, 1)][: len(expected)]


@pytest.mark.parametrize("first, expected, strides", [
    (1, (64, 128, 256, 128), (8, 16, 32, 64)),  # + the stride-8 stage 1 (digits presets)
    (2, (128, 256, 128), (16, 32, 64)),  # [refinedetlite]
    (3, (256, 128), (32, 64)),
])
def test_first_source_stage_adds_or_drops_the_fine_stages(first, expected, strides):
    torch.manual_seed(0)
    model = Res2NetLite(16, extra_channels=(128,), first_source_stage=first).eval()
    assert model.out_channels == expected and model.strides == strides
    with torch.no_grad():
        features = model(torch.rand(1, 3, 64, 96))
        stages = model.forward_stages(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == list(expected)
    ceil = lambda n, s: -(-n // s)  # noqa: E731  each stride-2 step rounds up
    assert [tuple(f.shape[-2:]) for f in features] == [(ceil(64, s), ceil(96, s)) for s in strides]
    assert len(stages) == 3  # the stages run whatever the sources


def test_classify_224_gives_logits_and_needs_a_classifier():
    torch.manual_seed(0)
    model = Res2NetLite(16, extra_channels=(), num_classes=5).eval()
    assert model.classify(torch.rand(2, 3, 224, 224)).shape == (2, 5)
    with pytest.raises(ValueError, match="num_classes > 0"):
        Res2NetLite(16, extra_channels=()).classify(torch.rand(1, 3, 224, 224))


# --- the blocks ---------------------------------------------------------------------------

def test_res2block_is_the_hierarchical_cascade():
    # [res2net] Eq. (1) written out by hand: y1 = x1, y2 = K2(x2), y3 = K3(x3 + y2), ...
    torch.manual_seed(0)
    block = Res2Block(32, scale=4, groups=2).eval()
    nn.init.normal_(block.expand.bn.weight)  # undo zero-γ so the branch is visible
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        x1, x2, x3, x4 = torch.split(block.reduce(x), 2, dim=1)
        y2 = block.convs[0](x2)
        y3 = block.convs[1](x3 + y2)
        y4 = block.convs[2](x4 + y3)
        expected = torch.relu(block.expand(torch.cat([x1, y2, y3, y4], 1)) + x)
        torch.testing.assert_close(block(x), expected)


def test_residual_blocks_start_as_identity_and_still_get_gradients():
    # Zero γ ([bag-of-tricks]): the branch is silent at init, so a block is relu(x).
    torch.manual_seed(0)
    for block in (Res2Block(32), ResBlock(32)):
        x = torch.randn(2, 32, 4, 4)
        torch.testing.assert_close(block(x), torch.relu(x))
        block(x).sum().backward()
        assert block.expand.bn.weight.grad.abs().sum() > 0  # γ itself learns
    down = DownBottleneck(8, 16)
    assert down(torch.randn(1, 8, 5, 5)).shape == (1, 16, 3, 3)  # ceil(5 / 2)


def test_backward_reaches_the_input_bn():
    torch.manual_seed(0)
    model = Res2NetLite(8, extra_channels=(16,)).train()
    features = model(torch.rand(2, 3, 64, 64))
    sum(f.sum() for f in features).backward()
    assert model.input_bn.weight.grad is not None
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=30), "width must be"),  # c = 30: 30 / 4 splits is not whole
    (dict(width=72, block="resnet"), "block must be"),
    (dict(width=72, groups=4), "groups must be 1 or 2"),
    (dict(width=72, scale=1), "scale must be"),
    (dict(width=72, extra_channels=(510,)), "extra_channels"),
    (dict(width=72, num_classes=-1), "num_classes"),
    (dict(width=72, first_source_stage=4), "first_source_stage"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _meta(**kwargs)


def test_rejects_non_image_input():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        _meta(8)(torch.zeros(1, 4, 32, 32, device="meta"))


# --- as a registered trunk -----------------------------------------------------------------

def test_registered_trunk_taps_stage_outputs():
    assert "res2netlite72" in BACKBONES
    trunk = build_backbone("res2netlite72", frozen_bn=False, feature_names=("C3", "C4", "C5"))
    assert trunk.out_channels == [288, 576, 1152] and trunk.strides == [8, 16, 32]
    model = BACKBONES["res2netlite72"]()
    assert model.extras is not None and len(model.extras) == 0 and model.num_classes == 1000


# --- complexity ---------------------------------------------------------------------------

def test_count_macs_by_hand():
    # conv 3×3, 4 -> 6, groups 2, on 1×4×5×5, stride 1 pad 1: each of 6·5·5 = 150 outputs
    # reads (4/2)·3·3 = 18 inputs -> 2700. Linear 6 -> 3 on 2 rows: 6 · 3 · 2 = 36.
    # ConvTranspose 2×2/2, 6 -> 2 on 1×6×5×5: each of 150 inputs feeds 2·2·2 = 8 -> 1200.
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    assert count_macs(conv, torch.zeros(1, 4, 5, 5)) == 2700
    assert count_macs(conv, torch.zeros(3, 4, 5, 5)) == 3 * 2700  # linear in the batch
    assert count_macs(nn.Linear(6, 3), torch.zeros(2, 6)) == 36
    assert count_macs(nn.ConvTranspose2d(6, 2, 2, stride=2), torch.zeros(1, 6, 5, 5)) == 1200
    net = nn.Sequential(conv, nn.BatchNorm2d(6), nn.ReLU())
    assert count_macs(net, torch.zeros(1, 4, 5, 5), by_layer=True) == {"0": 2700}
    assert not conv._forward_hooks  # hooks removed


def test_res2netlite72_macs_and_parameters_at_320():
    # Res2NetLite72 + two extras on 320×320: 1.520 GMACs, 6.98 M parameters; the
    # classical-ResBlock baseline 1.915 GMACs (the Res2Block's split 3×3s are cheaper).
    # Counted on the meta device: hooks see shapes only, so this is fast.
    x = torch.zeros(1, 3, 320, 320, device="meta")
    macs = count_macs(_meta(72), x)
    assert macs == pytest.approx(1.520e9, rel=1e-3)
    assert count_macs(_meta(72, block="res"), x) == pytest.approx(1.915e9, rel=1e-3)
    assert count_parameters(_meta(72)) == pytest.approx(6.98e6, rel=1e-3)
    assert count_macs(_meta(24, extra_channels=(128, 128)), x) < macs / 5
