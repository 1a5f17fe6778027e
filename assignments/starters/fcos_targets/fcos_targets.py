"""FCOS targets: points, LTRB coding, centerness, candidates, assignment -- write `make_points`, `encode_ltrb`, `decode_ltrb`, `centerness_target`, `candidate_mask`, `assign_targets`.

Starter generated from the library by `python -m assignments start fcos_targets`.
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
from fcos_from_scratch.models.detectors.fcos import FCOS_SIZES_OF_INTEREST


def make_points(feature_sizes: Sequence[Tuple[int, int]], strides: Sequence[int], *,
                offset: float = 0.5, spacings: Optional[Sequence[Tuple[int, int]]] = None,
                dtype: torch.dtype = torch.float32, device=None) -> List[torch.Tensor]:
    """FCOS's points: the anchor grid with no anchor size, at ``offset`` within each cell.

    Args:
        feature_sizes: L sizes (H_l, W_l); strides: L strides s_l.
        offset: 0.5 = the cell centre (default); 0.0 = torchvision's anchor centres.
        spacings: L steps (step_y, step_x) between neighbouring points; default
            ``(s_l, s_l)`` (torchvision: padded input size // feature size per axis).

    Returns:
        L tensors (H_l * W_l, 2) of (x, y) pixels, row-major like ``feature.flatten(2)``:
        ``((col + offset) * step_x, (row + offset) * step_y)``.
    """
    raise NotImplementedError("write make_points: the library's version is 4 lines of code")


def centerness_target(ltrb: torch.Tensor) -> torch.Tensor:
    """``c* = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` ([fcos] Eq. (3)).

    1 at the box centre, 0 on its border; scale-free. ``ltrb``: (..., 4) >= 0.
    Returns (...,) in [0, 1]; 0 where a distance pair is (0, 0).
    """
    raise NotImplementedError("write centerness_target: the library's version is 4 lines of code")


def candidate_mask(points, strides, size_ranges, gt_boxes, center_sampling_radius: float):
    """Which (point, box) pairs may be positive, before resolving ambiguity.

    Args:
        points: (N, 2) (x, y) pixels; strides: (N,) stride of each point's level.
        size_ranges: (N, 2) [low, high) of max(l, t, r, b) for each point's level.
        gt_boxes: (B, M, 4) xyxy pixels.
        center_sampling_radius: r; <= 0 turns centre sampling off.

    Returns:
        (B, N, M) bool: inside the box, inside its centre region, and
        ``low <= max(l, t, r, b) < high``.
    """
    raise NotImplementedError("write candidate_mask: the library's version is 11 lines of code")


def assign_targets(points_per_level: Sequence[torch.Tensor], strides: Sequence[int],
                   gt_boxes: torch.Tensor, gt_labels: torch.Tensor, gt_valid: torch.Tensor, *,
                   sizes_of_interest: Sequence[float] = FCOS_SIZES_OF_INTEREST,
                   center_sampling_radius: float = 1.5) -> FCOSTargets:
    """FCOS target assignment for a batch ([fcos] Sec. 3.1-3.2, [fcos-imp] Sec. 2).

    One set of broadcast comparisons over a (B, N, M) grid -- no Python loop over
    images, levels, points or boxes.

    Args:
        points_per_level: L tensors (N_l, 2), (x, y) pixels, from :func:`make_points`.
        strides: L strides.
        gt_boxes: (B, M, 4) xyxy pixels, padded (see ``images.pad_ground_truth``).
        gt_labels: (B, M) int64 classes 0..K-1.
        gt_valid: (B, M) bool, False for padding rows.
        sizes_of_interest: L + 1 increasing bounds m_0..m_L (pixels).
        center_sampling_radius: r in strides ([fcos-imp]: 1.5); <= 0 turns it off.

    Returns:
        :class:`FCOSTargets` for the N = sum N_l points in level order.
    """
    raise NotImplementedError("write assign_targets: the library's version is 28 lines of code")


def encode_ltrb(points: torch.Tensor, boxes: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Distances from points to box sides, in strides ([fcos] Eq. (1), [fcos-imp]).

    ``(l, t, r, b) = (x - x1, y - y1, x2 - x, y2 - y) / s`` -- for example the
    regression targets of FCOS ([fcos] Eq. (1), normalised by the stride as in
    [fcos-imp]). Equals ``BoxLinearCoder(True).encode(squares, boxes)`` with ``squares``
    the ``s x s`` boxes centred on the points.

    Args:
        points: (N, 2) (x, y) pixels.
        boxes: (..., N, 4) xyxy pixels, one box per point.
        strides: (N,) stride of each point's level.

    Returns:
        (..., N, 4) distances in strides; all positive iff the point is strictly
        inside its box. Exact inverse of :func:`decode_ltrb` up to rounding.
    """
    raise NotImplementedError("write encode_ltrb: the library's version is 2 lines of code")


def decode_ltrb(points: torch.Tensor, ltrb: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Boxes from distances in strides: the inverse of :func:`encode_ltrb`.

    Args:
        points: (N, 2) or (..., N, 2) (x, y) pixels.
        ltrb: (..., N, 4) distances (l, t, r, b) divided by the stride.
        strides: (N,) stride of each point's level.

    Returns:
        (..., N, 4) xyxy pixels ``(x - l s, y - t s, x + r s, y + b s)``.
    """
    raise NotImplementedError("write decode_ltrb: the library's version is 2 lines of code")
