"""IoU losses and the sigmoid focal loss: torchvision references, hand values, properties, edges."""

import math
import os

import pytest
import torch

from fcos_from_scratch.ops import (
    complete_box_iou,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "box_refs.pt")
BOX_LOSSES = {
    "generalized_box_iou_loss": (generalized_box_iou_loss, generalized_box_iou),
    "distance_box_iou_loss": (distance_box_iou_loss, distance_box_iou),
    "complete_box_iou_loss": (complete_box_iou_loss, complete_box_iou),
}


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)


# --------------------------------------------------------------------- references

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(BOX_LOSSES))
def test_box_losses_match_torchvision(refs, name, dtype):
    case = refs[f"loss_{dtype}"]
    tol = 1e-6 if dtype == "float32" else 1e-12
    pred = case["boxes1"].clone().requires_grad_(True)
    loss_fn = BOX_LOSSES[name][0]
    loss = loss_fn(pred, case["boxes2"])
    torch.testing.assert_close(loss.detach(), case[name], rtol=0, atol=tol)
    loss.sum().backward()
    # torchvision's CIoU gradient is NaN for zero-height boxes (d/dh of atan(w / h)
    # at h = 0); ours is finite there and equal everywhere else.
    reference_grad = case[name + "_grad"]
    finite = torch.isfinite(reference_grad)
    assert torch.isfinite(pred.grad).all()
    if name != "complete_box_iou_loss":
        assert finite.all()
    torch.testing.assert_close(pred.grad[finite], reference_grad[finite], rtol=0, atol=tol * 10)
    torch.testing.assert_close(loss_fn(case["boxes1"], case["boxes2"], "mean"), case[name + "_mean"], rtol=0, atol=tol)
    torch.testing.assert_close(loss_fn(case["boxes1"], case["boxes2"], "sum"), case[name + "_sum"], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5)])
def test_focal_loss_matches_torchvision(refs, dtype, alpha, gamma):
    case = refs[f"focal_{dtype}"]
    key = f"alpha={alpha},gamma={gamma}"
    tol = 1e-6 if dtype == "float32" else 1e-12
    x = case["inputs"].clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, case["targets"], alpha=alpha, gamma=gamma)
    torch.testing.assert_close(loss.detach(), case[key], rtol=0, atol=tol)
    loss.sum().backward()
    torch.testing.assert_close(x.grad, case[key + ",grad"], rtol=0, atol=tol)
    soft = sigmoid_focal_loss(case["inputs"], case["soft_targets"], alpha=alpha, gamma=gamma)
    torch.testing.assert_close(soft, case[key + ",soft"], rtol=0, atol=tol)
    mean = sigmoid_focal_loss(case["inputs"], case["targets"], alpha, gamma, reduction="mean")
    torch.testing.assert_close(mean, case[key + ",mean"], rtol=0, atol=tol)


# --------------------------------------------------------------------- hand-computed

def test_focal_loss_hand_values():
    # x = 0 -> p = 0.5, -log(p_t) = log 2 for either target; (1 - p_t)^2 = 0.25.
    # target 1: 0.25 (alpha) * 0.25 * log 2;  target 0: 0.75 * 0.25 * log 2.
    x = torch.zeros(2, dtype=torch.float64)
    loss = sigmoid_focal_loss(x, torch.tensor([1.0, 0.0], dtype=torch.float64))
    expected = torch.tensor([0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)
    # gamma = 0, alpha off: plain binary cross-entropy, -log(sigmoid(2)) for target 1.
    plain = sigmoid_focal_loss(torch.tensor([2.0]), torch.tensor([1.0]), alpha=-1, gamma=0)
    assert plain.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)


def test_giou_loss_hand_value():
    # a = [0,2]^2, b = [1,3]^2: IoU 1/7, enclosing 9, union 7 -> GIoU = 1/7 - 2/9.
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    assert generalized_box_iou_loss(a, b).item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-7)


# --------------------------------------------------------------------- properties

def random_pairs(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, 2, generator=g, dtype=torch.float64) * 40
    wh = torch.rand(n, 2, 2, generator=g, dtype=torch.float64) * 20 + 1
    boxes = torch.cat([xy, xy + wh], -1)
    return boxes[:, 0], boxes[:, 1]


@pytest.mark.parametrize("name", sorted(BOX_LOSSES))
def test_loss_is_one_minus_pairwise_diagonal(name):
    loss_fn, pairwise_fn = BOX_LOSSES[name]
    a, b = random_pairs(30, seed=1)
    # The loss adds eps to the union, the pairwise op does not: agree to ~1e-9.
    torch.testing.assert_close(loss_fn(a, b), 1 - pairwise_fn(a, b).diagonal(), atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", sorted(BOX_LOSSES))
def test_identical_boxes_give_zero_loss_and_finite_gradient(name):
    a, _ = random_pairs(10, seed=2)
    pred = a.clone().requires_grad_(True)
    loss = BOX_LOSSES[name][0](pred, a)
    torch.testing.assert_close(loss, torch.zeros(10, dtype=torch.float64), atol=1e-7, rtol=0)
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", sorted(BOX_LOSSES))
def test_degenerate_boxes_give_finite_values_and_gradients(name):
    # points, lines, identical points: torchvision's CIoU is NaN on the first row.
    pred = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 4.0], [1.0, 1.0, 3.0, 1.0],
                         [2.0, 2.0, 2.0, 2.0]], requires_grad=True)
    target = torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 3.0, 1.0],
                           [0.0, 0.0, 4.0, 4.0]])
    loss = BOX_LOSSES[name][0](pred, target)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", sorted(BOX_LOSSES))
def test_reductions_and_leading_dims(name):
    loss_fn = BOX_LOSSES[name][0]
    a, b = random_pairs(12, seed=3)
    per_box = loss_fn(a, b)
    torch.testing.assert_close(loss_fn(a, b, reduction="mean"), per_box.mean())
    torch.testing.assert_close(loss_fn(a, b, reduction="sum"), per_box.sum())
    torch.testing.assert_close(loss_fn(a.view(3, 4, 4), b.view(3, 4, 4)), per_box.view(3, 4))


def test_focal_loss_down_weights_easy_examples():
    # gamma > 0 must shrink the loss of a confident correct prediction far more
    # than that of a wrong one ([focal] Sec. 3, Fig. 1).
    x = torch.tensor([4.0, -4.0])
    t = torch.tensor([1.0, 1.0])
    ce = sigmoid_focal_loss(x, t, alpha=-1, gamma=0)
    fl = sigmoid_focal_loss(x, t, alpha=-1, gamma=2)
    assert (fl[0] / ce[0]) < 1e-3 and (fl[1] / ce[1]) > 0.9


def test_focal_loss_is_stable_for_large_logits():
    x = torch.tensor([100.0, -100.0, 100.0], requires_grad=True)
    loss = sigmoid_focal_loss(x, torch.tensor([0.0, 1.0, 1.0]), alpha=-1, gamma=0)
    torch.testing.assert_close(loss.detach(), torch.tensor([100.0, 100.0, 0.0]))
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("name", sorted(BOX_LOSSES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_empty_inputs_backpropagate(name, reduction):
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = BOX_LOSSES[name][0](pred, torch.zeros(0, 4), reduction=reduction)
    loss.sum().backward()
    assert pred.grad.shape == (0, 4)
    if reduction != "none":
        assert loss.item() == 0.0


def test_focal_empty_and_dtype():
    x = torch.zeros(0, 5, requires_grad=True)
    sigmoid_focal_loss(x, torch.zeros(0, 5), reduction="mean").backward()
    assert x.grad.shape == (0, 5)
    assert sigmoid_focal_loss(torch.zeros(3, dtype=torch.float64), torch.ones(3)).dtype == torch.float64


def test_integer_boxes_are_upcast():
    a = torch.tensor([[0, 0, 2, 2]])
    assert generalized_box_iou_loss(a, a).dtype == torch.float32


# --------------------------------------------------------------------- bad input

def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="same shape"):
        generalized_box_iou_loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \(\.\.\., 4\)"):
        distance_box_iou_loss(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="reduction must be one of"):
        complete_box_iou_loss(torch.zeros(1, 4), torch.zeros(1, 4), reduction="avg")
    with pytest.raises(ValueError, match="inputs and targets must have the same shape"):
        sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), reduction="batchmean")
