"""Box coders: frozen torchvision values, round trips, the LTRB point coder, edge cases.

The fixture is written by tests/reference/make_detection_parts_refs.py (torchvision 0.29).
"""

import math
import os

import pytest
import torch

from fcos_from_scratch.ops import BoxCoder, BoxLinearCoder, decode_ltrb, encode_ltrb
from fcos_from_scratch.ops.box_coders import ltrb_to_local_box
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "detection_parts_refs.pt")


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)


def random_boxes(generator, n, dtype=torch.float64):
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 100
    wh = 1 + torch.rand(n, 2, generator=generator, dtype=dtype) * 50
    return torch.cat([xy, xy + wh], dim=1)


# ------------------------------------------------------------------ BoxCoder reference

def assert_within_ulps(actual, expected, ulps=4):
    """Equal up to ``ulps`` units in the last place (relative to the largest value).

    On the machine that froze the fixture our coder is bit-identical to torchvision's;
    on another CPU torch's vectorised ``log``/``exp`` may round differently (measured
    up to 2 ulps on an AVX-512 AMD EPYC), so the frozen values are matched to 4 ulps.
    """
    eps = torch.finfo(expected.dtype).eps
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=ulps * eps, atol=ulps * eps * scale)


def test_box_coder_equals_torchvision_to_the_last_bits(refs):
    for case in refs["box_coder"]["cases"]:
        coder = BoxCoder(case["weights"], case["bbox_xform_clip"])
        gt, anchors, codes, split = (case["reference_boxes"], case["proposals"],
                                     case["rel_codes"], case["split"])
        assert_within_ulps(coder.encode_single(gt, anchors), case["encode_single"])
        encoded = coder.encode(list(gt.split(split)), list(anchors.split(split)))
        assert len(encoded) == len(split)
        for a, b in zip(encoded, case["encode"]):
            assert_within_ulps(a, b)
        assert_within_ulps(coder.decode_single(codes, anchors), case["decode_single"])
        decoded = coder.decode(codes, list(anchors.split(split)))
        assert decoded.shape == (20, 3, 4) and decoded.dtype == codes.dtype
        assert_within_ulps(decoded, case["decode"])


def test_box_coder_empty_as_torchvision(refs):
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    decoded = coder.decode(torch.zeros(0, 12), [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert decoded.shape == refs["box_coder"]["empty"]["decode"].shape == (0, 12)
    (encoded,) = coder.encode([torch.zeros(0, 4)], [torch.zeros(0, 4)])
    assert encoded.shape == (0, 4)


def test_box_coder_by_hand():
    # Anchor centre (5, 5), size 10 x 10; target centre (7, 4), size 20 x 5.
    # t_x = 10 * (7 - 5) / 10 = 2, t_y = 10 * (4 - 5) / 10 = -1,
    # t_w = 5 * log(20 / 10) = 5 log 2, t_h = 5 * log(5 / 10) = -5 log 2.
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    target = torch.tensor([[-3.0, 1.5, 17.0, 6.5]], dtype=torch.float64)
    codes = coder.encode_single(target, anchor)
    expected = torch.tensor([[2.0, -1.0, 5 * math.log(2), -5 * math.log(2)]], dtype=torch.float64)
    torch.testing.assert_close(codes, expected, rtol=0, atol=1e-15)


# ------------------------------------------------------------------ BoxCoder properties

@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    anchors, targets = random_boxes(g, 50), random_boxes(g, 50)
    coder = BoxCoder(weights)
    decoded = coder.decode_single(coder.encode_single(targets, anchors), anchors)
    torch.testing.assert_close(decoded, targets, rtol=0, atol=1e-12)


def test_box_coder_clamps_only_the_size_deltas():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(4.0))
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    codes = torch.tensor([[3.0, 0.0, 100.0, -2.0]], dtype=torch.float64)
    (box,) = coder.decode_single(codes, anchor).tolist()
    # Centre moves by 3 widths to x = 35 (no clamp); width clamps to 4 * 10 = 40;
    # height exp(-2) * 10 (the clamp is an upper bound only).
    half_h = 0.5 * math.exp(-2) * 10
    assert box == pytest.approx([15.0, 5 - half_h, 55.0, 5 + half_h], abs=1e-12)
    assert torch.isfinite(coder.decode_single(torch.full((1, 4), 1e4), anchor.float())).all()


def test_box_coder_class_specific_layout_matches_per_class_decoding():
    g = torch.Generator().manual_seed(1)
    anchors = random_boxes(g, 6)
    codes = torch.randn(6, 3 * 4, generator=g, dtype=torch.float64)  # (N, 4K), K = 3
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    decoded = coder.decode(codes, [anchors[:4], anchors[4:]])  # (N, K, 4)
    for k in range(3):
        per_class = coder.decode_single(codes[:, 4 * k:4 * k + 4], anchors)  # (N, 4)
        assert torch.equal(decoded[:, k], per_class)


def test_box_coder_decode_casts_boxes_to_code_dtype():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    out = coder.decode_single(torch.zeros(2, 4, dtype=torch.float64), torch.ones(2, 4))
    assert out.dtype == torch.float64


def test_box_coder_backpropagates_through_empty_input():
    codes = torch.zeros(0, 4, requires_grad=True)
    BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(codes, torch.zeros(0, 4)).sum().backward()
    assert codes.grad.shape == (0, 4)


# ------------------------------------------------------------------ BoxLinearCoder

def test_box_linear_coder_equals_torchvision_bit_for_bit(refs):
    for case in refs["box_linear_coder"]:
        coder = BoxLinearCoder(case["normalize_by_size"])
        anchors, gt, codes = case["reference_boxes"], case["proposals"], case["rel_codes"]
        assert torch.equal(coder.encode(anchors, gt), case["encode"])
        assert torch.equal(coder.decode(codes, anchors), case["decode"])


@pytest.mark.parametrize("normalize", [True, False])
def test_box_linear_coder_round_trip(normalize):
    g = torch.Generator().manual_seed(2)
    anchors, targets = random_boxes(g, 40).reshape(2, 20, 4), random_boxes(g, 40).reshape(2, 20, 4)
    coder = BoxLinearCoder(normalize)
    decoded = coder.decode(coder.encode(anchors, targets), anchors)
    torch.testing.assert_close(decoded, targets, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ LTRB point coder

def points_and_strides():
    """Cell-centre points of two levels with power-of-two strides, as a detector uses them."""
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 28.0], [8.0, 8.0], [24.0, 40.0]])
    strides = torch.tensor([8.0, 8.0, 8.0, 16.0, 16.0])
    return points, strides


def test_ltrb_equals_linear_coder_on_stride_squares():
    # The reference box of a point is the s x s square centred on it: its centre is the
    # point and its size the stride, so both coders do the same arithmetic.
    g = torch.Generator().manual_seed(4)
    points, strides = points_and_strides()
    squares = torch.cat([points - strides[:, None] / 2, points + strides[:, None] / 2], dim=1)
    boxes = random_boxes(g, 5, dtype=torch.float32)
    coder = BoxLinearCoder(normalize_by_size=True)
    ltrb = encode_ltrb(points, boxes, strides)
    assert torch.equal(ltrb, coder.encode(squares, boxes))
    assert torch.equal(decode_ltrb(points, ltrb, strides), coder.decode(ltrb, squares))


def test_ltrb_by_hand_and_round_trip():
    # Point (12, 4), stride 8, box (0, 2, 20, 30): (12, 2, 8, 26) / 8.
    points, strides = torch.tensor([[12.0, 4.0]]), torch.tensor([8.0])
    box = torch.tensor([[0.0, 2.0, 20.0, 30.0]])
    ltrb = encode_ltrb(points, box, strides)
    assert ltrb.tolist() == [[1.5, 0.25, 1.0, 3.25]]
    assert torch.equal(decode_ltrb(points, ltrb, strides), box)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("call, match", [
    (lambda: BoxCoder((1.0, 1.0, 1.0)), "weights"),
    (lambda: BoxCoder((1.0, 1.0, 0.0, 1.0)), "weights"),
    (lambda: BoxCoder((1.0,) * 4).encode_single(torch.zeros(3, 4), torch.zeros(2, 4)), "proposals has 2"),
    (lambda: BoxCoder((1.0,) * 4).encode_single(torch.zeros(3, 5), torch.zeros(3, 4)), "reference_boxes"),
    (lambda: BoxCoder((1.0,) * 4).encode(torch.zeros(3, 4), [torch.zeros(3, 4)]), "reference_boxes"),
    (lambda: BoxCoder((1.0,) * 4).decode(torch.zeros(3, 4), torch.zeros(3, 4)), "boxes must be a list"),
    (lambda: BoxCoder((1.0,) * 4).decode_single(torch.zeros(3, 6), torch.zeros(3, 4)), "rel_codes"),
    (lambda: BoxLinearCoder().encode(torch.zeros(3, 3), torch.zeros(3, 4)), "reference_boxes"),
    (lambda: BoxLinearCoder().decode(torch.zeros(3, 4), torch.zeros(3, 2)), "boxes"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_ltrb_to_local_box_by_hand_and_its_giou_is_translation_free():
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert ltrb_to_local_box(ltrb).tolist() == [[-1.0, -2.0, 3.0, 4.0]]
    # Two predictions at the same point: GIoU in the local frame equals GIoU of the
    # decoded pixel boxes (translation invariance), so no decoding is needed.
    from fcos_from_scratch.ops import generalized_box_iou_loss
    point, stride = torch.tensor([[50.0, 40.0]]), torch.tensor([8.0])
    other = torch.tensor([[2.0, 1.0, 2.0, 5.0]])
    local = generalized_box_iou_loss(ltrb_to_local_box(ltrb), ltrb_to_local_box(other))
    pixels = generalized_box_iou_loss(decode_ltrb(point, ltrb, stride), decode_ltrb(point, other, stride))
    assert torch.allclose(local, pixels)


# ------------------------------------------------------------------ SSD's variances

def test_box_coder_with_weights_10_10_5_5_is_ssds_code_with_variances_0_1_0_2():
    # [ssd]'s encode (its code's ``encode``): g_cx = (cx - a_cx) / (v0 a_w), g_w = log(w / a_w) / v1
    # with variances (v0, v1) = (0.1, 0.2); decode is its inverse.
    generator = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.rand(20, 2, generator=generator) * 100,
                         torch.rand(20, 2, generator=generator) * 50 + 5], dim=1)  # (cx, cy, w, h)
    boxes = torch.cat([torch.rand(20, 2, generator=generator) * 100,
                       torch.rand(20, 2, generator=generator) * 50 + 5], dim=1)
    variances = (0.1, 0.2)
    ssd_code = torch.cat([(boxes[:, :2] - anchors[:, :2]) / (variances[0] * anchors[:, 2:]),
                          torch.log(boxes[:, 2:] / anchors[:, 2:]) / variances[1]], dim=1)
    to_xyxy = lambda b: torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], dim=1)  # noqa: E731
    coder = BoxCoder((1 / variances[0], 1 / variances[0], 1 / variances[1], 1 / variances[1]))
    assert coder.weights == (10.0, 10.0, 5.0, 5.0)
    ours = coder.encode_single(to_xyxy(boxes), to_xyxy(anchors))
    assert torch.allclose(ours, ssd_code, atol=1e-4)
    assert torch.allclose(coder.decode_single(ssd_code, to_xyxy(anchors)), to_xyxy(boxes), atol=1e-3)
