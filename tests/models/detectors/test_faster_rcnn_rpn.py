"""The RPN (``models/detectors/rpn.py``): head order, anchor targets, loss, proposal filtering."""

import pytest
import torch
import torch.nn.functional as F

from fcos_from_scratch.models.detectors.rpn import (
    NOT_OBJECT,
    NOT_SAMPLED,
    OBJECT,
    RegionProposalNetwork,
    RPNHead,
    assign_anchor_targets,
    filter_proposals,
    rpn_loss,
)
from fcos_from_scratch.models.matching import Matcher
from fcos_from_scratch.models.sampling import BalancedPositiveNegativeSampler
from fcos_from_scratch.ops import box_iou, clip_boxes_to_image, nms_reference


def test_head_flattens_in_torchvision_anchor_order():
    torch.manual_seed(0)
    head = RPNHead(4, num_anchors=3, conv_depth=2)
    features = [torch.randn(2, 4, 3, 5), torch.randn(2, 4, 2, 3)]
    objectness, deltas = head(features)
    assert objectness.shape == (2, 3 * 15 + 3 * 6) and deltas.shape == (2, 63, 4)
    index = 0
    for feature in features:  # plain loop: level, row, column, anchor
        hidden = head.conv(feature)
        logits, codes = head.cls_logits(hidden), head.bbox_pred(hidden)
        for row in range(feature.shape[2]):
            for col in range(feature.shape[3]):
                for a in range(3):
                    assert torch.allclose(objectness[:, index], logits[:, a, row, col])
                    assert torch.allclose(deltas[:, index], codes[:, 4 * a: 4 * a + 4, row, col])
                    index += 1


def test_anchor_targets_by_hand():
    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # IoU 1 -> object
        [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 -> ignored
        [50.0, 50.0, 60.0, 60.0],  # IoU 0 -> background
        [0.0, 0.0, 10.0, 2.0],  # IoU 0.2 -> background
    ])
    labels, matched = assign_anchor_targets([anchors], [gt], matcher)
    assert labels[0].tolist() == [OBJECT, NOT_SAMPLED, NOT_OBJECT, NOT_OBJECT]
    assert torch.equal(matched[0], gt.expand(4, 4))
    # The best anchor of a box is an object even below 0.7 (low-quality match).
    labels, _ = assign_anchor_targets([anchors[1:]], [gt], matcher)
    assert labels[0].tolist() == [OBJECT, NOT_OBJECT, NOT_OBJECT]
    # No boxes: every anchor is background.
    labels, matched = assign_anchor_targets([anchors], [torch.zeros(0, 4)], matcher)
    assert labels[0].tolist() == [NOT_OBJECT] * 4 and not matched[0].any()


def test_rpn_loss_by_hand():
    """All anchors sampled: BCE mean over 3; smooth L1 (beta 1/9) of the one positive / 3."""
    objectness = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    deltas = torch.zeros(1, 3, 4, requires_grad=True)
    labels = [torch.tensor([1.0, 0.0, 0.0])]
    targets = [torch.tensor([[0.05, 1.0, 0.0, 0.0], [9.0, 9, 9, 9], [9.0, 9, 9, 9]])]
    losses = rpn_loss(objectness, deltas, labels, targets, BalancedPositiveNegativeSampler(10, 0.5))
    bce = F.binary_cross_entropy_with_logits(objectness[0], labels[0])
    # |0.05| < 1/9: 0.5 * 0.05^2 * 9 = 0.01125; |1| >= 1/9: 1 - 1/18
    assert torch.allclose(losses["loss_objectness"], bce)
    assert torch.allclose(losses["loss_rpn_box_reg"], torch.tensor((0.01125 + 1 - 1 / 18) / 3))
    sum(losses.values()).backward()


def test_rpn_loss_without_positives_is_finite_and_differentiable():
    objectness = torch.zeros(1, 4, requires_grad=True)
    deltas = torch.zeros(1, 4, 4, requires_grad=True)
    losses = rpn_loss(objectness, deltas, [torch.zeros(4)], [torch.zeros(4, 4)],
                      BalancedPositiveNegativeSampler(256, 0.5))
    assert losses["loss_rpn_box_reg"] == 0
    sum(losses.values()).backward()
    assert torch.isfinite(objectness.grad).all()


def filter_reference(proposals, objectness, size, counts, pre, post, nms_thresh, min_size, score_thresh):
    """One image, plain loops: per level top-n, clip, small, threshold, NMS; then merge."""
    boxes, scores, start = [], [], 0
    for count in counts:
        logits, level = objectness[start:start + count], proposals[start:start + count]
        order = sorted(range(count), key=lambda i: -float(logits[i]))[:pre]
        level_boxes = clip_boxes_to_image(level[order], size)
        level_scores = torch.sigmoid(logits[order])
        keep = [i for i in range(len(order)) if (level_boxes[i, 2] - level_boxes[i, 0]) >= min_size
                and (level_boxes[i, 3] - level_boxes[i, 1]) >= min_size and level_scores[i] >= score_thresh]
        kept = nms_reference(level_boxes[keep], level_scores[keep], nms_thresh)
        boxes += [level_boxes[keep][k] for k in kept]
        scores += [level_scores[keep][k] for k in kept]
        start += count
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[:post]
    return torch.stack([boxes[i] for i in order]), torch.stack([scores[i] for i in order])


def test_filter_proposals_equals_plain_loop():
    generator = torch.Generator().manual_seed(0)
    counts = [60, 30, 10]
    xy = torch.rand(2, 100, 2, generator=generator) * 90 - 10
    wh = torch.rand(2, 100, 2, generator=generator) * 40 + 0.5
    proposals = torch.cat([xy, xy + wh], dim=-1)
    objectness = torch.randn(2, 100, generator=generator)
    sizes = [(70, 80), (64, 50)]
    boxes, scores = filter_proposals(proposals, objectness, sizes, counts, pre_nms_top_n=20,
                                     post_nms_top_n=25, nms_thresh=0.5, min_size=1.0, score_thresh=0.2)
    for b in range(2):
        ref_boxes, ref_scores = filter_reference(proposals[b], objectness[b], sizes[b], counts,
                                                 20, 25, 0.5, 1.0, 0.2)
        assert torch.allclose(scores[b], ref_scores) and torch.allclose(boxes[b], ref_boxes)
        assert len(scores[b]) <= 25 and (boxes[b][:, 2] <= sizes[b][1]).all()


def test_filter_proposals_checks_shapes():
    with pytest.raises(ValueError, match="proposals must be"):
        filter_proposals(torch.zeros(1, 5, 4), torch.zeros(1, 4), [(10, 10)], [4])


def test_rpn_module_proposals_and_losses():
    torch.manual_seed(0)
    rpn = RegionProposalNetwork(8, ((16,), (32,)), (0.5, 1.0, 2.0), pre_nms_top_n=dict(training=50, testing=20),
                                post_nms_top_n=dict(training=30, testing=10))
    features = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    gt = [torch.tensor([[4.0, 4.0, 30.0, 40.0]]), torch.zeros(0, 4)]
    rpn.train()
    boxes, scores, losses = rpn((32, 32), features, [(32, 32), (30, 28)], gt)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"} and len(boxes[0]) <= 30
    assert (boxes[1][:, 2] <= 28).all() and (boxes[1][:, 3] <= 30).all()  # clipped to the unpadded size
    rpn.eval()
    boxes, scores, losses = rpn((32, 32), features, [(32, 32), (30, 28)])
    assert losses == {} and all(len(b) <= 10 for b in boxes)
    assert all((s[:-1] >= s[1:]).all() for s in scores)


def test_anchor_targets_agree_with_iou():
    """Every OBJECT anchor has IoU >= 0.7 with its box or is that box's best anchor."""
    generator = torch.Generator().manual_seed(1)
    anchors = torch.rand(200, 2, generator=generator) * 50
    anchors = torch.cat([anchors, anchors + 8 + torch.rand(200, 2, generator=generator) * 20], dim=1)
    gt = torch.tensor([[5.0, 5.0, 25.0, 30.0], [30.0, 10.0, 60.0, 40.0]])
    labels, matched = assign_anchor_targets([anchors], [gt], Matcher(0.7, 0.3, True))
    iou = box_iou(gt, anchors)  # (2, 200)
    best = iou.max(dim=0).values
    objects = labels[0] == OBJECT
    is_best = (iou == iou.max(dim=1, keepdim=True).values).any(dim=0)
    assert ((best >= 0.7) | is_best)[objects].all()
    assert (best[labels[0] == NOT_OBJECT] < 0.3).all()
