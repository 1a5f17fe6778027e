"""The ops on bad, empty, malformed and low-precision input: torchvision's exception
types and empty results, and our rule for malformed boxes (docs/CONVENTIONS.md,
"Bad input and malformed boxes")."""

import math

import pytest
import torch
import torch.nn.functional as F

from fcos_from_scratch import ops
from fcos_from_scratch.ops._checks import BoxShapeError, NonFiniteBoxError, OpInputError, RoIBoxesError

INVERTED = torch.tensor([[10.0, 10.0, 0.0, 0.0]])  # x2 < x1 and y2 < y1
UNIT = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
NAN_BOX = torch.tensor([[0.0, 0.0, math.nan, 1.0]])
INF_BOX = torch.tensor([[0.0, 0.0, math.inf, 1.0]])


# ----------------------------------------------------- torchvision's exception types

@pytest.mark.parametrize("call, match", [
    # torchvision's C++ nms kernel: RuntimeError with these words
    (lambda: ops.nms(torch.rand(4), torch.rand(3), 0.5), "boxes should be a 2d tensor, got 1D"),
    (lambda: ops.nms(torch.rand(3, 5), torch.rand(3), 0.5), "boxes should have 4 elements in dimension 1, got 5"),
    (lambda: ops.nms(torch.rand(3, 4), torch.rand(3, 2), 0.5), "scores should be a 1d tensor, got 2D"),
    (lambda: ops.nms(torch.rand(3, 4), torch.rand(4), 0.5),
     "boxes and scores should have same number of elements in dimension 0, got 3 and 4"),
    (lambda: ops.nms(torch.rand(3, 4), torch.rand(3), "0.5"), "Expected a value of type 'float' for argument 'iou_threshold'"),
    (lambda: ops.batched_nms(torch.rand(3, 4), torch.rand(3), torch.zeros(2).long(), 0.5), "idxs"),
    (lambda: ops.batched_nms(torch.rand(3, 4), torch.rand(3, 2), torch.zeros(3).long(), 0.5), "scores should be a 1d"),
    (lambda: ops.generalized_box_iou_loss(torch.rand(3, 4), torch.rand(2, 4)), "same shape"),
    (lambda: ops.roi_align(torch.rand(1, 8, 8), torch.zeros(1, 5), 2), r"input must have shape \(B, C, H, W\)"),
    (lambda: ops.roi_align(torch.rand(1, 1, 8, 8).int(), torch.zeros(1, 5), 2), "floating-point"),
])
def test_errors_where_torchvision_raises_runtime_error_are_both_kinds(call, match):
    with pytest.raises(RuntimeError, match=match) as info:
        call()
    assert isinstance(info.value, ValueError) and isinstance(info.value, OpInputError)


@pytest.mark.parametrize("boxes, match", [
    (torch.tensor([[0.0, 0, 3, 3]]), "The boxes tensor shape is not correct as Tensor"),
    ([torch.tensor([[0.0, 0, 3]])], "The shape of the tensor in the boxes list is not correct"),
    ("boxes", "boxes is expected to be a Tensor"),
])
def test_roi_align_box_shape_errors_are_assertion_errors_too(boxes, match):
    x = torch.linspace(1, 64, 64).reshape(1, 1, 8, 8)
    with pytest.raises(AssertionError, match=match) as info:
        ops.roi_align(x, boxes, output_size=(2, 2))
    assert isinstance(info.value, ValueError) and isinstance(info.value, RoIBoxesError)


@pytest.mark.parametrize("fn", [ops.box_area, lambda b: ops.box_iou(b, b), lambda b: ops.generalized_box_iou(b, b)])
def test_boxes_without_four_columns_raise_index_error_too(fn):
    with pytest.raises(IndexError, match=r"must have shape \(N, 4\), got \(3, 3\)") as info:
        fn(torch.rand(3, 3))
    assert isinstance(info.value, (ValueError, BoxShapeError))


@pytest.mark.parametrize("fn", [ops.generalized_box_iou_loss, ops.distance_box_iou_loss,
                                ops.complete_box_iou_loss])
def test_iou_loss_reduction_message_has_torchvision_words(fn):
    with pytest.raises(ValueError, match="Invalid Value for arg 'reduction': 'xyz'") as info:
        fn(UNIT, UNIT, reduction="xyz")
    assert "Supported reduction modes: 'none', 'mean', 'sum'" in str(info.value)


def test_focal_loss_reduction_alpha_and_shape_messages_have_torchvision_words():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="Invalid Value for arg 'reduction'"):
        ops.sigmoid_focal_loss(x, x, reduction="xyz")
    for alpha in (2.0, -0.5):  # torchvision: [0, 1] or exactly -1
        with pytest.raises(ValueError, match="Invalid alpha value"):
            ops.sigmoid_focal_loss(x, x, alpha=alpha)
    with pytest.raises(ValueError, match=r"Target size \(torch.Size\(\[2\]\)\) must be the same as input size"):
        ops.sigmoid_focal_loss(x, x[:2])


# ------------------------------------------------------------------ empty inputs

@pytest.mark.parametrize("boxes", [torch.empty(0), torch.zeros(0, 4)])
def test_batched_nms_on_empty_boxes_returns_empty_before_looking_at_other_arguments(boxes):
    keep = ops.batched_nms(boxes, None, None, None)  # torchvision's own test calls exactly this
    assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_nms_and_batched_nms_on_zero_boxes():
    empty = torch.zeros(0, 4)
    assert ops.nms(empty, torch.zeros(0), 0.5).shape == (0,)
    assert ops.batched_nms(empty, torch.zeros(0), torch.zeros(0).long(), 0.5).shape == (0,)


def test_batched_nms_accepts_float_category_ids_like_torchvision():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    as_float = ops.batched_nms(boxes, scores, torch.tensor([0.0, 0.0, 1.0]), 0.5)
    as_int = ops.batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5)
    assert as_float.tolist() == as_int.tolist() == [0, 2]


# --------------------------------------------------------------- focal loss numerics

@pytest.mark.parametrize("alpha", [-1.0, 0.0, 0.58, 1.0])
def test_focal_loss_with_gamma_zero_is_at_most_torch_bce_in_float32(alpha):
    # logits spanning the range where a hand-written log-sigmoid rounds differently
    # from torch's BCE (it was up to 2.6e-5 relative above it)
    generator = torch.Generator().manual_seed(0)
    p = torch.rand(2000, generator=generator).clamp(1e-4, 1 - 1e-4)
    logits = torch.log(p / (1 - p))
    targets = (torch.rand(2000, generator=generator) < 0.5).float()
    focal = ops.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=0)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert (focal <= bce).all()
    if alpha == -1.0:
        assert torch.equal(focal, bce)  # γ = 0 and no α: the focal loss *is* BCE


# ---------------------------------------------------------------- low precision

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_roi_align_low_precision_is_float32_result_rounded_once(dtype):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 12, 12, generator=generator).to(dtype)
    rois = torch.tensor([[0, 0.5, 1.0, 9.5, 11.0], [0, 2.0, 2.0, 7.0, 5.0]])
    ours = ops.roi_align(x, rois, 3, 1.0, -1, True)
    reference = ops.roi_align(x.float(), rois, 3, 1.0, -1, True).to(dtype)  # sum in float32, round once
    assert ours.dtype == dtype
    assert torch.equal(ours, reference)


# ------------------------------------------------------------ malformed boxes: rule

def test_inverted_box_is_read_as_an_empty_box():
    assert ops.box_area(INVERTED).tolist() == [0.0]  # was 100
    assert ops.box_area(INVERTED.int()).tolist() == [0]
    assert ops.box_iou(INVERTED, UNIT).tolist() == [[0.0]]
    # read as the point (10, 10): enclosing box (0, 0, 10, 10), area 100, union 1
    assert ops.generalized_box_iou(INVERTED, UNIT).item() == pytest.approx(0 - 99 / 100)  # was 100


@pytest.mark.parametrize("fn, low", [(ops.box_iou, 0.0), (ops.generalized_box_iou, -1.0),
                                     (ops.distance_box_iou, -1.0), (ops.complete_box_iou, -2.0)])
def test_iou_family_stays_in_range_on_random_inverted_boxes(fn, low):
    generator = torch.Generator().manual_seed(2)
    boxes1 = torch.rand(40, 4, generator=generator) * 20  # about 3/4 inverted in x or y
    boxes2 = torch.rand(30, 4, generator=generator) * 20
    values = fn(boxes1, boxes2)
    assert torch.isfinite(values).all()
    assert values.min() >= low - 1e-6 and values.max() <= 1 + 1e-6


@pytest.mark.parametrize("fn, high", [(ops.generalized_box_iou_loss, 2.0), (ops.distance_box_iou_loss, 2.0),
                                      (ops.complete_box_iou_loss, 3.0)])
def test_iou_losses_stay_in_range_on_inverted_boxes_and_backpropagate(fn, high):
    generator = torch.Generator().manual_seed(3)
    pred = (torch.rand(50, 4, generator=generator) * 20).requires_grad_(True)
    target = torch.rand(50, 4, generator=generator) * 20
    loss = fn(pred, target)
    assert loss.min() >= -1e-6 and loss.max() <= high + 1e-6
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_well_formed_boxes_keep_their_values_and_gradients_under_the_rule():
    flat = torch.tensor([[1.0, 1.0, 1.0, 4.0], [0.0, 0.0, 2.0, 3.0]])  # x2 == x1: flat, not inverted
    assert torch.equal(ops.boxes.order_corners(flat), flat)
    pred = flat.clone().requires_grad_(True)
    ops.generalized_box_iou_loss(pred, torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2]])).sum().backward()
    # at x2 == x1 the gradient must go to x2 itself, not be split with x1
    assert pred.grad[0, 2] != 0


@pytest.mark.parametrize("bad", [NAN_BOX, INF_BOX, -INF_BOX])
@pytest.mark.parametrize("call", [
    lambda b: ops.box_area(b),
    lambda b: ops.box_iou(b, UNIT),
    lambda b: ops.generalized_box_iou(UNIT, b),
    lambda b: ops.distance_box_iou(b, UNIT),
    lambda b: ops.complete_box_iou(b, UNIT),
    lambda b: ops.nms(torch.cat([UNIT, b]), torch.tensor([1.0, 0.5]), 0.5),
    lambda b: ops.batched_nms(torch.cat([UNIT, b]), torch.tensor([1.0, 0.5]), torch.tensor([0, 0]), 0.5),
    lambda b: ops.nms_reference(torch.cat([UNIT, b]), torch.tensor([1.0, 0.5]), 0.5),
    lambda b: ops.soft_nms(torch.cat([UNIT, b]), torch.tensor([1.0, 0.5])),
])
def test_non_finite_coordinates_raise_where_no_value_is_meaningful(call, bad):
    with pytest.raises(ValueError, match="NaN or inf") as info:
        call(bad)
    assert isinstance(info.value, NonFiniteBoxError)


@pytest.mark.parametrize("fn", [ops.generalized_box_iou_loss, ops.distance_box_iou_loss,
                                ops.complete_box_iou_loss])
def test_iou_losses_are_nan_exactly_for_pairs_with_non_finite_coordinates(fn):
    pred = torch.cat([UNIT, NAN_BOX, INF_BOX, UNIT])
    target = torch.cat([UNIT, UNIT, UNIT, UNIT * 2])
    loss = fn(pred, target)
    assert torch.isnan(loss).tolist() == [False, True, True, False]
    assert torch.isnan(fn(pred, target, reduction="sum"))  # the trainer's guard sees it


def test_remove_small_boxes_drops_inverted_and_nan_boxes():
    boxes = torch.cat([UNIT * 5, INVERTED, NAN_BOX])
    assert ops.remove_small_boxes(boxes, 0.0).tolist() == [0]
