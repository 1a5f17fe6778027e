"""Non-maximum suppression: greedy, per category, and Soft-NMS -- write `nms`, `batched_nms`, `soft_nms`.

Starter generated from the library by `python -m assignments start nms`.
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
from fcos_from_scratch.ops import box_iou


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, equal to ``torchvision.ops.nms``.

    Visits the boxes by decreasing score and keeps a box unless a box kept before
    it has ``IoU > iou_threshold`` with it (strict: an IoU equal to the threshold
    does not suppress). IoU is :func:`~fcos_from_scratch.ops.box_iou` (continuous
    coordinates, 0 where the union is 0) and the comparison is the exact real
    comparison, as torchvision's kernel does in double precision.

    Tied scores are visited in increasing index order (a stable sort), which is
    what torchvision's CPU kernel does in practice.

    Args:
        boxes: (N, 4) xyxy boxes, any real dtype (float16/bfloat16 and integers
            are compared in float32, like ``box_iou``), finite; a box with
            ``x2 < x1`` is read as an empty box (it suppresses nothing and is
            suppressed by nothing).
        scores: (N,) scores, no NaN.
        iou_threshold: discard boxes with IoU > iou_threshold with a kept box.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.

    Raises:
        ValueError: bad shapes or types (also a ``RuntimeError``, as torchvision's,
            with its wording), NaN scores or threshold, NaN or inf coordinates.
    """
    raise NotImplementedError("write nms: the library's version is 17 lines of code")


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS run independently per category, equal to ``torchvision.ops.batched_nms``.

    Boxes with different ``idxs`` never suppress each other. The result equals
    running :func:`nms` on each category and merging the kept boxes by score.

    How: when ``#categories x (largest category)²`` is small enough, every
    category is solved at once on padded per-category IoU tensors
    (``ops/_per_class_nms.py``). Otherwise: the blocks of :func:`nms`, where a box
    only suppresses boxes of its own category (a mask inside a block; later boxes
    are compared category by category, so pairs of different categories are
    mostly never computed). The blocks first follow decreasing score over all
    categories, which is fast when kept boxes remove many later boxes; once a
    block removes fewer boxes than it holds, the rest is regrouped by category
    (each category a run of consecutive positions).
    Any order that visits each category by decreasing score gives the same
    per-category greedy result.

    The textbook way, and torchvision's below 1000 boxes, is the "coordinate
    offset trick": shift each category's boxes by ``idx * (max coordinate + 1)``
    so that categories cannot overlap, then run one NMS. We do not use it: the
    shifted coordinates are rounded (0.3 + 2048 is not exact in float32), which
    moves IoUs near the threshold, and the shift does not separate categories
    whose boxes have negative coordinates. Masking by category is exact.

    Args:
        boxes: (N, 4) xyxy boxes, as in :func:`nms`.
        scores: (N,) scores, no NaN.
        idxs: (N,) category of each box (integers; float ids are compared as
            numbers, as torchvision accepts them).
        iou_threshold: discard boxes with IoU > iou_threshold with a kept box of
            the same category.

    Returns:
        (K,) int64 indices of the kept boxes by decreasing score; tied scores in
        increasing index order. Empty ``boxes`` (any shape, ``numel() == 0``) give
        an empty result before any other argument is looked at, as torchvision
        (``batched_nms(torch.empty(0), None, None, None)`` is valid there).

    Raises:
        ValueError: as :func:`nms` (also a ``RuntimeError``), and for ``idxs``
            of the wrong shape or with NaN.
    """
    raise NotImplementedError("write batched_nms: the library's version is 9 lines of code")


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "linear",
    max_kept: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS with the rules of Bodla et al.'s reference implementation.

    Exactly, with ``s`` the current scores and IoU from
    :func:`~fcos_from_scratch.ops.box_iou` (continuous coordinates, no ``+ 1``):

    1. Boxes with ``s < score_threshold`` are dropped.
    2. While boxes remain: pick the one with the largest current ``s`` (ties: the
       lowest index), output it with its current score, remove it, and multiply
       every remaining ``s`` by the method's weight (strict ``IoU > iou_threshold``
       for "linear" and "hard"; "gaussian" decays every box, by 1 at IoU 0).
    3. Drop every remaining box with ``s < score_threshold`` (kept when equal).

    Comparisons and arithmetic are done in the IoU's dtype (float32 for float32,
    float16, bfloat16 and integer boxes; float64 for float64; scores in float64 make
    the scores float64) with the thresholds rounded to that dtype, as the reference
    does everything in float32; the Gaussian's exp is evaluated in float64 and
    rounded, like the reference's ``np.exp``.

    Differences from the reference (``cpu_soft_nms``): it measures IoU with
    ``+ 1`` pixel widths (the port has ``legacy_pixel=True`` for that); it never
    tests its *first* pick against the threshold, so it returns one box even when
    every score is below ``score_threshold`` -- we return none; and it breaks
    exact ties by a position that its swaps keep changing -- we use the index.

    Args:
        boxes: (N, 4) xyxy boxes.
        scores: (N,) float scores, no NaN.
        iou_threshold: N_t in [0, 1], for "linear" and "hard".
        sigma: the Gaussian's sigma > 0 (weight ``exp(-IoU^2 / sigma)``).
        score_threshold: boxes whose score falls below it are dropped.
        method: "linear", "gaussian" or "hard".
        max_kept: > 0 stops after that many picks (the first ``max_kept`` of the
            full result, identical); 0 = no limit.

    Returns:
        ``(keep, rescored_scores)``: (K,) int64 indices in the order they were
        picked, which is by non-increasing rescored score, and (K,) their scores
        after decay, in the dtype of ``scores``.
    """
    raise NotImplementedError("write soft_nms: the library's version is 17 lines of code")
