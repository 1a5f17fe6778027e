"""The FCOS loss and inference -- write `fcos_loss`, `select_candidates`, `top_candidates`, `postprocess_detections`.

Starter generated from the library by `python -m assignments start fcos_loss_inference`.
Keep every signature and docstring as they are; replace each
`raise NotImplementedError` with your code. You may import from
`fcos_from_scratch` anything this unit does not ask you to write.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from fcos_from_scratch.models.detectors.fcos import SCORE_THRESH_ON, FCOSConfig
from fcos_from_scratch.models.matching import BACKGROUND
from fcos_from_scratch.models.postprocess import MASKED
from fcos_from_scratch.ops import batched_nms, clip_boxes_to_image, generalized_box_iou_loss, sigmoid_focal_loss
from fcos_from_scratch.ops.box_coders import decode_ltrb, ltrb_to_local_box


def fcos_loss(cls_logits: torch.Tensor, box_ltrb: torch.Tensor, ctr_logits: torch.Tensor,
              target_labels: torch.Tensor, target_ltrb: torch.Tensor, target_centerness: torch.Tensor,
              config: FCOSConfig) -> Dict[str, torch.Tensor]:
    """The three weighted FCOS loss terms ([fcos] Eq. (2), [fcos-imp] refinements)::

        L = w_cls / N_pos * sum_points  FL(p, c*)                  (focal [focal] Eq. (5))
          + w_box / sum(c*) * sum_pos   c* . (1 - GIoU(box, box*))  (GIoU [giou])
          + w_ctr / N_pos * sum_pos     BCE(ctr, c*)                (centerness [fcos] Eq. (3))

    ``box_weighting="none"`` gives torchvision's box term: unweighted, over N_pos.
    GIoU is invariant to translation and scale, so boxes are compared in the point's
    own frame in stride units: the prediction (l, t, r, b) is the box (-l, -t, r, b).
    Under ``torch.distributed`` N_pos and sum(c*) are averaged over processes, so
    DDP's gradient averaging gives the gradient of the global-batch loss.

    Args:
        cls_logits: (B, N, K); box_ltrb: (B, N, 4) in strides, >= 0; ctr_logits: (B, N).
        target_labels: (B, N) int64 class 0..K-1, BACKGROUND for background.
        target_ltrb: (B, N, 4) target distances in strides (used on positives).
        target_centerness: (B, N) centerness targets c* (used on positives).
        config: its ``focal_*``, ``*_weight`` and ``box_weighting`` fields.

    Returns:
        ``{"loss_cls", "loss_box", "loss_ctr"}``, scalars already weighted. Finite
        and differentiable also when the batch has no positive point.
    """
    raise NotImplementedError("write fcos_loss: the library's version is 27 lines of code")


def select_candidates(cls_logits, box_ltrb, ctr_logits, points_per_level, strides, *,
                      score_thresh: float = 0.05, topk_candidates: int = 1000, per_class_topk: int = 0,
                      score_thresh_on: str = "class"):
    """Per level: threshold, score, top-k, decode ([fcos] Sec. 3.3, Sec. 4.1).

    A (point, class) pair is a candidate when ``sigmoid(cls) > score_thresh``; its
    score is ``sqrt(sigmoid(cls) * sigmoid(ctr))`` (centerness down-weights boxes far
    from an object's centre; the square root, from [fcos-code] and [torchvision],
    keeps it on a probability scale). With ``score_thresh_on="score"`` the threshold
    applies to that score instead (torchvision, whose threshold is 0.2).

    Args:
        cls_logits: (B, N, K); box_ltrb: (B, N, 4) in strides; ctr_logits: (B, N).
        points_per_level: L tensors (N_l, 2), (x, y) pixels; strides: L strides.
        score_thresh_on: "class" or "score" (see above).

    Returns:
        boxes (B, C, 4) xyxy pixels of the network input, scores (B, C) (MASKED
        where not a candidate), labels (B, C) int64; C = candidates of all levels.
    """
    raise NotImplementedError("write select_candidates: the library's version is 19 lines of code")


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
    raise NotImplementedError("write top_candidates: the library's version is 9 lines of code")


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
    raise NotImplementedError("write postprocess_detections: the library's version is 18 lines of code")
