"""[refinedetlite] Eqs. (2)-(5): soft-label cross entropy, IoU-guided labels and weights, class weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from fcos_from_scratch.ops import (
    class_weights_from_counts,
    iou_guided_sample_weights,
    iou_guided_soft_labels,
    soft_label_cross_entropy,
)

ALPHA, BETA, GAMMA, W = 0.25, 0.9, 0.75, 10.0  # [refinedetlite] Sec. 5, advanced configuration


# --- Eq. (2): soft_label_cross_entropy ----------------------------------------------------

def test_soft_label_cross_entropy_hand_values():
    # Row 0: logits (0, 0) -> p = (1/2, 1/2); y = (1, 0): KL = 1 · log(1 / 0.5) = log 2.
    # Row 1: logits (log 3, 0) -> p = (3/4, 1/4); y = (3/4, 1/4) = p: KL = 0.
    # Row 2: logits (log 3, 0), y = (0, 1): KL = log(1 / (1/4)) = log 4.
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [math.log(3), 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.0, 1.0]])
    per_sample = soft_label_cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(per_sample, torch.tensor([math.log(2), 0.0, math.log(4)]))
    # Class weights (2, 1): row 0 -> 2 log 2; row 1 -> 2 · .75 log 1 + 1 · .25 log 1 = 0;
    # row 2 -> 1 · log 4. Sample weights (1, 5, 0.5): sum = 2 log 2 + 0 + 0.5 log 4 = 3 log 2.
    weighted = soft_label_cross_entropy(logits, targets, sample_weights=torch.tensor([1.0, 5.0, 0.5]),
                                        class_weights=torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(weighted, torch.tensor(3 * math.log(2)))
    torch.testing.assert_close(soft_label_cross_entropy(logits, targets, reduction="mean"),
                               torch.tensor((math.log(2) + math.log(4)) / 3))


def test_soft_label_cross_entropy_equals_torch_ce_for_one_hot_and_differs_by_a_constant():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 2])
    w = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    one_hot = F.one_hot(labels, 4).double()
    ours = soft_label_cross_entropy(logits, one_hot, class_weights=w, reduction="none")
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, weight=w, reduction="none"))
    # Soft targets: ours = torch's soft CE + Σ w y log y (a constant), same gradient.
    soft = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    constant = (w * torch.xlogy(soft, soft)).sum(1)
    ours = soft_label_cross_entropy(logits, soft, class_weights=w, reduction="none")
    theirs = F.cross_entropy(logits, soft, weight=w, reduction="none")
    torch.testing.assert_close(ours, theirs + constant)
    g_ours, = torch.autograd.grad(ours.sum(), logits)
    g_theirs, = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(g_ours, g_theirs)


def test_soft_label_cross_entropy_is_a_kl_divergence():
    # >= 0 everywhere, 0 exactly at softmax(x) = y; the zero entries give 0 (xlogy), not NaN.
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    loss = soft_label_cross_entropy(logits, torch.softmax(logits, 1), reduction="none")
    torch.testing.assert_close(loss, torch.zeros(5), atol=1e-6, rtol=0)
    targets = F.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).float()
    loss = soft_label_cross_entropy(logits, targets, reduction="none")
    assert torch.isfinite(loss).all() and (loss > 0).all()


def test_soft_label_cross_entropy_gradcheck():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.softmax(torch.randn(4, 3, dtype=torch.float64), 1)
    targets[0] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # zero entries too
    eta = torch.tensor([1.0, 2.0, 0.5, 10.0], dtype=torch.float64)
    w = torch.tensor([1.0, 1.192, 10.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: soft_label_cross_entropy(x, targets, eta, w, reduction="none"), (logits,))


def test_soft_label_cross_entropy_empty_and_bad_input():
    logits = torch.zeros(0, 5, requires_grad=True)
    for reduction in ("sum", "mean"):
        loss = soft_label_cross_entropy(logits, torch.zeros(0, 5), reduction=reduction)
        assert loss.item() == 0.0
        loss.backward()  # still backpropagates
    assert soft_label_cross_entropy(logits, torch.zeros(0, 5), reduction="none").shape == (0,)
    with pytest.raises(ValueError, match="logits must be"):
        soft_label_cross_entropy(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="targets must have the shape"):
        soft_label_cross_entropy(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="class_weights must be a \\(2,\\)"):
        soft_label_cross_entropy(torch.zeros(3, 2), torch.zeros(3, 2), class_weights=torch.ones(3))
    with pytest.raises(ValueError, match="sample_weights must be a \\(3,\\)"):
        soft_label_cross_entropy(torch.zeros(3, 2), torch.zeros(3, 2), sample_weights=torch.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        soft_label_cross_entropy(torch.zeros(3, 2), torch.zeros(3, 2), reduction="avg")


# --- Eq. (3): iou_guided_soft_labels ------------------------------------------------------

@pytest.mark.parametrize("iou, positive_target, negative_background", [
    # y_t = 1 - α (1 - IoU); y_0 = 1 - α IoU, α = 0.25
    (0.0, 0.75, 1.0),    # 1 - .25 · 1 ;  1 - 0
    (0.5, 0.875, 0.875),  # 1 - .25 · .5 ;  1 - .125
    (0.6, 0.90, 0.85),   # 1 - .25 · .4 ;  1 - .15
    (0.9, 0.975, 0.775),  # 1 - .25 · .1 ;  1 - .225
    (1.0, 1.0, 0.75),
])
def test_soft_labels_worked_values(iou, positive_target, negative_background):
    labels = torch.tensor([3, 0])
    soft = iou_guided_soft_labels(labels, torch.tensor([iou, iou]), num_classes=5, alpha=ALPHA)
    assert soft[0, 3].item() == pytest.approx(positive_target)
    assert soft[1, 0].item() == pytest.approx(negative_background)
    # the rest is spread evenly over the other num_classes - 1 = 4 entries
    others = torch.tensor([0, 1, 2, 4])
    torch.testing.assert_close(soft[0, others], torch.full((4,), (1 - positive_target) / 4))
    torch.testing.assert_close(soft[1, 1:], torch.full((4,), (1 - negative_background) / 4))
    torch.testing.assert_close(soft.sum(1), torch.ones(2))


def test_soft_labels_alpha_zero_is_one_hot_and_all_background_edge_cases():
    labels = torch.tensor([0, 2, 1, 0])
    ious = torch.tensor([0.3, 0.7, 0.1, 0.0])
    torch.testing.assert_close(iou_guided_soft_labels(labels, ious, 3, alpha=0.0),
                               F.one_hot(labels, 3).float())
    background = iou_guided_soft_labels(torch.zeros(4, dtype=torch.long), torch.zeros(4), 3)
    torch.testing.assert_close(background, F.one_hot(torch.zeros(4, dtype=torch.long), 3).float())
    assert iou_guided_soft_labels(torch.zeros(0, dtype=torch.long), torch.zeros(0), 3).shape == (0, 3)


def test_soft_labels_are_detached_and_clamped():
    ious = torch.tensor([1.2, -0.1], requires_grad=True)  # out of range: clamped to [0, 1]
    soft = iou_guided_soft_labels(torch.tensor([1, 0]), ious, 2)
    assert not soft.requires_grad
    torch.testing.assert_close(soft, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_soft_labels_bad_input():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        iou_guided_soft_labels(torch.tensor([3]), torch.tensor([0.5]), 3)
    with pytest.raises(ValueError, match="num_classes must be"):
        iou_guided_soft_labels(torch.tensor([0]), torch.tensor([0.5]), 1)
    with pytest.raises(ValueError, match="labels must be an \\(N,\\) integer"):
        iou_guided_soft_labels(torch.tensor([0.0]), torch.tensor([0.5]), 3)
    with pytest.raises(ValueError, match="ious must be"):
        iou_guided_soft_labels(torch.tensor([0, 1]), torch.tensor([0.5]), 3)
    with pytest.raises(ValueError, match="alpha must be"):
        iou_guided_soft_labels(torch.tensor([0]), torch.tensor([0.5]), 3, alpha=1.5)


# --- Eq. (4): iou_guided_sample_weights ---------------------------------------------------

def test_sample_weights_worked_values():
    # η = 1 / (1 + β (IoU - 1)) for positives, β = 0.9:
    # IoU 0 -> 1 / 0.1 = 10; 0.5 -> 1 / 0.55 = 1.8182; 0.6 -> 1 / 0.64 = 1.5625;
    # 0.9 -> 1 / 0.91 = 1.0989; 1 -> 1. Negatives: 1 whatever their IoU.
    ious = torch.tensor([0.0, 0.5, 0.6, 0.9, 1.0, 0.7, 0.0])
    labels = torch.tensor([1, 2, 1, 4, 1, 0, 0])
    eta = iou_guided_sample_weights(ious, labels, beta=BETA)
    expected = torch.tensor([10.0, 1 / 0.55, 1.5625, 1 / 0.91, 1.0, 1.0, 1.0])
    torch.testing.assert_close(eta, expected)
    assert iou_guided_sample_weights(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\)"):
        iou_guided_sample_weights(ious, labels, beta=1.0)


def test_soft_labels_and_weights_feed_the_loss_end_to_end():
    # The ODM loss of [refinedetlite] Eqs. (2)-(5) on a few anchors; the loss is finite
    # and its gradient only reaches the logits (the IoUs are detached).
    torch.manual_seed(0)
    logits = torch.randn(5, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 3, 0, 2])
    ious = torch.rand(5, requires_grad=True)
    loss = soft_label_cross_entropy(
        logits, iou_guided_soft_labels(labels, ious, 4), iou_guided_sample_weights(ious, labels),
        class_weights_from_counts(torch.tensor([100.0, 10.0, 1.0])))
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0 and ious.grad is None


# --- Eq. (5): class_weights_from_counts --------------------------------------------------

def test_class_weights_reproduce_the_coco_worked_figures():
    # [refinedetlite] App. A: person 273,468 boxes -> 1, hair drier 209 -> 10; r_max = 1308.46,
    # r_max^0.75 = 217.56. r = 10:  9 / 216.56 · (10^0.75 - 1) + 1 = 0.04156 · 4.623 + 1 = 1.192;
    # r = 100: 0.04156 · (31.62 - 1) + 1 = 2.273.
    m_max = 273468.0
    counts = torch.tensor([m_max, m_max / 10, m_max / 100, 209.0])
    weights = class_weights_from_counts(counts, max_weight=W, gamma=GAMMA, with_background=False)
    torch.testing.assert_close(weights, torch.tensor([1.0, 1.192, 2.273, 10.0]), atol=1e-3, rtol=0)
    with_bg = class_weights_from_counts(counts)  # defaults are the paper's
    assert with_bg.shape == (5,) and with_bg[0] == 1.0
    torch.testing.assert_close(with_bg[1:], weights)


def test_class_weights_balanced_zero_and_monotone():
    assert class_weights_from_counts(torch.tensor([50, 50, 50])).tolist() == [1.0] * 4
    assert class_weights_from_counts(torch.zeros(3)).tolist() == [1.0] * 4  # no information
    # an absent class gets W; M_min is over the present ones (here 10 -> W too)
    weights = class_weights_from_counts(torch.tensor([1000.0, 0.0, 10.0]), with_background=False)
    torch.testing.assert_close(weights, torch.tensor([1.0, 10.0, 10.0]))
    # decreasing counts -> non-decreasing weights in [1, W]
    counts = torch.tensor([0.6 ** d for d in range(10)]) * 1000
    weights = class_weights_from_counts(counts, with_background=False)
    assert (weights[1:] >= weights[:-1]).all() and weights[0] == 1 and weights[-1] == pytest.approx(W)
    # nearly balanced counts still spread over 1..W (the formula's known degeneracy)
    spread = class_weights_from_counts(torch.tensor([1000.0, 990.0, 950.0]), with_background=False)
    assert spread[-1] == pytest.approx(W) and spread[0] == 1.0


def test_class_weights_bad_input():
    for bad, message in [(torch.tensor([[1.0]]), "counts must be a non-empty"),
                         (torch.tensor([]), "counts must be a non-empty"),
                         (torch.tensor([1.0, -1.0]), "counts must be finite and >= 0")]:
        with pytest.raises(ValueError, match=message):
            class_weights_from_counts(bad)
    with pytest.raises(ValueError, match="max_weight"):
        class_weights_from_counts(torch.tensor([1.0, 2.0]), max_weight=0.5)
    with pytest.raises(ValueError, match="gamma"):
        class_weights_from_counts(torch.tensor([1.0, 2.0]), gamma=0)
