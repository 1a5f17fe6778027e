"""From dense scores and decoded boxes to detections, shared by every detector.

1. Per level, only the best ``topk_candidates`` (point or anchor, class) pairs
   above the score threshold are kept (:func:`top_candidates`), on the whole batch
   at once. Masked pairs carry the score :data:`MASKED`.
2. Per image (:func:`postprocess_detections`): boxes clipped to the image,
   class-aware NMS (or Soft-NMS, [soft-nms], which rescores instead of deleting and
   stops once ``detections_per_img`` boxes are kept), the best
   ``detections_per_img`` kept, and boxes rescaled from the network's input size
   to the original image size.

Step 2 loops over images because each keeps a different number of boxes.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..ops import batched_nms, batched_soft_nms, clip_boxes_to_image, scale_boxes

MASKED = -1.0  # score of a pair below the threshold (real scores are >= 0)


@dataclass(frozen=True)
class SoftNMS:
    """Soft-NMS settings for :func:`postprocess_detections` ([soft-nms] Sec. 3, Alg. 1).

    Attributes:
        method: "gaussian" (weight exp(-IoU^2 / sigma)) or "linear" (1 - IoU above N_t).
        sigma: the Gaussian's sigma ([soft-nms]: 0.5).
        iou_threshold: N_t of the linear rule ([soft-nms]: 0.3).
        score_threshold: boxes whose rescored score falls below it are dropped.
    """

    method: str = "gaussian"
    sigma: float = 0.5
    iou_threshold: float = 0.3
    score_threshold: float = 0.001


def top_candidates(scores: torch.Tensor, topk: int, per_class_topk: int = 0):
    """Top-k (cell, class) pairs of one level for every image.

    Args:
        scores: (B, N_l, K) scores, :data:`MASKED` below the threshold.
        topk: keep the best ``topk`` pairs over all cells and classes.
        per_class_topk: > 0 keeps the best k cells *per class* instead
            ([cs771-hw3]: a global top-k lets frequent classes crowd out rare ones).

    Returns:
        scores (B, C), cell indices (B, C), labels (B, C) with C candidates.
    """
    batch, num_cells, num_classes = scores.shape
    if per_class_topk > 0:
        k = min(per_class_topk, num_cells)
        top_scores, cells = scores.topk(k, dim=1)  # (B, k, K): best cells of each class
        labels = torch.arange(num_classes, device=scores.device).expand(batch, k, num_classes)
        return top_scores.flatten(1), cells.flatten(1), labels.flatten(1)  # (B, k*K)
    k = min(topk, num_cells * num_classes)
    top_scores, flat = scores.flatten(1).topk(k, dim=1)  # (B, k) over all (cell, class)
    return top_scores, flat // num_classes, flat % num_classes


def postprocess_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_sizes: Sequence[Tuple[int, int]],
    orig_sizes: Sequence[Tuple[int, int]],
    *,
    nms_thresh: float,
    detections_per_img: int,
    soft_nms: Optional[SoftNMS] = None,
) -> List[Dict[str, torch.Tensor]]:
    """Clip, NMS per class, keep the best, map back to original image coordinates.

    Args:
        boxes: (B, C, 4) xyxy pixels of the network input.
        scores: (B, C), :data:`MASKED` where not a candidate.
        labels: (B, C) int64 classes 0..K-1.
        image_sizes: B sizes (H, W) of the images as the network saw them (unpadded).
        orig_sizes: B sizes (H, W) to map the boxes to (the images before resizing).
        nms_thresh: IoU above which greedy NMS suppresses (unused with ``soft_nms``).
        soft_nms: per-class Soft-NMS instead of NMS; the scores returned are the
            rescored ones, and the loop stops after ``detections_per_img`` picks.

    Returns:
        B dicts with ``boxes`` (D, 4) xyxy float32 in original pixels, ``scores`` (D,)
        descending, ``labels`` (D,) int64 in 0..K-1; D <= detections_per_img.
    """
    detections = []
    for index, ((height, width), (orig_h, orig_w)) in enumerate(zip(image_sizes, orig_sizes)):
        keep = scores[index] > MASKED
        image_boxes = clip_boxes_to_image(boxes[index][keep], (height, width))  # (C', 4)
        image_scores, image_labels = scores[index][keep], labels[index][keep]
        if soft_nms is None:
            kept = batched_nms(image_boxes, image_scores, image_labels, nms_thresh)[:detections_per_img]
            kept_scores = image_scores[kept]
        else:  # rescored scores; stops after detections_per_img picks (same picks as a full run)
            kept, kept_scores = batched_soft_nms(
                image_boxes, image_scores, image_labels, soft_nms.iou_threshold, soft_nms.sigma,
                soft_nms.score_threshold, soft_nms.method, max_kept=detections_per_img)
        detections.append({
            "boxes": scale_boxes(image_boxes[kept], (height, width), (orig_h, orig_w)),  # (D, 4)
            "scores": kept_scores,  # (D,)
            "labels": image_labels[kept],  # (D,)
        })
    return detections
