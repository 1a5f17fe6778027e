"""Any sampled architecture builds a decoder with FCOSHead's output shapes; the ops behave."""

import random

import pytest
import torch

from fcos_from_scratch.nas.decoder import SearchedDecoder, SearchedTower, build_op
from fcos_from_scratch.nas.space import (DEFORM_3X3, FIG4_ARCHITECTURE, OPS, SKIP, Architecture,
                                         sample_architecture)

K, WIDTH = 3, 8
IN_CHANNELS = (6, 10, 12)


def tiny_features(batch=1, size=16, seed=0):
    """c3, c4, c5 of a (size x size) image at strides 8, 16, 32 (odd sizes on purpose)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(3, 2), (2, 1), (1, 1)] if size == 16 else [(5, 3), (3, 2), (2, 1)]
    return [torch.randn(batch, c, h, w, generator=g) for c, (h, w) in zip(IN_CHANNELS, sizes)]


def expected_points(features):
    """sum over P3..P7 of H_l * W_l, with P6, P7 at ceil(H / 2) of the level below."""
    total, (h, w) = 0, (0, 0)
    for f in features:
        h, w = f.shape[-2:]
        total += h * w
    for _ in range(2):
        h, w = (h + 1) // 2, (w + 1) // 2
        total += h * w
    return total


def check_sampled_architectures(count, seed):
    rng = random.Random(seed)
    features = tiny_features(batch=2, size=40)  # batch 2: GroupNorm needs > 1 value on the 1 x 1 P7
    N = expected_points(features)
    for _ in range(count):
        model = SearchedDecoder(sample_architecture(rng), IN_CHANNELS, K, channels=WIDTH).eval()
        cls, box, ctr = model(features)
        assert cls.shape == (2, N, K) and box.shape == (2, N, 4) and ctr.shape == (2, N)
        assert torch.isfinite(cls).all() and (box >= 0).all()


@torch.no_grad()
def test_sampled_architectures_build_and_run():
    check_sampled_architectures(25, seed=0)


@pytest.mark.slow
@torch.no_grad()
def test_hundreds_of_sampled_architectures_build_and_run():
    check_sampled_architectures(300, seed=1)  # about 0.1 s each on a busy 2-core machine


def test_fig4_decoder_trains_end_to_end():
    torch.manual_seed(0)
    model = SearchedDecoder(FIG4_ARCHITECTURE, IN_CHANNELS, K, channels=WIDTH)
    features = [f.requires_grad_() for f in tiny_features(batch=2, size=40)]
    cls, box, ctr = model(features)
    (cls.sum() + box.sum() + ctr.sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert features[0].grad.abs().sum() > 0


def test_ops_preserve_shape_and_deformable_starts_as_a_plain_conv():
    x = torch.randn(2, WIDTH, 7, 5)
    for op in range(len(OPS)):
        assert build_op(op, WIDTH)(x).shape == x.shape
    assert build_op(SKIP, WIDTH)(x) is x
    deform = build_op(DEFORM_3X3, WIDTH)
    plain = torch.nn.functional.conv2d(x, deform.conv.weight, padding=1) * 0.5  # offsets 0, mask 0.5
    torch.testing.assert_close(deform(x), torch.relu(deform.norm(plain)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="op must be"):
        build_op(5, WIDTH)


def test_weight_sharing_index_gives_level_specific_copies():
    base = FIG4_ARCHITECTURE.to_dict()
    arch = Architecture.from_dict(dict(base, share_from=[0, 1, 2, 6, 0]))
    tower = SearchedTower(arch, WIDTH)
    # layer j has a copy for each level with j < i_l, and a shared copy if any level shares it
    assert set(tower.copies[0]) == {"1", "2", "3", "shared"}
    assert set(tower.copies[1]) == {"2", "3", "shared"}
    assert set(tower.copies[5]) == {"3", "shared"}
    all_specific = Architecture.from_dict(dict(base, share_from=[6] * 5))
    assert all("shared" not in layer for layer in SearchedTower(all_specific, WIDTH).copies)
    fully_shared = SearchedTower(FIG4_ARCHITECTURE, WIDTH)
    assert all(set(layer) == {"shared"} for layer in fully_shared.copies)
    x = torch.randn(1, WIDTH, 4, 4)
    torch.testing.assert_close(fully_shared(x, 0), fully_shared(x, 4))  # same weights everywhere
