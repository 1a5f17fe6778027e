"""RefineDetLite's training targets: anchor matching, negative filtering, OHEM ([refinedet] Sec. 3.3).

The detector (``refinedet_lite.py``) trains two cascaded predictors on the same
anchors, and both need targets per anchor:

* the **ARM** (anchor refinement module) learns "object or not" and a first box
  offset for every *original* anchor;
* the **ODM** (object detection module) learns K + 1 classes and a second offset
  for every *refined* anchor (the original anchor moved by the ARM's offset,
  detached: the ODM's targets must not pull on the ARM).

Both use the same matching ([ssd] Sec. 2.2, [refinedet] Sec. 3.3): an anchor whose
best IoU with a ground-truth box reaches 0.5 is that box's positive, and every
box additionally claims its single best anchor (so tiny boxes are never left
unmatched); everything else is background -- [refinedet] has no "ignored" IoU
band; ``bg_iou_thresh`` < 0.5 adds one (RetinaNet's [0.4, 0.5), [focal] Sec. 4).
Two more rules decide what the ODM trains on:

* **negative-anchor filtering** ([refinedet] Sec. 3.3): an anchor the ARM calls
  background with probability above ``1 - theta`` (theta = 0.01) is ignored by the
  ODM -- neither a positive nor a candidate negative -- and at inference its
  detections are suppressed. Easy background is thereby removed before the ODM
  ever sees it;
* **hard negative mining** (OHEM, [ssd] Sec. 2.2): per image, only the 3 x P
  background anchors with the largest classification loss are trained on
  (``models.sampling.hard_negative_mining``).

Labels per anchor (named, never bare numbers): :data:`BACKGROUND_LABEL` = 0,
class k -> k + 1 (the ODM's K + 1 softmax has background at index 0), ARM's
object -> 1, and :data:`IGNORE_LABEL` (< 0) for anchors excluded from the loss.
"""

from typing import List, NamedTuple, Sequence

import torch

from ...ops import box_iou
from ..matching import IGNORE, Matcher

BACKGROUND_LABEL = 0  # index of "no object" in both softmaxes (ARM: 2 classes, ODM: K + 1)
OBJECT_LABEL = 1  # the ARM's one foreground class
IGNORE_LABEL = -1  # left out of the loss (negative filtering); < 0 as in models.sampling


class AnchorTargets(NamedTuple):
    """Per-anchor targets of a batch (N anchors per image)."""

    labels: torch.Tensor  # (B, N) int64: 0 background, k + 1 class k, IGNORE_LABEL
    boxes: torch.Tensor  # (B, N, 4) xyxy: the matched box of positives; the best-overlap box of the others
    ious: torch.Tensor  # (B, N) IoU of each anchor with ``boxes`` (0 for images without boxes)


def match_anchors(anchors: torch.Tensor, gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor],
                  matcher: Matcher) -> AnchorTargets:
    """Match the anchors of every image to its ground truth ([ssd] Sec. 2.2).

    Per image: IoU matrix (M, N); ``matcher`` thresholds it (IoU >= 0.5 positive,
    below background, with ``best_prediction_per_gt``: each box's best anchor is
    its positive too; a matcher with a lower low threshold makes the band between
    the two IGNORE_LABEL). A positive takes label ``class + 1``. Every anchor, positive
    or not, also gets the box it overlaps best (the IoU-guided soft labels of
    [refinedetlite] Eq. (3) need it for negatives). Degenerate ground-truth boxes
    (zero width or height) are dropped: they have no centre-size code.

    Args:
        anchors: (B, N, 4) xyxy pixels, one set per image (the ODM's refined
            anchors differ per image), or (N, 4) shared by all images.
        gt_boxes: B tensors (M_b, 4) xyxy pixels; gt_labels: B tensors (M_b,) in 0..K-1.
        matcher: a :class:`~fcos_from_scratch.models.matching.Matcher`.

    Returns:
        :class:`AnchorTargets` with ``labels`` in {0, 1..K}, IGNORE_LABEL in the band.
    """
    if len(gt_boxes) != len(gt_labels):
        raise ValueError(f"gt_boxes has {len(gt_boxes)} images but gt_labels has {len(gt_labels)}")
    if anchors.dim() == 2:
        anchors = anchors.expand(len(gt_boxes), -1, -1)
    if anchors.dim() != 3 or anchors.shape[-1] != 4 or anchors.shape[0] != len(gt_boxes):
        raise ValueError(f"anchors must be (N, 4) or (B, N, 4) with B = {len(gt_boxes)}, "
                         f"got {tuple(anchors.shape)}")
    batch, num_anchors, _ = anchors.shape
    labels = anchors.new_full((batch, num_anchors), BACKGROUND_LABEL, dtype=torch.int64)
    boxes = anchors.new_zeros((batch, num_anchors, 4))
    ious = anchors.new_zeros((batch, num_anchors))
    for index, (image_anchors, box, label) in enumerate(zip(anchors, gt_boxes, gt_labels)):
        box = box.to(anchors)
        keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])  # a code needs w, h > 0
        box, label = box[keep], label.to(anchors.device)[keep]
        if len(box) == 0:
            continue
        iou = box_iou(box, image_anchors)  # (M, N)
        best_iou, best_gt = iou.max(dim=0)  # (N,)
        matched = matcher(iou)  # (N,) gt index, BACKGROUND, or IGNORE (in the optional IoU band)
        positive = matched >= 0
        owner = torch.where(positive, matched, best_gt)  # (N,) forced matches may differ from best_gt
        labels[index] = torch.where(positive, label[owner] + 1, labels[index])
        labels[index][matched == IGNORE] = IGNORE_LABEL
        boxes[index] = box[owner]
        ious[index] = iou.gather(0, owner[None]).squeeze(0)
    return AnchorTargets(labels, boxes, ious)


def arm_labels(targets: AnchorTargets) -> torch.Tensor:
    """The ARM's binary labels: OBJECT_LABEL where the ODM-style label is a class."""
    return torch.where(targets.labels > BACKGROUND_LABEL, OBJECT_LABEL, targets.labels)


def negative_anchor_mask(arm_logits: torch.Tensor, theta: float) -> torch.Tensor:
    """Anchors the ARM calls background with confidence above ``1 - theta`` ([refinedet] Sec. 3.3).

    Args:
        arm_logits: (B, N, 2) ARM logits, index 0 = background.
        theta: the filter threshold ([refinedet]: 0.01); 0 disables the filter.

    Returns:
        (B, N) bool, True for the filtered (ignored / suppressed) anchors.
    """
    if arm_logits.dim() != 3 or arm_logits.shape[-1] != 2:
        raise ValueError(f"arm_logits must be (B, N, 2), got {tuple(arm_logits.shape)}")
    if not 0.0 <= theta < 1.0:
        raise ValueError(f"theta must be in [0, 1), got {theta}")
    background = torch.softmax(arm_logits.detach().float(), dim=-1)[..., BACKGROUND_LABEL]  # (B, N)
    return background > 1.0 - theta


def filter_negative_anchors(labels: torch.Tensor, filtered: torch.Tensor) -> torch.Tensor:
    """``labels`` with the filtered anchors set to IGNORE_LABEL (positives included, as [refinedet]'s code)."""
    if labels.shape != filtered.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and filtered {tuple(filtered.shape)} must match")
    return labels.masked_fill(filtered, IGNORE_LABEL)


def positives_per_image(labels: torch.Tensor) -> List[int]:
    """How many anchors of each image are positive (for logging and tests)."""
    return (labels > BACKGROUND_LABEL).sum(dim=1).tolist()
