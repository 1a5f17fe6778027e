"""FCOS: a fully convolutional, anchor-free one-stage detector ([fcos], [fcos-imp]).

The whole detector, top to bottom: config -> head -> targets -> loss -> inference
-> model. Shared parts come from their own modules (images, trunk, FPN, head
blocks, grid points, box coding, post-processing)::

    images in [0, 1] --normalise, pad to /32--> trunk (C3..C5) --> FPN (P3..P7)
        (``first_level=2``: trunk C2..C4 --> FPN P2..P4, for objects of ~10 px)
        --> head: per point, K class logits, (l, t, r, b) distances, centerness
        train: assign_targets --> fcos_loss --> {"loss_cls", "loss_box", "loss_ctr"}
        eval:  select_candidates --> postprocess_detections --> [{"boxes", "scores", "labels"}]

Call convention: that of every detector here (``fcos_from_scratch.models``); the
targets may also carry ``image_size`` (the unpadded size inside a padded batch)
and ``orig_size`` (the size before the data pipeline resized the image), so
detections are clipped to the first and scaled to the second.

Conventions (the choices where references disagree are in ``docs/CONVENTIONS.md``):
points at ``((col + 0.5) s, (row + 0.5) s)``; targets ``(l, t, r, b) / s``
([fcos] Eq. (1)); level l keeps ``m_l <= max(l, t, r, b) < m_{l+1}``; centre
sampling strictly inside ``radius * s`` of the box centre ([fcos-imp]); a point
inside several boxes takes the smallest ([fcos] Sec. 3.1), ties to the lower index.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...comm import all_reduce_mean
from ...ops import box_area, generalized_box_iou_loss, sigmoid_focal_loss
from ...ops.box_coders import decode_ltrb, encode_ltrb, ltrb_to_local_box
from ..anchors import grid_points, per_level_values
from ..backbones.detection_trunk import build_trunk
from ..fpn import FPN
from ..heads import concat_levels, conv_tower, init_normal_, prior_bias
from ..images import (IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor, check_labels,
                      pad_ground_truth, sizes_from_targets)
from ..matching import BACKGROUND
from ..postprocess import MASKED, postprocess_detections, top_candidates

# [fcos] Sec. 3.2: m2..m7 = 0, 64, 128, 256, 512, inf for P3..P7.
FCOS_SIZES_OF_INTEREST = (0.0, 64.0, 128.0, 256.0, 512.0, math.inf)
REG_ACTIVATIONS = ("relu", "exp")
BOX_WEIGHTINGS = ("centerness", "none")
POINT_SPACINGS = ("stride", "grid")  # see FCOS.point_spacings
SCORE_THRESH_ON = ("class", "score")  # what score_thresh is compared with (see select_candidates)
MAX_EXP_INPUT = math.log(1e4)  # exp regression is capped at 10^4 strides (no overflow)


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FCOSConfig:
    """Every FCOS option; defaults are the paper's ([fcos] Sec. 4) unless noted.

    ``sizes_of_interest=()`` means [fcos]'s (0, 64, 128, 256, 512, inf) for the first
    ``num_levels`` levels, the last range open-ended.
    """

    num_classes: int = 0  # K, the number of object classes (required; no background class)
    # --- trunk and pyramid -------------------------------------------------
    backbone: str = "resnet50"  # feature trunk: resnet18/34/50, mobilenet_v2, vovnet27_slim, "tiny" (CPU); [fcos] Sec. 4
    pretrained: str = ""  # weights the trunk starts from: "imagenet" (torchvision's), a path or URL; "" = random init
    frozen_bn: Optional[bool] = None  # freeze the trunk's BatchNorm; None = frozen iff pretrained ([fcos-light] froze BN)
    trainable_layers: int = -1  # trunk stages that train (the rest frozen); -1 = default (torchvision: 3 if pretrained, else all)
    fpn_channels: int = 256  # channels of every pyramid level and of the head; [fpn], [fcos]
    num_levels: int = 5  # pyramid levels from P_first_level: 5 = P3..P7 ([fcos] Sec. 3.2), 3 = P3..P5
    first_level: int = 3  # finest level: 3 = P3 ([fcos]); 2 = P2 (stride 4, from C2) for objects of ~10 px
    fpn_extra_source: str = "p5"  # input of the extra levels P6/P7: "p5" ([fcos-code], [fcos-light]), "c5" ([focal]), "maxpool", "none"
    fpn_norm: Optional[str] = None  # normalisation after each FPN conv: none, "bn" or "gn" ([torchvision]'s norm_layer)
    # --- head ----------------------------------------------------------------
    head_convs: int = 4  # 3x3 convs in each head tower (classification, regression); [fcos] Fig. 2
    prior_prob: float = 0.01  # initial foreground probability of every class logit (bias init); [focal] Sec. 3.3
    reg_activation: str = "relu"  # makes (l, t, r, b) positive: "relu" ([fcos-code], [torchvision]) or "exp" ([fcos] Sec. 3.2)
    level_scales: bool = True  # a learnable scale s_l on each level's regression, [fcos] Sec. 3.2; False = [torchvision] (none)
    point_offset: float = 0.5  # where a feature cell's point sits: (i + 0.5) s = cell centre ([fcos] Sec. 3.1); 0.0 = [torchvision]'s i s
    point_spacing: str = "stride"  # spacing s_l of the points: the level's stride, or "grid" = [torchvision]'s padded input size // feature size
    # --- targets ---------------------------------------------------------------
    sizes_of_interest: Tuple[float, ...] = ()  # box-size bounds m_l deciding each object's level; () = [fcos] Sec. 3.2 (see above)
    center_sampling_radius: float = 1.5  # positives only within this many strides of a box centre ([fcos-imp]); <= 0 = off
    # --- loss --------------------------------------------------------------------
    focal_alpha: float = 0.25  # focal-loss weight of positives vs. negatives; [focal] Sec. 3.2
    focal_gamma: float = 2.0  # focal-loss focusing exponent (0 = cross-entropy); [focal] Sec. 3.2
    cls_weight: float = 1.0  # weight of the classification loss; [fcos] Eq. (2)
    box_weight: float = 1.0  # weight of the box (IoU) loss, lambda = 1 in [fcos] Eq. (2)
    centerness_weight: float = 1.0  # weight of the centerness loss; [fcos] Sec. 3.3 (1.0), [cs771-hw3] used 2.0
    box_weighting: str = "centerness"  # per-point weights of the box loss: "centerness" ([fcos-code]) or "none" ([torchvision])
    # --- inference -----------------------------------------------------------------
    score_thresh: float = 0.05  # inference: candidates scoring below this are dropped; [fcos] Sec. 4.1
    score_thresh_on: str = "class"  # what score_thresh tests: sigmoid(cls) ([fcos] Sec. 4.1) or "score" = [torchvision]'s sqrt(cls ctr)
    topk_candidates: int = 1000  # inference: best candidates kept per level before NMS; [fcos] Sec. 4.1
    per_class_topk: int = 0  # > 0: keep the top-k candidates per class instead of per level ([cs771-hw3])
    nms_thresh: float = 0.6  # IoU above which NMS suppresses the lower-scoring box; [fcos] Sec. 4.1
    detections_per_img: int = 100  # most detections returned per image; [fcos] Sec. 4.1
    # --- input ---------------------------------------------------------------------
    image_mean: Tuple[float, ...] = IMAGENET_MEAN  # per-channel mean subtracted from the [0, 1] RGB input; [torchvision]'s detection transform
    image_std: Tuple[float, ...] = IMAGENET_STD  # per-channel std the input is divided by; [torchvision]'s detection transform
    size_divisible: int = 32  # batches are padded to a multiple of this (C5 has stride 32)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not 1 <= self.num_levels <= 7 or self.head_convs < 0:
            raise ValueError(f"need 1 <= num_levels <= 7 and head_convs >= 0, got "
                             f"{self.num_levels}, {self.head_convs}")
        if self.first_level not in (2, 3):
            raise ValueError(f"first_level must be 2 (P2) or 3 (P3), got {self.first_level}")
        if self.first_level != 3 and not self.sizes_of_interest:
            raise ValueError("first_level=2 needs sizes_of_interest (the [fcos] defaults are for P3..P7)")
        if self.sizes_of_interest and len(self.sizes_of_interest) != self.num_levels + 1:
            raise ValueError(f"sizes_of_interest needs num_levels + 1 = {self.num_levels + 1} "
                             f"bounds, got {self.sizes_of_interest}")
        if self.reg_activation not in REG_ACTIVATIONS:
            raise ValueError(f"reg_activation must be one of {REG_ACTIVATIONS}, got {self.reg_activation!r}")
        if self.point_spacing not in POINT_SPACINGS:
            raise ValueError(f"point_spacing must be one of {POINT_SPACINGS}, got {self.point_spacing!r}")
        if self.score_thresh_on not in SCORE_THRESH_ON:
            raise ValueError(f"score_thresh_on must be one of {SCORE_THRESH_ON}, got {self.score_thresh_on!r}")
        if self.box_weighting not in BOX_WEIGHTINGS:
            raise ValueError(f"box_weighting must be one of {BOX_WEIGHTINGS}, got {self.box_weighting!r}")
        for name in ("cls_weight", "box_weight", "centerness_weight", "focal_gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values, got {self.image_mean} "
                             f"and {self.image_std}")

    @property
    def strides(self) -> Tuple[int, ...]:
        return tuple(2 ** (self.first_level + level) for level in range(self.num_levels))  # P_k: stride 2^k

    @property
    def level_ranges(self) -> Tuple[float, ...]:
        if self.sizes_of_interest:
            return tuple(float(s) for s in self.sizes_of_interest)
        return FCOS_SIZES_OF_INTEREST[: self.num_levels] + (math.inf,)


# ---------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------

class FCOSHead(nn.Module):
    """Class, box and centerness predictions for every point of every level ([fcos] Fig. 2).

    Two towers of 3x3 conv + GroupNorm + ReLU, shared by all levels; class logits
    on the first, box distances and centerness on the second ([fcos-imp]; [fcos]
    had centerness on the classification tower). One learnable scale ``s_l`` per
    level ([fcos] Sec. 3.2) lets shared weights serve different ranges:
    ``"relu"`` gives ``relu(s_l x)`` ([fcos-code], [torchvision]), ``"exp"`` gives
    ``exp(s_l x)`` (the paper). The centerness bias starts at 0 (predicted 0.5,
    which [cs771-hw3] found to help its loss converge).

    Args:
        in_channels: width of the pyramid levels.
        num_classes: K foreground classes (no background logit).
        num_levels: L, one learnable regression scale each.
        num_convs: convs per tower ([fcos]: 4; fewer is faster on a CPU).
        prior_prob: pi of the class-logit bias ([focal] Sec. 3.3: 0.01).
        reg_activation: "relu" or "exp".
        level_scales: learn one scale s_l per level ([fcos] Sec. 3.2, default);
            False fixes s_l = 1, as torchvision's head (which has none).
    """

    def __init__(self, in_channels: int, num_classes: int, num_levels: int, num_convs: int = 4,
                 prior_prob: float = 0.01, reg_activation: str = "relu", level_scales: bool = True) -> None:
        super().__init__()
        if num_classes < 1 or num_levels < 1 or num_convs < 0:
            raise ValueError(f"need num_classes >= 1, num_levels >= 1, num_convs >= 0; got "
                             f"{num_classes}, {num_levels}, {num_convs}")
        if reg_activation not in REG_ACTIVATIONS:
            raise ValueError(f"reg_activation must be one of {REG_ACTIVATIONS}, got {reg_activation!r}")
        self.num_classes = num_classes
        self.reg_activation = reg_activation
        self.cls_tower = conv_tower(in_channels, num_convs)
        self.reg_tower = conv_tower(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        if level_scales:
            self.scales = nn.Parameter(torch.ones(num_levels))  # s_l, [fcos] Sec. 3.2
        else:  # constant 1 (x * 1.0 is exact), not in the state dict: torchvision's keys
            self.register_buffer("scales", torch.ones(num_levels), persistent=False)
        init_normal_(self, std=0.01)  # [fcos] Sec. 4
        nn.init.constant_(self.cls_logits.bias, prior_bias(prior_prob))

    def forward(self, features: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run both towers on every level and concatenate the levels.

        Args:
            features: L tensors (B, C, H_l, W_l), finest first.

        Returns:
            cls_logits (B, N, K), box_ltrb (B, N, 4) non-negative distances in
            strides, centerness_logits (B, N); N = sum_l H_l * W_l in level order.
        """
        if len(features) != self.scales.numel():
            raise ValueError(f"expected {self.scales.numel()} pyramid levels, got {len(features)}")
        cls_per_level, box_per_level, ctr_per_level = [], [], []
        for level, feature in enumerate(features):
            cls_per_level.append(self.cls_logits(self.cls_tower(feature)))  # (B, K, H, W)
            reg_feature = self.reg_tower(feature)  # (B, C, H, W)
            raw = self.bbox_pred(reg_feature) * self.scales[level]  # (B, 4, H, W)
            if self.reg_activation == "exp":
                box_per_level.append(torch.exp(raw.clamp(max=MAX_EXP_INPUT)))
            else:
                box_per_level.append(torch.relu(raw))
            ctr_per_level.append(self.centerness(reg_feature))  # (B, 1, H, W)
        return (concat_levels(cls_per_level),  # (B, N, K)
                concat_levels(box_per_level),  # (B, N, 4)
                concat_levels(ctr_per_level).squeeze(-1))  # (B, N)


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

class FCOSTargets(NamedTuple):
    """What each point must predict; N = points of all levels, concatenated."""

    matched_idxs: torch.Tensor  # (B, N) int64 index into the image's boxes, BACKGROUND if none
    labels: torch.Tensor  # (B, N) int64 class 0..K-1, BACKGROUND if none
    boxes: torch.Tensor  # (B, N, 4) xyxy pixels of the matched box (zeros for background)
    ltrb: torch.Tensor  # (B, N, 4) encode_ltrb of the matched box (zeros for background)
    centerness: torch.Tensor  # (B, N) centerness target (0 for background)


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
    if spacings is not None and len(spacings) != len(strides):
        raise ValueError(f"spacings has {len(spacings)} levels but strides has {len(strides)}")
    steps = list(strides) if spacings is None else [tuple(s) for s in spacings]
    return grid_points(feature_sizes, steps, offset, dtype=dtype, device=device)


def centerness_target(ltrb: torch.Tensor) -> torch.Tensor:
    """``c* = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` ([fcos] Eq. (3)).

    1 at the box centre, 0 on its border; scale-free. ``ltrb``: (..., 4) >= 0.
    Returns (...,) in [0, 1]; 0 where a distance pair is (0, 0).
    """
    left_right, top_bottom = ltrb[..., 0::2], ltrb[..., 1::2]  # (..., 2) each
    ratio_x = left_right.min(dim=-1).values / left_right.max(dim=-1).values.clamp(min=1e-12)
    ratio_y = top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values.clamp(min=1e-12)
    return torch.sqrt((ratio_x * ratio_y).clamp(min=0))


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
    x, y = points[:, 0, None], points[:, 1, None]  # (N, 1) each
    x1, y1, x2, y2 = gt_boxes[:, None].unbind(dim=-1)  # (B, 1, M) each
    ltrb = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1)  # (B, N, M, 4) pixels
    max_distance = ltrb.max(dim=-1).values  # (B, N, M)
    low, high = size_ranges[:, 0, None], size_ranges[:, 1, None]  # (N, 1) each
    mask = (ltrb.min(dim=-1).values > 0) & (max_distance >= low) & (max_distance < high)
    if center_sampling_radius > 0:
        offset_x = (x - (x1 + x2) / 2).abs()  # (B, N, M)
        offset_y = (y - (y1 + y2) / 2).abs()
        mask &= torch.maximum(offset_x, offset_y) < center_sampling_radius * strides[:, None]
    return mask


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
    num_levels = len(points_per_level)
    if len(strides) != num_levels or len(sizes_of_interest) != num_levels + 1:
        raise ValueError(
            f"need one stride per level and L + 1 sizes_of_interest for L = {num_levels} "
            f"levels, got strides={list(strides)} sizes_of_interest={list(sizes_of_interest)}")
    if any(a >= b for a, b in zip(sizes_of_interest[:-1], sizes_of_interest[1:])):
        raise ValueError(f"sizes_of_interest must increase strictly, got {list(sizes_of_interest)}")
    if gt_boxes.dim() != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be (B, M, 4), got {tuple(gt_boxes.shape)}")
    points = torch.cat(list(points_per_level), dim=0)  # (N, 2)
    counts = [len(p) for p in points_per_level]
    point_strides = per_level_values(strides, counts, points)  # (N,)
    size_ranges = torch.stack([per_level_values(sizes_of_interest[:-1], counts, points),
                               per_level_values(sizes_of_interest[1:], counts, points)], dim=-1)

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
    boxes = torch.gather(gt_boxes, 1, safe[..., None].expand(-1, -1, 4)) * positive[..., None]
    labels = torch.where(positive, torch.gather(gt_labels, 1, safe), torch.full_like(matched, BACKGROUND))
    ltrb = encode_ltrb(points, boxes, point_strides) * positive[..., None]  # (B, N, 4)
    centerness = centerness_target(ltrb) * positive  # (B, N)
    return FCOSTargets(matched, labels, boxes, ltrb, centerness)


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------

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
    batch, num_points, num_classes = cls_logits.shape
    if box_ltrb.shape != (batch, num_points, 4) or ctr_logits.shape != (batch, num_points):
        raise ValueError(f"box_ltrb must be {(batch, num_points, 4)} and ctr_logits "
                         f"{(batch, num_points)}, got {tuple(box_ltrb.shape)} and {tuple(ctr_logits.shape)}")
    if target_labels.shape != (batch, num_points):
        raise ValueError(f"target_labels must be {(batch, num_points)}, got {tuple(target_labels.shape)}")
    cls_logits, box_ltrb, ctr_logits = cls_logits.float(), box_ltrb.float(), ctr_logits.float()
    positive = target_labels != BACKGROUND  # (B, N)

    # Normalisers, shared by all processes (detached: they are counts, not predictions).
    num_pos = all_reduce_mean(positive.sum().to(cls_logits.dtype).detach()).clamp(min=1.0)
    one_hot = F.one_hot(target_labels.clamp(min=0), num_classes).to(cls_logits.dtype)  # (B, N, K)
    one_hot = one_hot * positive[..., None]
    loss_cls = sigmoid_focal_loss(cls_logits, one_hot, config.focal_alpha, config.focal_gamma,
                                  "sum") / num_pos

    centerness = target_centerness[positive].to(cls_logits.dtype)  # (P,)
    giou = generalized_box_iou_loss(ltrb_to_local_box(box_ltrb[positive]),  # (P, 4)
                                    ltrb_to_local_box(target_ltrb[positive].to(cls_logits.dtype)),
                                    reduction="none")  # (P,)
    if config.box_weighting == "centerness":
        ctr_sum = all_reduce_mean(centerness.sum().detach()).clamp(min=1e-6)
        loss_box = (giou * centerness).sum() / ctr_sum
    else:
        loss_box = giou.sum() / num_pos
    loss_ctr = F.binary_cross_entropy_with_logits(ctr_logits[positive], centerness,
                                                  reduction="sum") / num_pos
    return {"loss_cls": config.cls_weight * loss_cls,
            "loss_box": config.box_weight * loss_box,
            "loss_ctr": config.centerness_weight * loss_ctr}


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------

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
    if score_thresh_on not in SCORE_THRESH_ON:
        raise ValueError(f"score_thresh_on must be one of {SCORE_THRESH_ON}, got {score_thresh_on!r}")
    boxes, scores, labels = [], [], []
    start = 0
    for points, stride in zip(points_per_level, strides):
        end = start + len(points)
        cls_prob = torch.sigmoid(cls_logits[:, start:end].float())  # (B, N_l, K)
        ctr_prob = torch.sigmoid(ctr_logits[:, start:end].float())  # (B, N_l)
        score = torch.sqrt(cls_prob * ctr_prob[..., None])  # (B, N_l, K)
        thresholded = cls_prob if score_thresh_on == "class" else score
        score = torch.where(thresholded > score_thresh, score, torch.full_like(score, MASKED))
        top_scores, point_idx, top_labels = top_candidates(score, topk_candidates, per_class_topk)
        ltrb = torch.gather(box_ltrb[:, start:end].float(), 1, point_idx[..., None].expand(-1, -1, 4))
        level_strides = torch.full((point_idx.shape[1],), float(stride), device=ltrb.device)
        boxes.append(decode_ltrb(points[point_idx], ltrb, level_strides))  # (B, C_l, 4)
        scores.append(top_scores)
        labels.append(top_labels)
        start = end
    return torch.cat(boxes, dim=1), torch.cat(scores, dim=1), torch.cat(labels, dim=1)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class FCOS(nn.Module):
    """The FCOS detector (see the module docstring for the call convention).

    Args:
        config: an :class:`FCOSConfig`.
        trunk: optional module returning C3..C5, or C2 and up with ``first_level=2`` (with
            ``out_channels``); built from ``config.backbone`` when None.
    """

    def __init__(self, config: FCOSConfig, trunk: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.config = config
        self.preprocess = ImagePreprocessor(config.image_mean, config.image_std, config.size_divisible)
        names = {} if config.first_level == 3 else dict(feature_names=tuple(  # P2..: C2 and up, at most C5
            f"C{k}" for k in range(2, min(2 + config.num_levels, 6))))
        self.backbone = trunk if trunk is not None else build_trunk(
            config.backbone, config.pretrained, config.frozen_bn, config.trainable_layers, **names)
        self.build_decoder(config)

    def build_decoder(self, config: FCOSConfig) -> None:
        """FPN + head, [nas-fcos]'s "decoder" (NAS-FCOS builds a searched one instead)."""
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels, config.num_levels,
                       config.fpn_extra_source, norm=config.fpn_norm)
        self.head = FCOSHead(config.fpn_channels, config.num_classes, config.num_levels,
                             config.head_convs, config.prior_prob, config.reg_activation,
                             level_scales=config.level_scales)

    def forward(self, images, targets: Optional[Sequence[Dict]] = None, *,
                image_sizes=None, orig_sizes=None):
        """Losses in train mode, detections in eval mode (see the module docstring)."""
        image_sizes = image_sizes if image_sizes is not None else sizes_from_targets(targets, "image_size")
        batch, sizes = self.preprocess(images, image_sizes)
        features = self.backbone(batch)
        features = list(features.values()) if isinstance(features, dict) else list(features)
        level_sizes, (cls_logits, box_ltrb, ctr_logits) = self.decode(features)  # (B, N, K), (B, N, 4), (B, N)
        points = self.points(tuple(batch.shape[-2:]), level_sizes, device=batch.device)  # L x (N_l, 2)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in train mode: model(images, targets)")
            if len(targets) != len(batch):
                raise ValueError(f"got {len(targets)} targets for {len(batch)} images")
            return self.compute_loss(cls_logits, box_ltrb, ctr_logits, points, targets)
        orig_sizes = orig_sizes if orig_sizes is not None else sizes_from_targets(targets, "orig_size")
        orig_sizes = sizes if orig_sizes is None else [tuple(int(v) for v in s) for s in orig_sizes]
        return self.detect(cls_logits, box_ltrb, ctr_logits, points, sizes, orig_sizes)

    def decode(self, features: Sequence[torch.Tensor]):
        """The decoder ([nas-fcos]'s word for FPN + head): trunk features -> predictions.

        Args:
            features: C3..C5, each (B, C_i, H_i, W_i).

        Returns:
            ``(level_sizes, (cls_logits, box_ltrb, ctr_logits))``: the L sizes (H_l, W_l)
            of the pyramid, then the head's (B, N, K), (B, N, 4), (B, N). NAS-FCOS
            overrides this method only.
        """
        pyramid = self.fpn(features)  # L x (B, C, H_l, W_l)
        return [tuple(p.shape[-2:]) for p in pyramid], self.head(pyramid)

    def points(self, input_size: Tuple[int, int], level_sizes: Sequence[Tuple[int, int]],
               device=None) -> List[torch.Tensor]:
        """The L tensors (N_l, 2) of (x, y) points of a padded input of ``input_size`` (H, W)."""
        return make_points(level_sizes, self.config.strides, offset=self.config.point_offset,
                           spacings=self.point_spacings(input_size, level_sizes),
                           dtype=torch.float32, device=device)

    def point_spacings(self, input_size: Tuple[int, int], level_sizes: Sequence[Tuple[int, int]]):
        """L pixel steps (step_y, step_x) between neighbouring points, or None for s_l.

        "grid" copies torchvision's ``AnchorGenerator``, which spaces anchors by
        ``padded input size // feature size`` per axis: a 224-pixel-high input gives
        P6 4 rows 56 px apart instead of 64 (the box scale stays s_l).
        """
        if self.config.point_spacing == "stride":
            return None
        height, width = input_size
        return [(height // h, width // w) for h, w in level_sizes]

    def compute_loss(self, cls_logits, box_ltrb, ctr_logits, points, targets) -> Dict:
        """Assign targets to points and evaluate :func:`fcos_loss`."""
        gt_boxes, gt_labels, gt_valid = pad_ground_truth(targets, device=cls_logits.device)
        check_labels(gt_labels, gt_valid, self.config.num_classes)
        assigned = assign_targets(points, self.config.strides, gt_boxes, gt_labels, gt_valid,
                                  sizes_of_interest=self.config.level_ranges,
                                  center_sampling_radius=self.config.center_sampling_radius)
        return fcos_loss(cls_logits, box_ltrb, ctr_logits, assigned.labels, assigned.ltrb,
                         assigned.centerness, self.config)

    @torch.no_grad()
    def detect(self, cls_logits, box_ltrb, ctr_logits, points, sizes, orig_sizes) -> List[Dict]:
        """Detections per image, in original image coordinates."""
        config = self.config
        boxes, scores, labels = select_candidates(
            cls_logits, box_ltrb, ctr_logits, points, config.strides, score_thresh=config.score_thresh,
            topk_candidates=config.topk_candidates, per_class_topk=config.per_class_topk,
            score_thresh_on=config.score_thresh_on)
        return postprocess_detections(boxes, scores, labels, sizes, orig_sizes,
                                      nms_thresh=config.nms_thresh,
                                      detections_per_img=config.detections_per_img)

