"""The Region Proposal Network of Faster R-CNN ([faster-rcnn] Sec. 3.1, with [fpn] Sec. 4.1).

The first of Faster R-CNN's two stages, in its own module because it is a whole
detector of its own (one class, "object"), read in the usual order: head ->
targets -> loss -> inference (proposals) -> module. ``faster_rcnn.py`` composes it
with the RoI heads::

    pyramid P2..P6 --RPNHead--> per anchor: objectness logit, 4 deltas (t_x, t_y, t_w, t_h)
        anchors (AnchorGenerator: one size per level, ratios h/w 0.5, 1, 2)
        train: assign_anchor_targets (IoU >= 0.7 object, < 0.3 background)
               --> sample 256 anchors (half positive) --> rpn_loss
        always: decode --> filter_proposals (per-level top-n, clip, remove small,
               score threshold, NMS 0.7 per level, post-NMS top-n) --> proposals

Every default is that of torchvision's ``fasterrcnn_resnet50_fpn`` ([torchvision]),
each beside its source. Anchor order everywhere is torchvision's: level, then row,
column, anchor (``(row * W_l + col) * A + a``), which is also the order of
:class:`~fcos_from_scratch.models.anchors.AnchorGenerator`.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...ops import BoxCoder, batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes, smooth_l1_loss
from ..anchors import AnchorGenerator
from ..matching import BACKGROUND, IGNORE, Matcher
from ..sampling import BalancedPositiveNegativeSampler

SMOOTH_L1_BETA = 1.0 / 9  # [torchvision]'s beta for both stages ([fast-rcnn] Eq. (3) uses 1)
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # [faster-rcnn] Eq. (2), unscaled deltas
# Sampler labels (torchvision's): 1 object, 0 background, -1 neither (never sampled).
OBJECT, NOT_OBJECT, NOT_SAMPLED = 1.0, 0.0, -1.0


# ---------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------

class RPNHead(nn.Module):
    """Objectness and box deltas for A anchors at every cell ([faster-rcnn] Sec. 3.1, Fig. 3).

    ``conv_depth`` x (3x3 conv, ReLU) -- the "sliding window" -- then two sibling
    1x1 convs: one logit per anchor (sigmoid = P(object)) and 4 deltas per anchor.
    Shared by all pyramid levels ([fpn] Sec. 4.1). torchvision's v1 has one 3x3
    conv, v2 two. Weights N(0, 0.01), biases 0 (torchvision).

    Args:
        in_channels: width of the pyramid levels.
        num_anchors: A, anchors per cell (same on every level).
        conv_depth: number of 3x3 convs (1 = v1, 2 = v2).
    """

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        if in_channels < 1 or num_anchors < 1 or conv_depth < 1:
            raise ValueError(f"need in_channels, num_anchors, conv_depth >= 1, got "
                             f"{in_channels}, {num_anchors}, {conv_depth}")
        self.conv = nn.Sequential(*[nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1),
                                                  nn.ReLU(inplace=True)) for _ in range(conv_depth)])
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the head on every level and flatten to torchvision's anchor order.

        Args:
            features: L tensors (B, C, H_l, W_l), finest first.

        Returns:
            objectness (B, N) logits and deltas (B, N, 4), N = sum_l H_l W_l A.
        """
        objectness, deltas = [], []
        for feature in features:
            hidden = self.conv(feature)  # (B, C, H, W)
            logits = self.cls_logits(hidden)  # (B, A, H, W)
            batch, anchors, height, width = logits.shape
            objectness.append(logits.permute(0, 2, 3, 1).reshape(batch, -1))  # (B, H W A)
            codes = self.bbox_pred(hidden).view(batch, anchors, 4, height, width)  # channel = a * 4 + coord
            deltas.append(codes.permute(0, 3, 4, 1, 2).reshape(batch, -1, 4))  # (B, H W A, 4)
        return torch.cat(objectness, dim=1), torch.cat(deltas, dim=1)


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

def assign_anchor_targets(anchors: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                          matcher: Matcher) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Object / background / ignored for every anchor ([faster-rcnn] Sec. 3.1.2).

    An anchor is an object when its IoU with some box is >= 0.7 *or* it is a box's
    best anchor (the matcher's low-quality matches), background when every IoU is
    < 0.3, ignored in between. An image without boxes makes every anchor background.

    Args:
        anchors: B tensors (N, 4) xyxy pixels.
        gt_boxes: B tensors (M_b, 4) xyxy pixels.
        matcher: :class:`Matcher` (0.7, 0.3, allow_low_quality_matches=True).

    Returns:
        labels: B tensors (N,) float32 of OBJECT / NOT_OBJECT / NOT_SAMPLED;
        matched_boxes: B tensors (N, 4), the matched box of every anchor (zeros
        without boxes; only used where the label is OBJECT).
    """
    labels, matched_boxes = [], []
    for anchors_in_image, boxes in zip(anchors, gt_boxes):
        if boxes.numel() == 0:
            labels.append(torch.zeros(len(anchors_in_image), dtype=torch.float32, device=anchors_in_image.device))
            matched_boxes.append(torch.zeros_like(anchors_in_image))
            continue
        matched = matcher(box_iou(boxes, anchors_in_image))  # (N,) box index, BACKGROUND or IGNORE
        matched_boxes.append(boxes[matched.clamp(min=0)])  # (N, 4)
        label = torch.full(matched.shape, OBJECT, dtype=torch.float32, device=matched.device)
        label[matched == BACKGROUND] = NOT_OBJECT
        label[matched == IGNORE] = NOT_SAMPLED
        labels.append(label)
    return labels, matched_boxes


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------

def rpn_loss(objectness: torch.Tensor, deltas: torch.Tensor, labels: Sequence[torch.Tensor],
             regression_targets: Sequence[torch.Tensor],
             sampler: BalancedPositiveNegativeSampler) -> Dict[str, torch.Tensor]:
    """The RPN's two loss terms over the sampled anchors ([faster-rcnn] Eq. (1))::

        loss_objectness = mean over sampled anchors of BCE(logit, p*)
        loss_rpn_box_reg = sum over sampled positives of smooth_L1_beta(t - t*) / N_sampled

    with beta = 1/9 and N_sampled = positives + negatives drawn by ``sampler``
    (256 per image, at most half positive), as torchvision.

    Args:
        objectness: (B, N) logits; deltas: (B, N, 4).
        labels: B tensors (N,) from :func:`assign_anchor_targets`.
        regression_targets: B tensors (N, 4) encoded matched boxes.
        sampler: the anchor sampler (draws with ``torch.randperm``).

    Returns:
        ``{"loss_objectness", "loss_rpn_box_reg"}`` scalars.
    """
    batch, num_anchors = objectness.shape
    if deltas.shape != (batch, num_anchors, 4) or len(labels) != batch:
        raise ValueError(f"deltas must be {(batch, num_anchors, 4)} with one label tensor per image, "
                         f"got {tuple(deltas.shape)} and {len(labels)}")
    pos_masks, neg_masks = sampler(list(labels))
    positive = torch.where(torch.cat(pos_masks))[0]  # indices into the flattened (B N)
    negative = torch.where(torch.cat(neg_masks))[0]
    sampled = torch.cat([positive, negative])
    labels, targets = torch.cat(list(labels)), torch.cat(list(regression_targets))  # (B N,), (B N, 4)
    deltas = deltas.reshape(-1, 4)
    box_loss = smooth_l1_loss(deltas[positive], targets[positive], beta=SMOOTH_L1_BETA,
                              reduction="sum") / max(sampled.numel(), 1)
    objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
    return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}


# ---------------------------------------------------------------------------
# Inference: from dense predictions to proposals
# ---------------------------------------------------------------------------

class Candidates(NamedTuple):
    """Proposals of one image before NMS (for :func:`filter_proposals` and pictures)."""

    boxes: torch.Tensor  # (C, 4) xyxy pixels, clipped to the image
    scores: torch.Tensor  # (C,) sigmoid(objectness)
    levels: torch.Tensor  # (C,) int64 pyramid level of each candidate


def top_per_level(objectness: torch.Tensor, num_anchors_per_level: Sequence[int],
                  pre_nms_top_n: int) -> torch.Tensor:
    """Indices of the ``pre_nms_top_n`` highest logits of every level, per image.

    Args:
        objectness: (B, N) logits; num_anchors_per_level: L counts summing to N.

    Returns:
        (B, sum_l min(top_n, N_l)) int64 indices into N, level by level.
    """
    indices, offset = [], 0
    for level_logits in objectness.split(list(num_anchors_per_level), dim=1):  # (B, N_l)
        k = min(pre_nms_top_n, level_logits.shape[1])
        indices.append(level_logits.topk(k, dim=1).indices + offset)  # (B, k)
        offset += level_logits.shape[1]
    return torch.cat(indices, dim=1)


def proposal_candidates(proposals: torch.Tensor, objectness: torch.Tensor,
                        image_sizes: Sequence[Tuple[int, int]], num_anchors_per_level: Sequence[int], *,
                        pre_nms_top_n: int, min_size: float = 1e-3,
                        score_thresh: float = 0.0) -> List[Candidates]:
    """Steps 1-4 of :func:`filter_proposals`: top-n per level, clip, drop small, threshold."""
    batch = proposals.shape[0]
    levels = torch.cat([torch.full((n,), level, dtype=torch.int64, device=proposals.device)
                        for level, n in enumerate(num_anchors_per_level)])  # (N,)
    top = top_per_level(objectness.detach(), num_anchors_per_level, pre_nms_top_n)  # (B, T)
    rows = torch.arange(batch, device=proposals.device)[:, None]
    scores = torch.sigmoid(objectness.detach()[rows, top])  # (B, T)
    boxes, levels = proposals[rows, top], levels[top]  # (B, T, 4), (B, T)
    candidates = []
    for image_boxes, image_scores, image_levels, size in zip(boxes, scores, levels, image_sizes):
        image_boxes = clip_boxes_to_image(image_boxes, size)
        keep = remove_small_boxes(image_boxes, min_size)
        keep = keep[image_scores[keep] >= score_thresh]
        candidates.append(Candidates(image_boxes[keep], image_scores[keep], image_levels[keep]))
    return candidates


def torchvision_tie_order(keep: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``keep`` (by decreasing score) with tied scores in the order torchvision leaves them.

    Above 1000 boxes (4000 numbers, on CPU; 5000 boxes on GPU) torchvision's
    ``batched_nms`` merges the levels' survivors with an *unstable* ``torch.sort``,
    which puts equal scores (common: sigmoid saturates near 1 in float32) in an order
    of its own, where ours keeps them by index. The order matters in training: the
    RoI sampler draws by position. Same set, same scores; only ties move.

    Args:
        keep: (P,) int64 indices into ``scores``; scores: (C,) the candidates' scores.
    """
    if scores.numel() * 4 <= (4000 if scores.device.type == "cpu" else 20000):
        return keep  # torchvision's other path sorts stably: ties by index, as ours
    keep = torch.sort(keep).values  # by index, as its torch.where(keep_mask)
    return keep[torch.sort(scores[keep], descending=True).indices]


def filter_proposals(proposals: torch.Tensor, objectness: torch.Tensor,
                     image_sizes: Sequence[Tuple[int, int]], num_anchors_per_level: Sequence[int], *,
                     pre_nms_top_n: int = 1000, post_nms_top_n: int = 1000, nms_thresh: float = 0.7,
                     min_size: float = 1e-3, score_thresh: float = 0.0
                     ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """The RPN's proposals ([faster-rcnn] Sec. 3.3, per level as [fpn] Sec. 4.1 / [torchvision]).

    Per image: (1) the ``pre_nms_top_n`` best anchors of *each level* by objectness;
    (2) decoded boxes clipped to the image; (3) boxes narrower or lower than
    ``min_size`` removed; (4) scores ``sigmoid(logit) >= score_thresh`` kept; (5) NMS
    at ``nms_thresh`` within each level (``batched_nms`` with the level as class);
    (6) the ``post_nms_top_n`` best overall.

    Args:
        proposals: (B, N, 4) decoded boxes, xyxy pixels of the padded input.
        objectness: (B, N) logits (detached here: proposals carry no gradient).
        image_sizes: B unpadded sizes (H, W); num_anchors_per_level: L counts.

    Returns:
        boxes: B tensors (P_b, 4), scores: B tensors (P_b,) in [0, 1], by decreasing score.
    """
    if proposals.dim() != 3 or proposals.shape[-1] != 4 or proposals.shape[:2] != objectness.shape:
        raise ValueError(f"proposals must be (B, N, 4) and objectness (B, N), got "
                         f"{tuple(proposals.shape)} and {tuple(objectness.shape)}")
    boxes, scores = [], []
    for found in proposal_candidates(proposals, objectness, image_sizes, num_anchors_per_level,
                                     pre_nms_top_n=pre_nms_top_n, min_size=min_size,
                                     score_thresh=score_thresh):
        keep = batched_nms(found.boxes, found.scores, found.levels, nms_thresh)
        keep = torchvision_tie_order(keep, found.scores)[:post_nms_top_n]
        boxes.append(found.boxes[keep])
        scores.append(found.scores[keep])
    return boxes, scores


# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------

class RegionProposalNetwork(nn.Module):
    """Anchors + :class:`RPNHead` + targets, loss and proposal filtering.

    Args:
        in_channels: pyramid width; anchor_sizes: one tuple of sizes per level;
        aspect_ratios: ratios h / w (every level); conv_depth: 3x3 convs of the head.
        fg_iou_thresh, bg_iou_thresh: matcher thresholds ([faster-rcnn] Sec. 3.1.2: 0.7, 0.3).
        batch_size_per_image, positive_fraction: the anchor sampler (256, 0.5).
        pre_nms_top_n, post_nms_top_n: dicts {"training": n, "testing": n}.
        nms_thresh, min_size, score_thresh: proposal filtering (0.7, 1e-3, 0.0).
    """

    def __init__(self, in_channels: int, anchor_sizes, aspect_ratios, *, conv_depth: int = 1,
                 fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3,
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: Dict[str, int], post_nms_top_n: Dict[str, int],
                 nms_thresh: float = 0.7, min_size: float = 1e-3, score_thresh: float = 0.0) -> None:
        super().__init__()
        self.anchor_generator = AnchorGenerator(anchor_sizes, (tuple(aspect_ratios),) * len(anchor_sizes))
        num_anchors = self.anchor_generator.num_anchors_per_location()
        if len(set(num_anchors)) != 1:
            raise ValueError(f"every level needs the same number of anchors, got {num_anchors}")
        self.head = RPNHead(in_channels, num_anchors[0], conv_depth)
        self.box_coder = BoxCoder(RPN_BOX_WEIGHTS)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n, self.post_nms_top_n = dict(pre_nms_top_n), dict(post_nms_top_n)
        self.nms_thresh, self.min_size, self.score_thresh = nms_thresh, min_size, score_thresh

    def mode(self) -> str:
        return "training" if self.training else "testing"

    def predict(self, batch_size: Tuple[int, int], features: Sequence[torch.Tensor]):
        """Head outputs, anchors and decoded boxes (before any filtering).

        Args:
            batch_size: (H, W) of the padded input; features: L pyramid levels.

        Returns:
            objectness (B, N), deltas (B, N, 4), anchors: B tensors (N, 4),
            proposals (B, N, 4) decoded (detached), num_anchors_per_level (L ints).
        """
        objectness, deltas = self.head(features)  # (B, N), (B, N, 4)
        sizes = [tuple(f.shape[-2:]) for f in features]
        anchors = self.anchor_generator(batch_size, sizes, len(features[0]),
                                        dtype=features[0].dtype, device=features[0].device)
        counts = [h * w * self.head.cls_logits.out_channels for h, w in sizes]
        proposals = self.box_coder.decode(deltas.detach().reshape(-1, 4), anchors)  # (B N, 1, 4)
        return objectness, deltas, anchors, proposals.view(len(anchors), -1, 4), counts

    def forward(self, batch_size: Tuple[int, int], features: Sequence[torch.Tensor],
                image_sizes: Sequence[Tuple[int, int]], gt_boxes: Optional[Sequence[torch.Tensor]] = None):
        """Proposals, and the RPN losses when ``gt_boxes`` are given in train mode.

        Returns:
            boxes (B tensors (P_b, 4)), scores (B tensors (P_b,)), losses (dict, empty in eval).
        """
        objectness, deltas, anchors, proposals, counts = self.predict(batch_size, features)
        boxes, scores = filter_proposals(
            proposals, objectness, image_sizes, counts, pre_nms_top_n=self.pre_nms_top_n[self.mode()],
            post_nms_top_n=self.post_nms_top_n[self.mode()], nms_thresh=self.nms_thresh,
            min_size=self.min_size, score_thresh=self.score_thresh)
        losses = {}
        if self.training:
            if gt_boxes is None:
                raise ValueError("gt_boxes are required in train mode")
            labels, matched = assign_anchor_targets(anchors, gt_boxes, self.matcher)
            targets = self.box_coder.encode(matched, anchors)
            losses = rpn_loss(objectness, deltas, labels, targets, self.sampler)
        return boxes, scores, losses
