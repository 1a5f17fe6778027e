"""The plain-loop references (``*_reference``) against the fast ops they define.

Each reference is checked three ways: hand-computed values (arithmetic in the
comments), equality with its fast op on random and edge-case inputs, and, where a
frozen torchvision fixture or an external port exists, against that too, so the
reference is not merely equal to the code it is meant to check.
"""

import math
import os

import numpy as np
import pytest
import torch

from fcos_from_scratch.ops import (
    batched_nms,
    batched_nms_reference,
    box_iou,
    box_iou_reference,
    generalized_box_iou,
    generalized_box_iou_reference,
    nms_reference,
    roi_align,
    roi_align_reference,
    soft_nms,
    soft_nms_reference,
)

from soft_nms_reference import cpu_soft_nms  # noqa: E402
from conftest import FIXTURES

PAIRWISE = [(box_iou, box_iou_reference), (generalized_box_iou, generalized_box_iou_reference)]
# float64: same operations in the same order, so equal to rounding; float32: the
# reference works in doubles and rounds once, the fast op rounds every step.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6}


def random_boxes(generator, n, dtype=torch.float64, scale=40.0, flat_fraction=0.0):
    """(n, 4) xyxy boxes; a ``flat_fraction`` of them have zero width or height."""
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2
    wh[torch.rand(n, 2, generator=generator) < flat_fraction] = 0.0
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


# ---------------------------------------------------------------------------
# box_iou_reference, generalized_box_iou_reference
# ---------------------------------------------------------------------------

def test_iou_and_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0],    # inter 1, union 4 + 4 - 1 = 7, C = [0, 3]^2 = 9
                      [2.0, 0.0, 4.0, 2.0],    # touches: inter 0, union 8, C = 4 x 2 = 8
                      [0.0, 0.0, 2.0, 2.0],    # identical
                      [3.0, 3.0, 3.0, 3.0]],   # a point: inter 0, union 4, C = 3 x 3 = 9
                     dtype=torch.float64)
    iou = torch.tensor([[1 / 7, 0.0, 1.0, 0.0]], dtype=torch.float64)
    giou = torch.tensor([[1 / 7 - (9 - 7) / 9,   # IoU - |C \ (A u B)| / |C|
                          0.0 - (8 - 8) / 8,
                          1.0,
                          0.0 - (9 - 4) / 9]], dtype=torch.float64)
    torch.testing.assert_close(box_iou_reference(a, b), iou, rtol=0, atol=1e-15)
    torch.testing.assert_close(generalized_box_iou_reference(a, b), giou, rtol=0, atol=1e-15)


def test_two_identical_points_give_zero_not_nan():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    # union 0 -> IoU 0; enclosing box 0 -> penalty 0 (docs/CONVENTIONS.md)
    assert box_iou_reference(point, point).item() == 0.0
    assert generalized_box_iou_reference(point, point).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fast, reference", PAIRWISE)
def test_pairwise_reference_equals_fast_op(fast, reference, dtype):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        boxes1 = random_boxes(generator, 9, dtype, flat_fraction=0.2)
        boxes2 = random_boxes(generator, 7, dtype, flat_fraction=0.2)
        boxes2[0] = boxes1[0]  # an identical pair: IoU exactly 1
        expected, got = fast(boxes1, boxes2), reference(boxes1, boxes2)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("fast, reference", PAIRWISE)
def test_pairwise_reference_equals_torchvision_fixture(fast, reference):
    case = torch.load(os.path.join(FIXTURES, "box_refs.pt"), weights_only=True)["pairwise_float64"]
    got = reference(case["boxes1"], case["boxes2"])
    torch.testing.assert_close(got, case[fast.__name__], rtol=0, atol=1e-12)


@pytest.mark.parametrize("fast, reference", PAIRWISE)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int16, torch.float16, torch.bfloat16])
def test_pairwise_reference_other_dtypes_give_float32(fast, reference, dtype):
    boxes = torch.tensor([[0, 0, 4, 4], [2, 2, 6, 8], [1, 1, 1, 1]]).to(dtype)
    got = reference(boxes, boxes)
    assert got.dtype == fast(boxes, boxes).dtype == torch.float32
    torch.testing.assert_close(got, fast(boxes, boxes), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fast, reference", PAIRWISE)
def test_pairwise_reference_empty_inputs(fast, reference):
    some, none = torch.rand(3, 4), torch.zeros(0, 4)
    assert reference(none, some).shape == (0, 3)
    assert reference(some, none).shape == (3, 0)
    assert reference(none, none).shape == (0, 0)


@pytest.mark.parametrize("reference", [box_iou_reference, generalized_box_iou_reference])
def test_pairwise_reference_bad_shape_names_the_argument(reference):
    with pytest.raises(ValueError, match="boxes2"):
        reference(torch.rand(2, 4), torch.rand(3, 5))


# ---------------------------------------------------------------------------
# nms_reference, batched_nms_reference
# ---------------------------------------------------------------------------

def test_batched_nms_reference_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],
                          [0.0, 0.0, 10.0, 9.0],   # IoU with box 0: 90 / 100 = 0.9
                          [0.0, 0.0, 10.0, 9.0]])  # same box as 1, but another category
    scores = torch.tensor([0.9, 0.8, 0.7])
    # category 0 = {0, 1}: 1 is suppressed by 0; category 1 = {2}: kept.
    assert batched_nms_reference(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [0, 2]
    # one category: nms_reference suppresses both.
    assert batched_nms_reference(boxes, scores, torch.tensor([4, 4, 4]), 0.5).tolist() == [0]


def test_batched_nms_reference_equals_batched_nms_with_ties():
    generator = torch.Generator().manual_seed(1)
    for trial in range(10):
        n = int(torch.randint(1, 80, (1,), generator=generator))
        boxes = random_boxes(generator, n, torch.float32, flat_fraction=0.1)
        scores = torch.rand(n, generator=generator).round(decimals=1)  # many ties
        idxs = torch.randint(-1, 4, (n,), generator=generator)  # negative ids are ids too
        threshold = [0.3, 0.5, 0.0, 0.7][trial % 4]
        assert torch.equal(batched_nms_reference(boxes, scores, idxs, threshold),
                           batched_nms(boxes, scores, idxs, threshold)), trial


def test_batched_nms_reference_single_category_is_nms_reference():
    generator = torch.Generator().manual_seed(2)
    boxes, scores = random_boxes(generator, 40), torch.rand(40, generator=generator)
    idxs = torch.full((40,), 7)
    assert torch.equal(batched_nms_reference(boxes, scores, idxs, 0.4),
                       nms_reference(boxes, scores, 0.4))


def test_batched_nms_reference_empty_and_bad_idxs():
    empty = batched_nms_reference(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms_reference(torch.rand(3, 4), torch.rand(3), torch.zeros(2, dtype=torch.int64), 0.5)


# ---------------------------------------------------------------------------
# soft_nms_reference
# ---------------------------------------------------------------------------

HAND_BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0],     # A
                           [0.0, 0.0, 10.0, 5.0],      # B: IoU(A, B) = 50 / 100 = 0.5
                           [20.0, 20.0, 30.0, 30.0]],  # C: far from both
                          dtype=torch.float64)
HAND_SCORES = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)


@pytest.mark.parametrize("method, keep, rescored", [
    ("linear", [0, 2, 1], [0.9, 0.7, 0.8 * (1 - 0.5)]),        # 0.5 > N_t = 0.3: s *= 1 - IoU
    ("gaussian", [0, 2, 1], [0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)]),  # s *= exp(-IoU^2 / sigma)
    ("hard", [0, 2], [0.9, 0.7]),                               # B's score -> 0 < 0.001: dropped
])
def test_soft_nms_reference_by_hand(method, keep, rescored):
    got_keep, got_scores = soft_nms_reference(HAND_BOXES, HAND_SCORES, 0.3, 0.5, 0.001, method)
    assert got_keep.tolist() == keep
    torch.testing.assert_close(got_scores, torch.tensor(rescored, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["linear", "gaussian", "hard"])
def test_soft_nms_reference_equals_soft_nms(method, dtype):
    generator = torch.Generator().manual_seed(3)
    for trial in range(8):
        n = int(torch.randint(0, 40, (1,), generator=generator))
        boxes = random_boxes(generator, n, dtype, flat_fraction=0.05)
        scores = torch.rand(n, generator=generator, dtype=torch.float64).to(dtype)
        args = ([0.3, 0.5, 0.0, 1.0][trial % 4], [0.5, 0.1][trial % 2],
                [0.001, 0.3][trial % 2], method)
        keep, rescored = soft_nms_reference(boxes, scores, *args)
        expected_keep, expected_scores = soft_nms(boxes, scores, *args)
        assert torch.equal(keep, expected_keep), trial
        assert rescored.dtype == expected_scores.dtype == dtype
        torch.testing.assert_close(rescored, expected_scores, rtol=0, atol=TOLERANCE[dtype])


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_reference_equals_bodla_port_in_float64(method):
    # The port with continuous widths and float64 arithmetic; every score starts
    # above the threshold and no two are equal, where the port's rules coincide with ours.
    generator = torch.Generator().manual_seed(4)
    boxes = random_boxes(generator, 30)
    scores = torch.rand(30, generator=generator, dtype=torch.float64) * 0.9 + 0.1
    keep, rescored = soft_nms_reference(boxes, scores, 0.3, 0.5, 0.001, method)
    port_keep, port_scores = cpu_soft_nms(boxes.numpy(), scores.numpy(), sigma=0.5, Nt=0.3,
                                          threshold=0.001, method=method, dtype=np.float64)
    assert keep.tolist() == list(port_keep)
    torch.testing.assert_close(rescored, torch.tensor(port_scores, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_soft_nms_reference_ties_empty_and_threshold():
    same = torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 3)
    keep, _ = soft_nms_reference(same, torch.tensor([0.5, 0.5, 0.5]), method="hard")
    assert keep.tolist() == [0]  # tie: lowest index first; the copies are removed
    keep, scores = soft_nms_reference(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == scores.shape == (0,) and keep.dtype == torch.int64
    keep, _ = soft_nms_reference(same, torch.tensor([0.1, 0.2, 0.3]), score_threshold=0.5)
    assert keep.numel() == 0  # every score below the threshold: nothing is kept


def test_soft_nms_reference_bad_method_names_the_argument():
    with pytest.raises(ValueError, match="method"):
        soft_nms_reference(torch.rand(2, 4), torch.rand(2), method="cubic")


# ---------------------------------------------------------------------------
# roi_align_reference
# ---------------------------------------------------------------------------

def linear_map(height, width, dtype=torch.float64):
    """(1, 1, H, W) map F(y, x) = 10 y + x at pixel centres y = row, x = col."""
    rows = torch.arange(height, dtype=dtype)[:, None]
    cols = torch.arange(width, dtype=dtype)[None, :]
    return (10 * rows + cols)[None, None]


def test_roi_align_reference_by_hand():
    # Bilinear interpolation reproduces a linear map, so a bin's average is F at
    # the average of its samples. Box [1, 3] x [1, 3], one bin, 2 x 2 samples at
    # 1.5 and 2.5 per axis: mean = F(2, 2) = 22.
    feature = linear_map(5, 6)
    box = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    out = roi_align_reference(feature, box, 1, sampling_ratio=2)
    assert out.shape == (1, 1, 1, 1) and out.item() == pytest.approx(22.0, abs=1e-12)
    # aligned: edges shift by -0.5 to [0.5, 2.5]; 2 x 2 bins of size 1, one sample
    # each at the bin centres 1.0 and 2.0: F = 10 y + x on that grid.
    out = roi_align_reference(feature, box, 2, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(out[0, 0], torch.tensor([[11.0, 12.0], [21.0, 22.0]],
                                                       dtype=torch.float64))


def random_rois(generator, k, batch, extent):
    """(k, 5) RoIs, some partly off the map, some tiny, zero-size or inverted."""
    xy = torch.rand(k, 2, generator=generator, dtype=torch.float64) * (extent + 4) - 3
    wh = torch.rand(k, 2, generator=generator, dtype=torch.float64) * extent * 0.8 - 1
    index = torch.randint(0, batch, (k, 1), generator=generator).to(torch.float64)
    return torch.cat([index, xy, xy + wh], dim=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio, spatial_scale", [(-1, 1.0), (2, 0.5), (0, 0.25)])
def test_roi_align_reference_equals_roi_align(aligned, sampling_ratio, spatial_scale):
    generator = torch.Generator().manual_seed(5)
    feature = torch.randn(2, 3, 5, 6, generator=generator, dtype=torch.float64)
    rois = random_rois(generator, 6, batch=2, extent=6 / spatial_scale)
    rois[0, 1:] = torch.tensor([2.0, 2.0, 2.0, 2.0]) / spatial_scale  # zero size
    rois[1, 1:] = torch.tensor([4.0, 3.0, 1.0, 1.0]) / spatial_scale  # inverted
    args = ((2, 3), spatial_scale, sampling_ratio, aligned)
    x_fast = feature.clone().requires_grad_(True)
    x_ref = feature.clone().requires_grad_(True)
    fast, ref = roi_align(x_fast, rois, *args), roi_align_reference(x_ref, rois, *args)
    torch.testing.assert_close(ref, fast, rtol=0, atol=1e-12)
    grad_output = torch.randn(fast.shape, generator=generator, dtype=torch.float64)
    fast.backward(grad_output)
    ref.backward(grad_output)
    torch.testing.assert_close(x_ref.grad, x_fast.grad, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def roi_align_refs():
    return torch.load(os.path.join(FIXTURES, "roi_align_refs.pt"), weights_only=True)


@pytest.mark.parametrize("number", range(8))  # the hand-picked edge, boundary, list, empty cases
def test_roi_align_reference_equals_torchvision_fixture(roi_align_refs, number):
    case = roi_align_refs["cases"][number]
    x = roi_align_refs["inputs"][case["input"]].clone().requires_grad_(True)
    out = roi_align_reference(x, case["boxes"], case["output_size"], case["spatial_scale"],
                              case["sampling_ratio"], case["aligned"])
    out.backward(case["grad_output"])
    torch.testing.assert_close(out, case["output"], rtol=0, atol=1e-12, msg=case["name"])
    torch.testing.assert_close(x.grad, case["grad_input"], rtol=0, atol=1e-12, msg=case["name"])


def test_roi_align_reference_list_boxes_float32_and_empty():
    generator = torch.Generator().manual_seed(6)
    feature = torch.randn(2, 2, 4, 5, generator=generator)
    boxes = [torch.tensor([[0.5, 0.5, 3.0, 2.5]]), torch.tensor([[1.0, 0.0, 4.5, 3.5]])]
    ref = roi_align_reference(feature, boxes, 2, aligned=True)
    assert ref.dtype == torch.float32 and ref.shape == (2, 2, 2, 2)
    torch.testing.assert_close(ref, roi_align(feature, boxes, 2, aligned=True),
                               rtol=0, atol=1e-6)
    x = feature.clone().requires_grad_(True)
    empty = roi_align_reference(x, torch.zeros(0, 5), (2, 3))
    assert empty.shape == (0, 2, 2, 3)
    empty.sum().backward()  # an empty result still backpropagates (zeros)
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_roi_align_reference_bad_boxes_name_the_argument():
    with pytest.raises(ValueError, match="boxes"):
        roi_align_reference(torch.rand(1, 1, 3, 3), torch.rand(2, 4), 2)
