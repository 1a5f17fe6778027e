"""FCOS training targets: points, box coding, centerness and target assignment.

Every feature-map cell of every pyramid level is one *point* (a prediction), and
FCOS decides for each point which ground-truth box, if any, it must regress
([fcos] Sec. 3.1-3.2). The whole assignment is a handful of broadcast comparisons
over a (B, N, M) grid -- B images, N points of all levels, M ground-truth boxes
per image (padded to the largest M with a validity mask) -- with no Python loop
over images, levels, points or boxes.

Conventions (also in ``docs/CONVENTIONS.md``):

* **Points** sit at the centre of their stride cell: column ``i`` of a level with
  stride ``s`` is at ``x = (i + 0.5) * s``. The original FCOS code uses
  ``floor(s / 2) + i * s``, identical for the even strides (8 ... 128) used here;
  torchvision's FCOS puts its anchors' centres at ``i * s`` (half a cell up-left).
* **Box coding**: a point ``(x, y)`` regresses the distances
  ``(l, t, r, b) = (x - x1, y - y1, x2 - x, y2 - y)`` ([fcos] Eq. (1)) divided by the
  stride of its level (the "normalised regression targets" of the FCOS code and
  torchvision's ``BoxLinearCoder(normalize_by_size=True)``).
* **Sizes of interest**: level ``l`` keeps a (point, box) pair when
  ``m[l] <= max(l, t, r, b) < m[l + 1]`` -- lower bound inclusive, upper bound
  exclusive, so every distance falls in exactly one range. The paper
  ([fcos] Sec. 3.2) keeps ``m[l-1] <= max <= m[l]`` (both inclusive, a distance of
  exactly 64 goes to P3 *and* P4); torchvision keeps ``m[l-1] < max < m[l]`` (both
  exclusive, exactly 64 goes nowhere). The three agree except at exact equality.
* **Centre sampling** ([fcos-imp], the FCOS code): a point is a candidate only if it
  lies strictly inside the box *and* strictly inside the square of half-side
  ``radius * stride`` around the box centre: ``max(|x - cx|, |y - cy|) < r * s``.
  Same strict inequalities as torchvision.
* **Ambiguity**: a point that is a candidate for several boxes takes the one with
  the smallest area ([fcos] Sec. 3.1); equal areas go to the lower box index.

Papers:
    [fcos] Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019.
    [fcos-imp] Tian et al., "FCOS: A Simple and Strong Anchor-free Object Detector",
        TPAMI 2022 (centre sampling, normalised targets, GIoU).
"""

import math
from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch

from ..ops import box_area

BACKGROUND = -1  # label / matched index of a point that regresses no box

# [fcos] Sec. 3.2: m2..m7 = 0, 64, 128, 256, 512, inf for P3..P7.
FCOS_SIZES_OF_INTEREST = (0.0, 64.0, 128.0, 256.0, 512.0, math.inf)


# ---------------------------------------------------------------------------
# Points
# ---------------------------------------------------------------------------

def make_points(
    feature_sizes: Sequence[Tuple[int, int]],
    strides: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> List[torch.Tensor]:
    """The (x, y) image location of every cell of every pyramid level.

    Args:
        feature_sizes: L sizes (H_l, W_l) of the feature maps.
        strides: L strides s_l in pixels.
        dtype, device: of the result.

    Returns:
        L tensors of shape (H_l * W_l, 2), (x, y) pixels, row-major like
        ``feature.flatten(2)``: point ``row * W_l + col`` is at
        ``((col + 0.5) * s_l, (row + 0.5) * s_l)``.
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(
            f"feature_sizes has {len(feature_sizes)} levels but strides has {len(strides)}"
        )
    points_per_level = []
    for (height, width), stride in zip(feature_sizes, strides):
        xs = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride  # (W,)
        ys = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride  # (H,)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
        points_per_level.append(torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2))  # (HW, 2)
    return points_per_level


def per_point_values(values: Sequence[float], counts: Sequence[int], like: torch.Tensor):
    """Repeat one value per level into one value per point: (N,) with N = sum(counts)."""
    values = torch.tensor(values, dtype=like.dtype, device=like.device)  # (L,)
    counts = torch.tensor(counts, device=like.device)
    return values.repeat_interleave(counts)  # (N,)


# ---------------------------------------------------------------------------
# Box coding and centerness
# ---------------------------------------------------------------------------

def encode_ltrb(points: torch.Tensor, boxes: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Distances from points to box sides, in strides ([fcos] Eq. (1)).

    Args:
        points: (N, 2) (x, y) pixels.
        boxes: (..., N, 4) xyxy pixels, one box per point.
        strides: (N,) stride of each point's level.

    Returns:
        (..., N, 4) ``(x - x1, y - y1, x2 - x, y2 - y) / stride``; all positive iff the
        point is strictly inside its box. Exact inverse of :func:`decode_ltrb`.
    """
    ltrb = torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)  # (..., N, 4)
    return ltrb / strides[:, None]


def decode_ltrb(points: torch.Tensor, ltrb: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Boxes from distances in strides: inverse of :func:`encode_ltrb`.

    Args:
        points: (N, 2) or (..., N, 2) (x, y) pixels.
        ltrb: (..., N, 4) distances (l, t, r, b) divided by the stride.
        strides: (N,) stride of each point's level.

    Returns:
        (..., N, 4) xyxy pixels ``(x - l s, y - t s, x + r s, y + b s)``.
    """
    distances = ltrb * strides[:, None]  # (..., N, 4) pixels
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def centerness_target(ltrb: torch.Tensor) -> torch.Tensor:
    """Centerness of a point inside its box ([fcos] Eq. (3)).

    ``c* = sqrt( min(l, r) / max(l, r) * min(t, b) / max(t, b) )``: 1 at the box
    centre, 0 on its border. Scale-free, so ``ltrb`` may be in pixels or strides.

    Args:
        ltrb: (..., 4) non-negative distances (l, t, r, b).

    Returns:
        (...,) centerness in [0, 1]; 0 where a distance pair is (0, 0).
    """
    left_right, top_bottom = ltrb[..., 0::2], ltrb[..., 1::2]  # (..., 2) each
    ratio_x = left_right.min(dim=-1).values / left_right.max(dim=-1).values.clamp(min=1e-12)
    ratio_y = top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values.clamp(min=1e-12)
    return torch.sqrt((ratio_x * ratio_y).clamp(min=0))


# ---------------------------------------------------------------------------
# Ground truth, padded to a rectangle
# ---------------------------------------------------------------------------

def pad_ground_truth(targets: Sequence[Dict[str, torch.Tensor]], device=None):
    """Stack per-image ``boxes``/``labels`` into padded (B, M_max) tensors.

    Args:
        targets: B dicts with ``boxes`` (M_b, 4) xyxy pixels and ``labels`` (M_b,)
            int in 0..K-1.

    Returns:
        boxes (B, M, 4) float32, labels (B, M) int64, valid (B, M) bool, with
        M = max(1, max_b M_b); padded rows are zero boxes with ``valid = False``.
    """
    batch = len(targets)
    for index, target in enumerate(targets):
        for key in ("boxes", "labels"):
            if key not in target:
                raise ValueError(f"targets[{index}] has no {key!r} (keys: {sorted(target)})")
        boxes, labels = target["boxes"], target["labels"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{index}]['boxes'] must be (M, 4), got {tuple(boxes.shape)}")
        if labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"targets[{index}]['labels'] must be ({boxes.shape[0]},), got {tuple(labels.shape)}"
            )
    device = device if device is not None else (targets[0]["boxes"].device if targets else None)
    max_boxes = max([1] + [len(t["boxes"]) for t in targets])
    boxes = torch.zeros(batch, max_boxes, 4, dtype=torch.float32, device=device)
    labels = torch.zeros(batch, max_boxes, dtype=torch.int64, device=device)
    valid = torch.zeros(batch, max_boxes, dtype=torch.bool, device=device)
    for index, target in enumerate(targets):  # a copy per image; the maths below is batched
        count = len(target["boxes"])
        boxes[index, :count] = target["boxes"].to(device=device, dtype=torch.float32)
        labels[index, :count] = target["labels"].to(device=device, dtype=torch.int64)
        valid[index, :count] = True
    return boxes, labels, valid


# ---------------------------------------------------------------------------
# Assignment
# ---------------------------------------------------------------------------

class FCOSTargets(NamedTuple):
    """What each point must predict; N = points of all levels, concatenated."""

    matched_idxs: torch.Tensor  # (B, N) int64 index into the image's boxes, BACKGROUND if none
    labels: torch.Tensor  # (B, N) int64 class 0..K-1, BACKGROUND if none
    boxes: torch.Tensor  # (B, N, 4) xyxy pixels of the matched box (zeros for background)
    ltrb: torch.Tensor  # (B, N, 4) encode_ltrb of the matched box (zeros for background)
    centerness: torch.Tensor  # (B, N) centerness target (0 for background)


def candidate_mask(
    points: torch.Tensor,
    strides: torch.Tensor,
    size_ranges: torch.Tensor,
    gt_boxes: torch.Tensor,
    center_sampling_radius: float,
) -> torch.Tensor:
    """Which (point, box) pairs may be positive, before resolving ambiguity.

    Args:
        points: (N, 2) (x, y) pixels.
        strides: (N,) stride of each point's level.
        size_ranges: (N, 2) [low, high) of max(l, t, r, b) for each point's level.
        gt_boxes: (B, M, 4) xyxy pixels.
        center_sampling_radius: r; 0 or less turns centre sampling off (any point
            inside the box is a candidate, [fcos] Sec. 3.1 before [fcos-imp]).

    Returns:
        (B, N, M) bool: inside the box, inside its centre region, and
        ``low <= max(l, t, r, b) < high``.
    """
    x, y = points[:, 0, None], points[:, 1, None]  # (N, 1) each
    x1, y1, x2, y2 = gt_boxes[:, None].unbind(dim=-1)  # (B, 1, M) each
    ltrb = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1)  # (B, N, M, 4) pixels
    inside_box = ltrb.min(dim=-1).values > 0  # (B, N, M)
    max_distance = ltrb.max(dim=-1).values  # (B, N, M)
    low, high = size_ranges[:, 0, None], size_ranges[:, 1, None]  # (N, 1) each
    mask = inside_box & (max_distance >= low) & (max_distance < high)
    if center_sampling_radius > 0:
        offset_x = (x - (x1 + x2) / 2).abs()  # (B, N, M)
        offset_y = (y - (y1 + y2) / 2).abs()
        radius = center_sampling_radius * strides[:, None]  # (N, 1)
        mask &= torch.maximum(offset_x, offset_y) < radius
    return mask


def assign_targets(
    points_per_level: Sequence[torch.Tensor],
    strides: Sequence[int],
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_valid: torch.Tensor,
    *,
    sizes_of_interest: Sequence[float] = FCOS_SIZES_OF_INTEREST,
    center_sampling_radius: float = 1.5,
) -> FCOSTargets:
    """FCOS target assignment for a batch ([fcos] Sec. 3.1-3.2, [fcos-imp] Sec. 2).

    Args:
        points_per_level: L tensors (N_l, 2), (x, y) pixels, from :func:`make_points`.
        strides: L strides.
        gt_boxes: (B, M, 4) xyxy pixels, padded (see :func:`pad_ground_truth`).
        gt_labels: (B, M) int64 classes 0..K-1.
        gt_valid: (B, M) bool, False for padding rows.
        sizes_of_interest: L + 1 increasing bounds m_0..m_L; level l keeps
            ``m_l <= max(l, t, r, b) < m_{l+1}`` (pixels). Default [fcos] Sec. 3.2.
        center_sampling_radius: r in strides ([fcos-imp]: 1.5); <= 0 turns it off.

    Returns:
        :class:`FCOSTargets` for the N = sum N_l points in level order.
    """
    num_levels = len(points_per_level)
    if len(strides) != num_levels or len(sizes_of_interest) != num_levels + 1:
        raise ValueError(
            f"need one stride per level and L + 1 sizes_of_interest for L = {num_levels} "
            f"levels, got strides={list(strides)} sizes_of_interest={list(sizes_of_interest)}"
        )
    if any(a >= b for a, b in zip(sizes_of_interest[:-1], sizes_of_interest[1:])):
        raise ValueError(f"sizes_of_interest must increase strictly, got {list(sizes_of_interest)}")
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be (B, M, 4), got {tuple(gt_boxes.shape)}")
    points = torch.cat(list(points_per_level), dim=0)  # (N, 2)
    counts = [len(p) for p in points_per_level]
    point_strides = per_point_values(strides, counts, points)  # (N,)
    size_ranges = torch.stack([
        per_point_values(sizes_of_interest[:-1], counts, points),
        per_point_values(sizes_of_interest[1:], counts, points),
    ], dim=-1)  # (N, 2)

    gt_boxes = gt_boxes.to(points.dtype)
    mask = candidate_mask(points, point_strides, size_ranges, gt_boxes, center_sampling_radius)
    mask &= gt_valid[:, None, :]  # (B, N, M)

    # A point inside several candidate boxes regresses the smallest ([fcos] Sec. 3.1).
    areas = box_area(gt_boxes.reshape(-1, 4)).reshape(gt_boxes.shape[:2])  # (B, M)
    areas = torch.where(mask, areas[:, None, :], torch.full_like(areas[:, None, :], math.inf))
    min_area, matched = areas.min(dim=-1)  # (B, N); ties -> first index
    positive = torch.isfinite(min_area)  # (B, N)
    matched = torch.where(positive, matched, torch.full_like(matched, BACKGROUND))

    safe = matched.clamp(min=0)  # (B, N) gather index; background rows masked below
    boxes = torch.gather(gt_boxes, 1, safe[..., None].expand(-1, -1, 4))  # (B, N, 4)
    boxes = boxes * positive[..., None]
    labels = torch.where(positive, torch.gather(gt_labels, 1, safe), torch.full_like(matched, BACKGROUND))
    ltrb = encode_ltrb(points, boxes, point_strides) * positive[..., None]  # (B, N, 4)
    centerness = centerness_target(ltrb) * positive  # (B, N)
    return FCOSTargets(matched, labels, boxes, ltrb, centerness)
