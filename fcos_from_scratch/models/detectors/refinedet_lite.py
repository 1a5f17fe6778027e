"""RefineDetLite: a CPU-first one-stage detector with anchor refinement ([refinedetlite], [refinedet]).

Read top to bottom: config -> head (Light-head, ARM, transfer blocks, ODM) ->
targets (``refinedet_targets.py``) -> loss -> inference -> model::

    images in [0, 1] --normalise, pad to /32--> Res2NetLite(c) --> 4 sources (strides 16, 32, 64, ~107)
        ARM per source: objectness (2 logits) + offsets for A anchors per cell
        transfer blocks, coarsest first: lateral + up-sample(coarser, size=...) --> fused level
        ODM per fused level: K + 1 logits + offsets relative to the ARM-refined anchors
        train: match (IoU >= 0.5 + each box's best anchor), negative filtering (theta),
               OHEM 3:1 --> {"loss_arm_cls", "loss_arm_loc", "loss_odm_cls", "loss_odm_loc"}
        eval:  ODM scores of the anchors the ARM did not filter --> NMS 0.45 or Soft-NMS --> top 100

The two-step cascade is the point: the ARM moves the anchors towards objects and
throws away easy background; the ODM then starts from better anchors and sees
only the hard background. Labels are 0..K-1 outside; the ODM softmax has K + 1
outputs with background at index 0. Boxes are coded with [ssd]'s centre-size
code and variances (0.1, 0.2), i.e. ``BoxCoder`` weights (10, 10, 5, 5).

Where [refinedetlite] only draws, the choices (documented again where they are
made): the Light-head (Fig. 3a) is ``ReLU(bottleneck(x) + conv1x1(x))`` with a
1x1-3x3(groups 2)-1x1 bottleneck; the ARM's Light-head output is the lateral input
of the transfer block (Fig. 3b), fused with the bilinearly up-sampled coarser
level and passed through a second Light-head; "plain3x3" is [refinedet]'s design
(3x3 prediction convs on the sources, transfer blocks of 3x3 convs), the baseline
of [refinedetlite] Table 3.
"""

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...ops import BoxCoder, elementwise_box_iou, generalized_box_iou_loss, smooth_l1_loss, soft_label_cross_entropy
from ...ops.label_weighting import class_weights_from_counts, iou_guided_sample_weights, iou_guided_soft_labels
from ..anchors import ssd_anchors
from ..backbones.res2netlite import Res2NetLite
from ..heads import flatten_level
from ..images import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor, ground_truth_lists, sizes_from_targets
from ..loss_weighting import LearnedLossWeights
from ..matching import Matcher
from ..postprocess import MASKED, SoftNMS, postprocess_detections, top_candidates
from ..sampling import hard_negative_mining
from .refinedet_targets import (BACKGROUND_LABEL, IGNORE_LABEL, arm_labels, filter_negative_anchors,
                                match_anchors, negative_anchor_mask)

BLOCKS = ("res2", "res")  # Table 3 (b)/(c) vs (a): Res2Blocks or classical ResBlocks
HEADS = ("light", "plain3x3")  # Table 3 (c) vs (a)/(b): Light-heads or plain 3x3 convs
TRANSFER_INPUTS = ("arm", "source")  # what a Light transfer block fuses: the ARM head's output or the source
LOC_LOSSES = ("smooth_l1", "giou")
CLS_LOSSES = ("ce", "iou_guided")
NMS_METHODS = ("nms", "soft_nms")
SOFT_NMS_KERNELS = ("gaussian", "linear")
SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # [ssd] variances (0.1, 0.1, 0.2, 0.2) = 1 / weights
# [refinedetlite] Eq. (1)'s four terms, and their kind in Eq. (6) (1 / (2 sigma^2) or 1 / sigma^2).
LOSS_TERMS = {"arm_loc": "regression", "arm_cls": "classification",
              "odm_loc": "regression", "odm_cls": "classification"}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RefineDetLiteConfig:
    """Every RefineDetLite option; defaults are [refinedetlite]'s basic configuration (Sec. 5.1).

    Table 3's rows are config choices: (a) ``block="res", head="plain3x3"``,
    (b) ``block="res2", head="plain3x3"``, (c) the defaults; (d)-(o) switch on
    ``nms_method="soft_nms"``, ``loc_loss="giou"``, ``class_weight_max=10``,
    ``cls_loss="iou_guided"`` and ``learned_loss_weights``.
    """

    num_classes: int = 0  # K, the number of object classes (required; background is internal)
    # --- trunk: Res2NetLite(c), [refinedetlite] Table 1 ----------------------------------
    width: int = 72  # c: RefineDetLite72 ([refinedetlite] Sec. 3.2); sources 8c, 16c channels
    block: str = "res2"  # feature-enhancement block: "res2" (Res2Block [res2net]) or "res" (ResBlock [resnet]), Table 3
    scale: int = 4  # Res2Block scale s (feature groups per block), [res2net] Sec. 3.1
    groups: int = 2  # groups of the 3x3 convs in the trunk, g = 2 ([refinedetlite] Sec. 3.2)
    extra_channels: Tuple[int, ...] = (512, 512)  # the two extra Bottlenecks after Stage 3 ([refinedetlite] Sec. 3.2)
    first_source_stage: int = 2  # finest ARM source: stage 2 (stride 16, [refinedetlite]); 1 adds stride 8
    # --- heads -----------------------------------------------------------------------------
    head: str = "light"  # "light" (Light-heads + 1x1 predictions, Fig. 3) or "plain3x3" ([refinedet], Table 3 baseline)
    head_channels: int = 128  # width of the Light-heads and of the fused (transfer-block) levels; [refinedet]: 256
    transfer_input: str = "arm"  # Light transfer blocks fuse the ARM head output ("arm") or the source ("source", 1x1)
    # --- anchors (SSD style, [ssd] Sec. 2.2) --------------------------------------------------
    anchor_sizes: Tuple[float, ...] = (32.0, 64.0, 128.0, 256.0)  # one size per source; [refinedet] at 320 px
    anchor_scales: Tuple[float, ...] = (1.0,)  # sizes per level = anchor_sizes x these ([ssd]'s extra anchor: ~1.41)
    aspect_ratios: Tuple[float, ...] = (1.0, 2.0, 0.5)  # h / w at every cell ([refinedet]: 1, 2, 1/2)
    # --- targets ([refinedet] Sec. 3.3) -----------------------------------------------------
    fg_iou_thresh: float = 0.5  # IoU at which an anchor becomes a positive (plus each box's best anchor)
    bg_iou_thresh: float = 0.5  # below: background; in [bg, fg): ignored ([refinedet]: 0.5, no band; [focal]: 0.4)
    neg_pos_ratio: float = 3.0  # OHEM: hardest negatives per positive ([ssd] Sec. 2.2)
    negative_filter_theta: float = 0.01  # ARM background prob > 1 - theta: ignored by the ODM, suppressed at test
    # --- losses ([refinedetlite] Sec. 4) ----------------------------------------------------
    loc_loss: str = "smooth_l1"  # "smooth_l1" on [ssd] codes ([refinedet]) or "giou" on decoded boxes ([giou])
    smooth_l1_beta: float = 1.0  # transition point of smooth L1 ([fast-rcnn] Eq. (3), [ssd])
    cls_loss: str = "ce"  # ODM: "ce" (one-hot) or "iou_guided" soft labels + sample weights (Eqs. (2)-(4))
    iou_guided_alpha: float = 0.25  # alpha of Eq. (3) ([refinedetlite] Sec. 5.1)
    iou_guided_beta: float = 0.9  # beta of Eq. (4) ([refinedetlite] Sec. 5.1)
    class_weight_max: float = 0.0  # W of Eq. (5) (10 in the advanced configuration); 0 = no class weights
    class_weight_gamma: float = 0.75  # gamma of Eq. (5) ([refinedetlite] App. A)
    class_counts: Tuple[int, ...] = ()  # boxes per class in the training split (Eq. (5)); filled by the trainer
    learned_loss_weights: bool = False  # learned sigma multi-task weighting, Eq. (6) ([refinedetlite] Sec. 4.4)
    # --- inference ----------------------------------------------------------------------------
    score_thresh: float = 0.01  # candidates with ODM probability at or below this are dropped ([refinedet])
    pre_nms_top_n: int = 400  # best (anchor, class) candidates per image before NMS ([refinedet]: 1000)
    nms_method: str = "nms"  # "nms" (class-wise, basic configuration) or "soft_nms" (advanced, [soft-nms])
    nms_thresh: float = 0.45  # IoU of class-wise NMS ([refinedet])
    soft_nms_kernel: str = "gaussian"  # Soft-NMS decay: "gaussian" (sigma) or "linear" (N_t) [soft-nms]
    soft_nms_sigma: float = 0.5  # sigma of the Gaussian decay ([soft-nms] Sec. 3)
    soft_nms_iou_thresh: float = 0.3  # N_t of the linear decay ([soft-nms] Sec. 3)
    detections_per_img: int = 100  # most detections returned per image (COCO's 100)
    # --- input -------------------------------------------------------------------------------
    image_mean: Tuple[float, ...] = IMAGENET_MEAN  # per-channel mean subtracted from RGB in [0, 1]
    image_std: Tuple[float, ...] = IMAGENET_STD  # per-channel std the input is divided by
    size_divisible: int = 32  # batches are padded to a multiple of this (Stage 3 has stride 32)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for name, choices in (("block", BLOCKS), ("head", HEADS), ("transfer_input", TRANSFER_INPUTS),
                              ("loc_loss", LOC_LOSSES),
                              ("cls_loss", CLS_LOSSES), ("nms_method", NMS_METHODS),
                              ("soft_nms_kernel", SOFT_NMS_KERNELS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("width", "scale", "groups", "head_channels", "pre_nms_top_n", "detections_per_img"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.first_source_stage not in (1, 2, 3):
            raise ValueError(f"first_source_stage must be 1, 2 or 3, got {self.first_source_stage}")
        num_sources = 4 - self.first_source_stage + len(self.extra_channels)  # stages s..3, then the extras
        if len(self.anchor_sizes) != num_sources or min(self.anchor_sizes) <= 0:
            raise ValueError(f"anchor_sizes needs one positive size per source level "
                             f"({num_sources}), got {self.anchor_sizes}")
        if not self.anchor_scales or min(self.anchor_scales) <= 0:
            raise ValueError(f"anchor_scales must be positive, got {self.anchor_scales}")
        if not 0.0 <= self.bg_iou_thresh <= self.fg_iou_thresh:
            raise ValueError(f"bg_iou_thresh must be in [0, fg_iou_thresh = {self.fg_iou_thresh}], "
                             f"got {self.bg_iou_thresh}")
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ValueError(f"aspect_ratios must be positive, got {self.aspect_ratios}")
        for name in ("fg_iou_thresh", "nms_thresh", "soft_nms_iou_thresh", "iou_guided_alpha",
                     "iou_guided_beta", "score_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.negative_filter_theta < 1.0:
            raise ValueError(f"negative_filter_theta must be in [0, 1), got {self.negative_filter_theta}")
        for name in ("neg_pos_ratio", "smooth_l1_beta", "class_weight_max", "soft_nms_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if 0 < self.class_weight_max < 1:
            raise ValueError(f"class_weight_max is W >= 1 of Eq. (5) (0 = off), got {self.class_weight_max}")
        if self.class_counts and (len(self.class_counts) != self.num_classes or min(self.class_counts) < 0):
            raise ValueError(f"class_counts needs num_classes = {self.num_classes} counts >= 0, "
                             f"got {self.class_counts}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values, got {self.image_mean}, {self.image_std}")


# ---------------------------------------------------------------------------
# Head: Light-head, plain 3x3 blocks, the ARM / transfer / ODM towers
# ---------------------------------------------------------------------------

def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1,
                 relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))


class LightHead(nn.Module):
    """[refinedetlite] Fig. 3(a): ``ReLU(bottleneck(x) + BN(conv1x1(x)))``.

    "A bottleneck structure and a 1x1 convolution layer" fused "in a multi-scale
    two-pass way": the bottleneck (1x1 to C/2, 3x3 with g = 2, 1x1 to C) sees a 3x3
    neighbourhood, the 1x1 pass only the cell; their sum mixes the two receptive
    fields. The figure gives no widths: we choose C/2 inside ([resnet]'s
    bottleneck halves less aggressively than 4 because C is already small here).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 2) -> None:
        super().__init__()
        inner = max(groups, out_channels // 2 // groups * groups)
        self.bottleneck = nn.Sequential(conv_bn_relu(in_channels, inner, 1),
                                        conv_bn_relu(inner, inner, 3, groups=groups),
                                        conv_bn_relu(inner, out_channels, 1, relu=False))
        self.shortcut = conv_bn_relu(in_channels, out_channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bottleneck(x) + self.shortcut(x))


class Predictor(nn.Module):
    """Per-cell logits (A x num_logits) and offsets (A x 4): 1x1 convs (Light) or 3x3 convs (plain)."""

    def __init__(self, channels: int, num_anchors: int, num_logits: int, kernel_size: int) -> None:
        super().__init__()
        self.num_logits = num_logits
        self.cls = nn.Conv2d(channels, num_anchors * num_logits, kernel_size, padding=kernel_size // 2)
        self.loc = nn.Conv2d(channels, num_anchors * 4, kernel_size, padding=kernel_size // 2)
        for conv in (self.cls, self.loc):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        logits = flatten_level(self.cls(x)).reshape(batch, -1, self.num_logits)  # (B, H W A, num_logits)
        offsets = flatten_level(self.loc(x)).reshape(batch, -1, 4)  # (B, H W A, 4)
        return logits, offsets


class TransferBlock(nn.Module):
    """Top-down fusion of one level ([refinedet] Fig. 2, [refinedetlite] Fig. 3(b)).

    ``out = refine(ReLU(lateral(x) + up(coarser)))``, ``up`` = bilinear
    up-sampling *to the lateral's size* (3 -> 5 is not x2, so no fixed-factor
    deconvolution). Light: ``lateral`` is the identity (the input already is the
    ARM's Light-head output) and ``refine`` a Light-head; plain3x3 ([refinedet]):
    ``lateral`` = two 3x3 convs on the source, ``refine`` = one 3x3 conv.
    """

    def __init__(self, in_channels: int, channels: int, head: str, groups: int) -> None:
        super().__init__()
        if head == "light":
            self.lateral = nn.Identity() if in_channels == channels else conv_bn_relu(in_channels, channels, 1)
            self.refine = LightHead(channels, channels, groups)
        else:
            self.lateral = nn.Sequential(conv_bn_relu(in_channels, channels, 3),
                                         conv_bn_relu(channels, channels, 3, relu=False))
            self.refine = conv_bn_relu(channels, channels, 3)

    def forward(self, x: torch.Tensor, coarser: Optional[torch.Tensor]) -> torch.Tensor:
        fused = self.lateral(x)
        if coarser is not None:
            fused = fused + F.interpolate(coarser, size=fused.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(F.relu(fused))


class RefineDetHead(nn.Module):
    """ARM on the sources, transfer blocks coarsest first, ODM on the fused levels.

    Returns ``(arm_logits (B, N, 2), arm_offsets (B, N, 4), odm_logits (B, N, K + 1),
    odm_offsets (B, N, 4))``, N = sum_l H_l W_l A, anchors in ``ssd_anchors`` order.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, num_anchors: int, head: str,
                 channels: int, groups: int = 2, transfer_input: str = "arm") -> None:
        super().__init__()
        light = head == "light"
        kernel = 1 if light else 3
        self.arm_heads = nn.ModuleList(LightHead(c, channels, groups) if light else nn.Identity()
                                       for c in in_channels)
        arm_in = [channels] * len(in_channels) if light else list(in_channels)
        self.arm = nn.ModuleList(Predictor(c, num_anchors, 2, kernel) for c in arm_in)
        # Light: the transfer block fuses the ARM head's output, or the source itself (as
        # [refinedet]'s TCB, through a 1x1 lateral); plain3x3 always reads the source.
        self.transfer_from_source = light and transfer_input == "source"
        transfer_in = list(in_channels) if self.transfer_from_source else arm_in
        self.transfer = nn.ModuleList(TransferBlock(c, channels, head, groups) for c in transfer_in)
        self.odm = nn.ModuleList(Predictor(channels, num_anchors, num_classes + 1, kernel) for _ in in_channels)

    def forward(self, sources: Sequence[torch.Tensor]):
        arm_features = [head(x) for head, x in zip(self.arm_heads, sources)]
        arm = [predict(x) for predict, x in zip(self.arm, arm_features)]
        fused: List[torch.Tensor] = []
        coarser = None
        lateral = sources if self.transfer_from_source else arm_features
        for block, x in zip(reversed(self.transfer), reversed(lateral)):  # coarsest first
            coarser = block(x, coarser)
            fused.insert(0, coarser)
        odm = [predict(x) for predict, x in zip(self.odm, fused)]
        cat = lambda pairs, i: torch.cat([p[i] for p in pairs], dim=1)  # noqa: E731  levels -> (B, N, .)
        return cat(arm, 0), cat(arm, 1), cat(odm, 0), cat(odm, 1)


# ---------------------------------------------------------------------------
# Loss ([refinedetlite] Eqs. (1)-(6); targets in refinedet_targets.py)
# ---------------------------------------------------------------------------

def localisation_loss(offsets, anchors, gt_boxes, positive, coder: BoxCoder, kind: str, beta: float):
    """Sum over positives of smooth L1 on [ssd] codes, or of 1 - GIoU of the decoded boxes ([giou])."""
    offsets, anchors, gt_boxes = offsets[positive], anchors[positive], gt_boxes[positive]  # (P, 4) each
    if kind == "giou":
        return generalized_box_iou_loss(coder.decode_single(offsets, anchors), gt_boxes, reduction="sum")
    return smooth_l1_loss(offsets, coder.encode_single(gt_boxes, anchors), beta=beta, reduction="sum")


def mined_classification_loss(per_anchor: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: float):
    """Sum of the per-anchor loss over positives and the OHEM-mined negatives (3:1)."""
    chosen = (labels > BACKGROUND_LABEL) | hard_negative_mining(per_anchor, labels, neg_pos_ratio)
    return (per_anchor * chosen).sum()


def refinedet_loss(outputs, anchors, targets_arm, targets_odm, refined, coder: BoxCoder,
                   config: RefineDetLiteConfig, class_weights: Optional[torch.Tensor] = None):
    """The four loss terms of [refinedetlite] Eq. (1), each normalised by its positives ([refinedet] Eq. (1)).

    ARM: 2-class CE with OHEM + localisation w.r.t. the anchors. ODM: (K + 1)-class
    soft-label CE (Eq. (2)) with OHEM -- one-hot labels for "ce"; IoU-guided soft
    labels (Eq. (3)) and sample weights (Eq. (4)) for "iou_guided", the IoU being
    that of the ODM's decoded box with its box, detached; class weights w_i of
    Eq. (5) when given -- + localisation w.r.t. the refined anchors.

    Args:
        outputs: (arm_logits (B, N, 2), arm_offsets (B, N, 4), odm_logits (B, N, K + 1), odm_offsets (B, N, 4)).
        anchors: (N, 4); refined: (B, N, 4) the ARM-refined anchors (detached).
        targets_arm, targets_odm: :class:`~.refinedet_targets.AnchorTargets`; ``targets_odm.labels``
            carries IGNORE_LABEL for the filtered anchors.
        class_weights: (K + 1,) w_i with w_0 = 1, or None.

    Returns:
        ``{"arm_loc", "arm_cls", "odm_loc", "odm_cls"}``, unweighted scalars.
    """
    arm_logits, arm_offsets, odm_logits, odm_offsets = outputs
    batch, num_anchors, num_logits = odm_logits.shape
    labels_arm = arm_labels(targets_arm)
    pos_arm, pos_odm = labels_arm > BACKGROUND_LABEL, targets_odm.labels > BACKGROUND_LABEL
    num_arm, num_odm = pos_arm.sum().clamp(min=1), pos_odm.sum().clamp(min=1)
    expanded = anchors.expand(batch, -1, -1)
    arm_loc = localisation_loss(arm_offsets, expanded, targets_arm.boxes, pos_arm, coder, config.loc_loss,
                                config.smooth_l1_beta) / num_arm
    arm_ce = F.cross_entropy(arm_logits.flatten(0, 1).float(), labels_arm.clamp(min=0).flatten(),
                             reduction="none").view(batch, num_anchors)  # (B, N)
    arm_cls = mined_classification_loss(arm_ce, labels_arm, config.neg_pos_ratio) / num_arm

    odm_loc = localisation_loss(odm_offsets, refined, targets_odm.boxes, pos_odm, coder, config.loc_loss,
                                config.smooth_l1_beta) / num_odm
    labels = targets_odm.labels.clamp(min=0)  # (B, N); ignored anchors are masked out by OHEM's labels
    if config.cls_loss == "iou_guided":
        with torch.no_grad():  # IoU-hat: the ODM's box against its box, detached
            boxes = coder.decode_single(odm_offsets.detach().flatten(0, 1).float(), refined.flatten(0, 1))
            ious = elementwise_box_iou(boxes, targets_odm.boxes.flatten(0, 1))  # (B N,)
        soft = iou_guided_soft_labels(labels.flatten(), ious, num_logits, alpha=config.iou_guided_alpha)
        weights = iou_guided_sample_weights(ious, labels.flatten(), beta=config.iou_guided_beta)
    else:
        soft, weights = F.one_hot(labels.flatten(), num_logits).float(), None
    odm_ce = soft_label_cross_entropy(odm_logits.flatten(0, 1).float(), soft, sample_weights=weights,
                                      class_weights=class_weights, reduction="none").view(batch, num_anchors)
    odm_cls = mined_classification_loss(odm_ce, targets_odm.labels, config.neg_pos_ratio) / num_odm
    return {"arm_loc": arm_loc, "arm_cls": arm_cls, "odm_loc": odm_loc, "odm_cls": odm_cls}


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------

def select_candidates(odm_logits, odm_offsets, refined, filtered, coder: BoxCoder, *, score_thresh: float,
                      pre_nms_top_n: int):
    """ODM class probabilities of the anchors the ARM kept, thresholded, top-n, decoded.

    Args:
        odm_logits: (B, N, K + 1); odm_offsets: (B, N, 4); refined: (B, N, 4) ARM-refined anchors;
        filtered: (B, N) bool, anchors suppressed by negative filtering.

    Returns:
        boxes (B, C, 4) xyxy of the network input, scores (B, C) (MASKED where not a
        candidate), labels (B, C) in 0..K-1.
    """
    probs = torch.softmax(odm_logits.float(), dim=-1)[..., 1:]  # (B, N, K) foreground
    keep = (probs > score_thresh) & ~filtered[..., None]
    scores, anchor_idx, labels = top_candidates(torch.where(keep, probs, MASKED), pre_nms_top_n)  # (B, C)
    batch, candidates = anchor_idx.shape
    gather = lambda t: torch.gather(t, 1, anchor_idx[..., None].expand(-1, -1, 4)).reshape(-1, 4)  # noqa: E731
    boxes = coder.decode_single(gather(odm_offsets.float()), gather(refined)).view(batch, candidates, 4)
    return boxes, scores, labels


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class RefineDetLite(nn.Module):
    """The RefineDetLite detector (see the module docstring; call convention of every detector).

    Args:
        config: a :class:`RefineDetLiteConfig`.
        trunk: optional module returning the source features (a list, finest first,
            with ``out_channels``); a ``Res2NetLite`` from the config when None.
    """

    def __init__(self, config: RefineDetLiteConfig, trunk: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.config = c = config
        self.preprocess = ImagePreprocessor(c.image_mean, c.image_std, c.size_divisible)
        self.backbone = trunk if trunk is not None else Res2NetLite(
            width=c.width, block=c.block, scale=c.scale, groups=c.groups, extra_channels=c.extra_channels,
            first_source_stage=c.first_source_stage)
        if len(self.backbone.out_channels) != len(c.anchor_sizes):
            raise ValueError(f"the trunk has {len(self.backbone.out_channels)} source levels but anchor_sizes "
                             f"has {len(c.anchor_sizes)}")
        self.head = RefineDetHead(self.backbone.out_channels, c.num_classes,
                                  len(c.aspect_ratios) * len(c.anchor_scales), c.head, c.head_channels, c.groups,
                                  c.transfer_input)
        self.box_coder = BoxCoder(SSD_BOX_WEIGHTS)
        self.matcher = Matcher(c.fg_iou_thresh, c.bg_iou_thresh, best_prediction_per_gt=True)
        self.loss_weights = LearnedLossWeights(LOSS_TERMS) if c.learned_loss_weights else None
        self.register_buffer("class_weights", torch.ones(c.num_classes + 1), persistent=False)
        if c.class_weight_max > 0 and c.class_counts:
            self.set_class_counts(c.class_counts)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        """Class weights w_i of [refinedetlite] Eq. (5) from the training split's box counts."""
        if len(counts) != self.config.num_classes:
            raise ValueError(f"class_counts needs {self.config.num_classes} counts, got {len(counts)}")
        weights = class_weights_from_counts(torch.as_tensor(counts, dtype=torch.float32),
                                            max_weight=self.config.class_weight_max or 1.0,
                                            gamma=self.config.class_weight_gamma)  # (K + 1,)
        self.class_weights.copy_(weights.to(self.class_weights))
        self.config = dataclasses.replace(self.config, class_counts=tuple(int(n) for n in counts))

    def forward(self, images, targets: Optional[Sequence[Dict]] = None, *, image_sizes=None, orig_sizes=None):
        """Losses in train mode, detections in eval mode (``fcos_from_scratch.models`` convention)."""
        image_sizes = image_sizes if image_sizes is not None else sizes_from_targets(targets, "image_size")
        batch, sizes = self.preprocess(images, image_sizes)
        if self.training:  # bad targets fail before any computation
            if targets is None or len(targets) != len(batch):
                raise ValueError(f"train mode needs one target per image: model(images, targets); "
                                 f"got {None if targets is None else len(targets)} for {len(batch)} images")
            gt_boxes, gt_labels = self.ground_truth(targets, batch.device)
        outputs, anchors, refined, filtered = self.cascade(batch)
        if self.training:
            return self.compute_loss(outputs, anchors, refined, filtered, gt_boxes, gt_labels)
        orig_sizes = orig_sizes if orig_sizes is not None else sizes_from_targets(targets, "orig_size")
        orig_sizes = sizes if orig_sizes is None else [tuple(int(v) for v in s) for s in orig_sizes]
        return self.detect(outputs, refined, filtered, sizes, orig_sizes)

    def cascade(self, batch: torch.Tensor):
        """Network outputs, anchors, ARM-refined anchors and the filter mask of a prepared batch.

        Args:
            batch: (B, 3, H, W) normalised, padded (``self.preprocess``).

        Returns:
            ``outputs`` (arm logits (B, N, 2), arm offsets (B, N, 4), odm logits
            (B, N, K + 1), odm offsets (B, N, 4)), ``anchors`` (N, 4), ``refined``
            (B, N, 4) = anchors moved by the ARM's offsets (detached), ``filtered``
            (B, N) bool: the ARM's confident background (negative filtering).
        """
        sources = list(self.backbone(batch))
        outputs = self.head(sources)
        sizes = [tuple(size * scale for scale in self.config.anchor_scales) for size in self.config.anchor_sizes]
        anchors = ssd_anchors(tuple(batch.shape[-2:]), [s.shape[-2:] for s in sources], sizes,
                              self.config.aspect_ratios, device=batch.device)  # (N, 4)
        refined = self.box_coder.decode_single(outputs[1].detach().flatten(0, 1).float(),
                                               anchors.repeat(len(batch), 1)).view(len(batch), -1, 4)
        filtered = negative_anchor_mask(outputs[0], self.config.negative_filter_theta)  # (B, N)
        return outputs, anchors, refined, filtered

    def ground_truth(self, targets, device):
        """B (M_b, 4) float boxes and (M_b,) labels, checked (:func:`ground_truth_lists`)."""
        return ground_truth_lists(targets, device, self.config.num_classes)

    def compute_loss(self, outputs, anchors, refined, filtered, gt_boxes, gt_labels) -> Dict[str, torch.Tensor]:
        """Match, filter, mine, and the four terms of Eq. (1), or Eq. (6) with learned sigma."""
        c = self.config
        if c.class_weight_max > 0 and not c.class_counts:
            raise ValueError("class_weight_max > 0 needs class_counts (boxes per class of the training split; "
                             "the trainer fills them, or pass class_counts=...)")
        targets_arm = match_anchors(anchors, gt_boxes, gt_labels, self.matcher)
        targets_odm = match_anchors(refined, gt_boxes, gt_labels, self.matcher)
        targets_odm = targets_odm._replace(labels=filter_negative_anchors(targets_odm.labels, filtered))
        terms = refinedet_loss(outputs, anchors, targets_arm, targets_odm, refined, self.box_coder, c,
                               self.class_weights if c.class_weight_max > 0 else None)
        logged = {"odm_positives": (targets_odm.labels > BACKGROUND_LABEL).sum(1).float().mean(),
                  "filtered_fraction": filtered.float().mean(),
                  "odm_ignored": (targets_odm.labels == IGNORE_LABEL).sum(1).float().mean()}
        if self.loss_weights is None:
            return {**{f"loss_{name}": value for name, value in terms.items()}, **logged}
        total, sigmas = self.loss_weights(terms)  # Eq. (6)
        return {"loss_weighted": total, **{f"unweighted_{k}": v.detach() for k, v in terms.items()},
                **sigmas, **logged}

    @torch.no_grad()
    def detect(self, outputs, refined, filtered, sizes, orig_sizes) -> List[Dict]:
        """Detections per image, in original image coordinates."""
        c = self.config
        boxes, scores, labels = select_candidates(outputs[2], outputs[3], refined, filtered, self.box_coder,
                                                  score_thresh=c.score_thresh, pre_nms_top_n=c.pre_nms_top_n)
        soft = None if c.nms_method == "nms" else SoftNMS(c.soft_nms_kernel, c.soft_nms_sigma,
                                                          c.soft_nms_iou_thresh, c.score_thresh)
        return postprocess_detections(boxes, scores, labels, sizes, orig_sizes, nms_thresh=c.nms_thresh,
                                      detections_per_img=c.detections_per_img, soft_nms=soft)
