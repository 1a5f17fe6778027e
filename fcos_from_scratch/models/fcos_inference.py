"""From FCOS head outputs to detections ([fcos] Sec. 3.3 and Sec. 4.1).

1. Per level, a (point, class) pair is a candidate when its class probability
   ``sigmoid(cls)`` exceeds ``score_thresh`` (0.05, [fcos] Sec. 4.1).
2. Its score is ``sqrt(sigmoid(cls) * sigmoid(ctr))`` -- centerness down-weights
   boxes predicted far from an object's centre ([fcos] Sec. 3.3; the square root,
   from the FCOS code and torchvision, keeps the score on a probability scale).
3. Per level, the best ``topk_candidates`` (1000) pairs by score are kept; or, with
   ``per_class_topk = k > 0``, the best k *per class* (seed 001: a global top-k
   lets frequent classes crowd out rare ones).
4. Per image: boxes decoded from (point, ltrb, stride), clipped to the image, class-
   aware NMS at IoU ``nms_thresh`` (0.6), the best ``detections_per_img`` (100) kept,
   and boxes rescaled from the network's input size to the original image size.

Steps 1-3 run on the whole batch at once; step 4 loops over images because each
keeps a different number of boxes.
"""

from typing import Dict, List, Sequence, Tuple

import torch

from ..ops import batched_nms, clip_boxes_to_image
from .fcos_targets import decode_ltrb

MASKED = -1.0  # score of a pair below the threshold (real scores are >= 0)


def _top_candidates(scores: torch.Tensor, topk: int, per_class_topk: int):
    """Top-k (point, class) pairs of one level for every image.

    Args:
        scores: (B, N_l, K) scores, MASKED below the threshold.

    Returns:
        scores (B, C), point indices (B, C), labels (B, C) with C candidates.
    """
    batch, num_points, num_classes = scores.shape
    if per_class_topk > 0:
        k = min(per_class_topk, num_points)
        top_scores, points = scores.topk(k, dim=1)  # (B, k, K): best points of each class
        labels = torch.arange(num_classes, device=scores.device).expand(batch, k, num_classes)
        return top_scores.flatten(1), points.flatten(1), labels.flatten(1)  # (B, k*K)
    k = min(topk, num_points * num_classes)
    top_scores, flat = scores.flatten(1).topk(k, dim=1)  # (B, k) over all (point, class)
    return top_scores, flat // num_classes, flat % num_classes


def select_candidates(
    cls_logits: torch.Tensor,
    box_ltrb: torch.Tensor,
    ctr_logits: torch.Tensor,
    points_per_level: Sequence[torch.Tensor],
    strides: Sequence[int],
    *,
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    per_class_topk: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-3 for the whole batch.

    Args:
        cls_logits: (B, N, K); box_ltrb: (B, N, 4) in strides; ctr_logits: (B, N).
        points_per_level: L tensors (N_l, 2), (x, y) pixels; strides: L strides.

    Returns:
        boxes (B, C, 4) xyxy pixels of the network input, scores (B, C) (MASKED
        where not a candidate), labels (B, C) int64; C = candidates of all levels.
    """
    boxes, scores, labels = [], [], []
    start = 0
    for points, stride in zip(points_per_level, strides):
        end = start + len(points)
        cls_prob = torch.sigmoid(cls_logits[:, start:end].float())  # (B, N_l, K)
        ctr_prob = torch.sigmoid(ctr_logits[:, start:end].float())  # (B, N_l)
        score = torch.sqrt(cls_prob * ctr_prob[..., None])  # (B, N_l, K)
        score = torch.where(cls_prob > score_thresh, score, torch.full_like(score, MASKED))
        top_scores, point_idx, top_labels = _top_candidates(score, topk_candidates, per_class_topk)
        ltrb = torch.gather(box_ltrb[:, start:end].float(), 1, point_idx[..., None].expand(-1, -1, 4))
        level_strides = torch.full((point_idx.shape[1],), float(stride), device=ltrb.device)
        boxes.append(decode_ltrb(points[point_idx], ltrb, level_strides))  # (B, C_l, 4)
        scores.append(top_scores)
        labels.append(top_labels)
        start = end
    return torch.cat(boxes, dim=1), torch.cat(scores, dim=1), torch.cat(labels, dim=1)


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_sizes: Sequence[Tuple[int, int]],
    orig_sizes: Sequence[Tuple[int, int]],
    *,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
) -> List[Dict[str, torch.Tensor]]:
    """Step 4: clip, NMS, keep the best, map back to original image coordinates.

    Args:
        boxes, scores, labels: from :func:`select_candidates`.
        image_sizes: B sizes (H, W) of the images as the network saw them (unpadded).
        orig_sizes: B sizes (H, W) to map the boxes to (the images before resizing).

    Returns:
        B dicts with ``boxes`` (D, 4) xyxy float32 in original pixels, ``scores`` (D,)
        descending, ``labels`` (D,) int64 in 0..K-1; D <= detections_per_img.
    """
    detections = []
    for index, ((height, width), (orig_h, orig_w)) in enumerate(zip(image_sizes, orig_sizes)):
        keep = scores[index] > MASKED
        image_boxes = clip_boxes_to_image(boxes[index][keep], (height, width))  # (C', 4)
        image_scores, image_labels = scores[index][keep], labels[index][keep]
        kept = batched_nms(image_boxes, image_scores, image_labels, nms_thresh)[:detections_per_img]
        scale = torch.tensor(
            [orig_w / width, orig_h / height] * 2, dtype=image_boxes.dtype, device=image_boxes.device
        )
        detections.append({
            "boxes": image_boxes[kept] * scale,  # (D, 4)
            "scores": image_scores[kept],  # (D,)
            "labels": image_labels[kept],  # (D,)
        })
    return detections
