"""``smooth_l1_loss`` (ops/losses.py) and ``scale_boxes`` (ops/boxes.py).

smooth_l1_loss: hand values, and values and gradients equal to
``torch.nn.functional.smooth_l1_loss`` (PyTorch is a runtime dependency, so it is
compared live). scale_boxes: hand values, a round trip, and values frozen from
torchvision 0.29's ``resize_boxes`` by tests/reference/make_scale_boxes_refs.py.
"""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcos_from_scratch.ops import scale_boxes, smooth_l1_loss
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "scale_boxes_refs.pt")
# beta = 1/9: torchvision's Faster R-CNN RPN and box head; 0: plain L1.
BETAS = [1.0, 1 / 9, 0.0, 2.5]


# ---------------------------------------------------------------------------
# smooth_l1_loss
# ---------------------------------------------------------------------------

def test_smooth_l1_by_hand():
    x = torch.tensor([0.0, 0.5, -0.5, 1.0, 3.0, -2.0], dtype=torch.float64)
    # beta = 1: |x| < 1 -> 0.5 x^2;  else |x| - 0.5
    expected = torch.tensor([0.0, 0.125, 0.125, 0.5, 2.5, 1.5], dtype=torch.float64)
    torch.testing.assert_close(smooth_l1_loss(x, torch.zeros_like(x)), expected, rtol=0, atol=0)
    # beta = 2: |x| < 2 -> 0.5 x^2 / 2 = x^2 / 4;  else |x| - 1
    expected = torch.tensor([0.0, 0.0625, 0.0625, 0.25, 2.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(smooth_l1_loss(x, torch.zeros_like(x), beta=2.0), expected,
                               rtol=0, atol=0)
    # beta = 0: L1;  input - target = (1 - 4) -> 3
    assert smooth_l1_loss(torch.tensor([1.0]), torch.tensor([4.0]), beta=0.0).item() == 3.0


def test_smooth_l1_pieces_meet_at_beta():
    beta = 0.25
    x = torch.tensor([beta - 1e-9, beta, beta + 1e-9], dtype=torch.float64, requires_grad=True)
    loss = smooth_l1_loss(x, torch.zeros_like(x), beta=beta)
    loss.sum().backward()
    # value 0.5 beta at |x| = beta from both sides (moving by 1e-9 at slope 1), slope 1
    torch.testing.assert_close(loss.detach(), torch.full((3,), 0.5 * beta, dtype=torch.float64),
                               rtol=0, atol=1.1e-9)
    torch.testing.assert_close(x.grad, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_smooth_l1_equals_pytorch_values_and_gradients(beta, dtype, reduction):
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(6, 7, generator=generator, dtype=torch.float64).to(dtype)
    input = target + (torch.randn(6, 7, generator=generator, dtype=torch.float64) * 2 * max(beta, 0.1)).to(dtype)
    input[0, :3] = target[0, :3]  # x = 0: zero loss and gradient
    input[1, 0] = target[1, 0] + beta  # on the joint (up to rounding)
    ours_in, ours_tg = input.clone().requires_grad_(True), target.clone().requires_grad_(True)
    ref_in, ref_tg = input.clone().requires_grad_(True), target.clone().requires_grad_(True)
    ours = smooth_l1_loss(ours_in, ours_tg, beta=beta, reduction=reduction)
    expected = F.smooth_l1_loss(ref_in, ref_tg, beta=beta, reduction=reduction)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert torch.equal(ours, expected)  # same arithmetic in the same order
    grad_output = torch.rand(ours.shape, generator=generator, dtype=torch.float64).to(dtype)
    ours.backward(grad_output)
    expected.backward(grad_output)
    # Gradients differ only in rounding (autograd vs PyTorch's fused backward).
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(ours_tg.grad, ref_tg.grad, rtol=tol, atol=tol)


def test_smooth_l1_empty_input_backpropagates():
    x = torch.zeros(0, 4, requires_grad=True)
    assert smooth_l1_loss(x, torch.zeros(0, 4), reduction="none").shape == (0, 4)
    mean = smooth_l1_loss(x, torch.zeros(0, 4), beta=1 / 9, reduction="mean")
    assert mean.item() == 0.0  # PyTorch: NaN; every loss in ops/losses.py gives 0
    mean.backward()
    assert x.grad.shape == (0, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=-0.1), "beta"),
    (dict(beta=float("nan")), "beta"),
    (dict(reduction="avg"), "reduction"),
])
def test_smooth_l1_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        smooth_l1_loss(torch.zeros(3), torch.zeros(3), **kwargs)


def test_smooth_l1_shape_mismatch_names_both():
    with pytest.raises(ValueError, match="input and target"):
        smooth_l1_loss(torch.zeros(3, 4), torch.zeros(4, 3))


# ---------------------------------------------------------------------------
# scale_boxes
# ---------------------------------------------------------------------------

def test_scale_boxes_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    # (H, W) 100 x 200 -> 50 x 600: y * 50 / 100 = y / 2, x * 600 / 200 = 3 x
    expected = torch.tensor([[30.0, 10.0, 90.0, 20.0]])
    assert torch.equal(scale_boxes(boxes, (100, 200), (50, 600)), expected)
    # integer boxes give float32, as torchvision (int64 * float32 0-dim tensor)
    out = scale_boxes(torch.tensor([[1, 2, 3, 4]]), (2, 4), (3, 2))  # y * 1.5, x * 0.5
    assert out.dtype == torch.float32
    assert out.tolist() == [[0.5, 3.0, 1.5, 6.0]]


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)


def test_scale_boxes_fixture_records_versions(refs):
    assert refs["versions"]["torchvision"].startswith("0.29")


def test_scale_boxes_equals_torchvision_bit_for_bit(refs):
    for case in refs["cases"]:
        out = scale_boxes(case["boxes"], case["from_size"], case["to_size"])
        assert out.dtype == case["expected"].dtype
        assert torch.equal(out, case["expected"]), (case["from_size"], case["to_size"], out.dtype)


def test_float32_ratio_matters_in_float64(refs):
    # The reason for the float32 ratio: in float64 a ratio 800 / 333 computed in
    # double gives different bits, so the previous test can tell the two apart.
    differs = False
    for case in refs["cases"]:
        if case["boxes"].dtype != torch.float64:
            continue
        (from_h, from_w), (to_h, to_w) = case["from_size"], case["to_size"]
        double = case["boxes"] * torch.tensor([to_w / from_w, to_h / from_h] * 2, dtype=torch.float64)
        differs |= not torch.equal(double, case["expected"])
    assert differs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_boxes_round_trip(dtype):
    generator = torch.Generator().manual_seed(1)
    boxes = (torch.rand(20, 4, generator=generator, dtype=torch.float64) * 500).to(dtype)
    there = scale_boxes(boxes, (333, 500), (800, 1201))
    back = scale_boxes(there, (800, 1201), (333, 500))
    # two float32 ratios: each off by at most half an ulp of float32
    torch.testing.assert_close(back, boxes, rtol=3e-7, atol=0)
    assert torch.equal(scale_boxes(boxes, (480, 640), (480, 640)), boxes)  # same size: identity


def test_scale_boxes_sizes_are_height_then_width():
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert scale_boxes(box, (1, 1), (2, 3)).tolist() == [[0.0, 0.0, 3.0, 2.0]]  # x * W, y * H


def test_scale_boxes_empty_and_size_types():
    assert scale_boxes(torch.zeros(0, 4), (10, 10), (20, 20)).shape == (0, 4)
    box = torch.tensor([[1.0, 1.0, 2.0, 2.0]])
    from_size = torch.Size([4, 4])
    assert torch.equal(scale_boxes(box, from_size, [np.int64(8), 8]),
                       scale_boxes(box, (4, 4), (8, 8)))


@pytest.mark.parametrize("boxes, from_size, to_size, match", [
    (torch.zeros(3, 5), (1, 1), (1, 1), "boxes"),
    (torch.zeros(3, 4), (0, 10), (1, 1), "from_size"),
    (torch.zeros(3, 4), (10, 10), (10,), "to_size"),
    (torch.zeros(3, 4), (10, 10), (10, float("inf")), "to_size"),
])
def test_scale_boxes_bad_input_names_the_argument(boxes, from_size, to_size, match):
    with pytest.raises(ValueError, match=match):
        scale_boxes(boxes, from_size, to_size)
