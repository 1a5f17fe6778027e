"""Faster R-CNN with an FPN: region proposals, then a classifier on pooled regions.

[faster-rcnn] with the feature pyramid of [fpn] Sec. 4, exactly as torchvision's
``fasterrcnn_resnet50_fpn`` (v1) and ``fasterrcnn_resnet50_fpn_v2`` ([torchvision]),
plus the optional "Residual FPN" of [digits-lab]. Read top to bottom: config ->
head (box heads, predictor) -> targets -> loss -> inference -> model. The first
stage, the RPN, has its own module (``rpn.py``) next to this one::

    images in [0, 1] --normalise, pad to /32--> trunk (C2..C5) --> FPN (P2..P5 + max-pooled P6)
        (``trunk_features`` can start the pyramid at C3: P3..P5 + P6)
        [``rpn_levels`` can keep the RPN off the finest levels: RoIs still pool from them]
        [--> ResidualBlock per level, optional ([digits-lab])]
        --> RPN (rpn.py): proposals per image (+ loss_objectness, loss_rpn_box_reg)
        train: assign_targets (GT appended, IoU >= 0.5, 512 RoIs, 25 % positive)
        --> MultiScaleRoIAlign 7x7 on P2..P5 --> box head --> predictor (K + 1 logits, deltas per class)
        train: faster_rcnn_loss --> {"loss_classifier", "loss_box_reg"}
        eval:  postprocess --> [{"boxes", "scores", "labels"}]

Labels are 0..K-1 outside, as everywhere in this package. Inside, the classifier
has K + 1 outputs with background at index 0 (torchvision's layout, so its
weights load as they are): class k is logit k + 1.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...ops import BoxCoder, MultiScaleRoIAlign, batched_nms, box_iou, clip_boxes_to_image
from ...ops import remove_small_boxes, scale_boxes, smooth_l1_loss
from ...ops.roi_align import SUMMATIONS
from ..backbones.detection_trunk import build_trunk
from ..fpn import FPN
from ..images import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor, ground_truth_lists, sizes_from_targets
from ..matching import BACKGROUND, IGNORE, Matcher
from ..sampling import BalancedPositiveNegativeSampler
from .rpn import SMOOTH_L1_BETA, RegionProposalNetwork

BOX_HEADS = ("2fc", "4conv1fc")  # v1 TwoMLPHead, v2 FastRCNNConvFCHead
TRUNK_FEATURES = ("C2", "C3", "C4", "C5")  # [fpn] Sec. 4: P2..P5 from C2..C5
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # [torchvision] (std 0.1, 0.1, 0.2, 0.2 of [fast-rcnn])
MIN_DETECTION_SIZE = 1e-2  # [torchvision]: detections narrower or lower are removed
# RoI classifier labels: 0 background, 1..K classes (torchvision's layout); -1 never sampled.
BACKGROUND_CLASS, NOT_SAMPLED = 0, -1


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

def pyramid_levels(trunk_features: Sequence[str]) -> Tuple[str, ...]:
    """The FPN's level names for trunk features C_a..C_b: P_a..P_b plus the max-pooled P_(b+1)."""
    first, last = int(trunk_features[0][1]), int(trunk_features[-1][1])
    return tuple(f"P{k}" for k in range(first, last + 2))


@dataclass(frozen=True)
class FasterRCNNConfig:
    """Every Faster R-CNN option; defaults are torchvision's ``fasterrcnn_resnet50_fpn``."""

    num_classes: int = 0  # K, required (background is internal)
    # --- trunk and pyramid -------------------------------------------------------------
    backbone: str = "resnet50"  # [torchvision]; "tiny" = the CPU trunk
    pretrained: str = ""  # "imagenet", a path or URL of classifier weights; "" = random init
    frozen_bn: Optional[bool] = None  # None = frozen iff pretrained (torchvision v1); v2: False
    trainable_layers: int = -1  # -1 = torchvision's rule (3 if pretrained, else all)
    fpn_channels: int = 256  # [fpn] Sec. 3
    fpn_norm: Optional[str] = None  # v1 None; v2 "bn" (BatchNorm after every FPN conv)
    residual_fpn: bool = False  # [digits-lab]'s Residual FPN: ResidualBlock after every level
    # --- RPN ([faster-rcnn] Sec. 3.1, [torchvision]) ---------------------------------------
    # The trunk outputs the FPN is built on: P_k from C_k, plus a max-pooled level on top.
    # ("C3", "C4", "C5") drops the stride-4 level P2, which holds 3/4 of all anchors and
    # most of the convolution cost, for objects no smaller than ~16 px.
    trunk_features: Tuple[str, ...] = TRUNK_FEATURES  # [fpn] Sec. 4: P2..P5 from C2..C5
    # The RPN can skip the finest levels while RoIs are still pooled from them: ("P3", "P4",
    # "P5", "P6") on a P2..P6 pyramid keeps P2's resolution for small RoIs without P2's anchors.
    rpn_levels: Tuple[str, ...] = ()  # pyramid levels the RPN runs on, consecutive up to the top; () = all
    anchor_sizes: Tuple[int, ...] = (32, 64, 128, 256, 512)  # one per RPN level (P2..P6) [fpn] Sec. 4.1
    aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)  # h / w, [faster-rcnn] Sec. 3.1.1
    rpn_conv_depth: int = 1  # v1 1, v2 2
    rpn_pre_nms_top_n_train: int = 2000  # per level
    rpn_pre_nms_top_n_test: int = 1000  # proposals kept per level before NMS at test time [torchvision]
    rpn_post_nms_top_n_train: int = 2000  # per image
    rpn_post_nms_top_n_test: int = 1000  # proposals kept per image after NMS at test time [torchvision]
    rpn_nms_thresh: float = 0.7  # [faster-rcnn] Sec. 3.3
    rpn_min_size: float = 1e-3  # proposals narrower or shorter than this (px) are dropped [torchvision]
    rpn_score_thresh: float = 0.0  # proposals with objectness probability below this are dropped [torchvision]
    rpn_fg_iou_thresh: float = 0.7  # [faster-rcnn] Sec. 3.1.2
    rpn_bg_iou_thresh: float = 0.3  # anchors with IoU below this are background [faster-rcnn] Sec. 3.1.2
    rpn_batch_size_per_image: int = 256  # [faster-rcnn] Sec. 3.1.3
    rpn_positive_fraction: float = 0.5  # at most this share of the sampled anchors is positive [faster-rcnn] Sec. 3.1.3
    # --- RoI heads ([fast-rcnn] Sec. 2.3, [torchvision]) -------------------------------------
    roi_output_size: int = 7  # [mask-rcnn] RoIAlign 7x7
    roi_sampling_ratio: int = 2  # RoIAlign samples per bin and axis [torchvision]
    roi_canonical_scale: float = 224.0  # s0 of [fpn] Eq. (1): an RoI this size is pooled from P_k0
    roi_canonical_level: int = 4  # k0 of [fpn] Eq. (1)
    # from_torchvision's default is "kernel", so that its detections are torchvision's bits
    roi_align_summation: str = "fused"  # "fused" (fast, to float32 rounding) or "kernel" (the same bits)
    box_head: str = "2fc"  # v1 "2fc" (TwoMLPHead), v2 "4conv1fc"
    representation_size: int = 1024  # width of the box head's fully connected layers
    box_fg_iou_thresh: float = 0.5  # [fast-rcnn] Sec. 2.3
    box_bg_iou_thresh: float = 0.5  # [torchvision] ([fast-rcnn]: background in [0.1, 0.5))
    box_batch_size_per_image: int = 512  # [torchvision] (128 per image in [fast-rcnn])
    box_positive_fraction: float = 0.25  # [fast-rcnn] Sec. 2.3
    # --- inference ------------------------------------------------------------------------
    score_thresh: float = 0.05  # [torchvision] box_score_thresh
    nms_thresh: float = 0.5  # class-wise
    detections_per_img: int = 100  # the best detections kept per image [torchvision]
    # --- input ------------------------------------------------------------------------------
    image_mean: Tuple[float, ...] = IMAGENET_MEAN  # per-channel mean subtracted from RGB in [0, 1] [torchvision]
    image_std: Tuple[float, ...] = IMAGENET_STD  # per-channel std the images are divided by [torchvision]
    size_divisible: int = 32  # batches are padded to a multiple of this (C5's stride)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.box_head not in BOX_HEADS:
            raise ValueError(f"box_head must be one of {BOX_HEADS}, got {self.box_head!r}")
        if self.roi_align_summation not in SUMMATIONS:
            raise ValueError(f"roi_align_summation must be one of {SUMMATIONS}, got {self.roi_align_summation!r}")
        names = tuple(self.trunk_features)
        if not names or any(n not in TRUNK_FEATURES for n in names) or \
                names != TRUNK_FEATURES[TRUNK_FEATURES.index(names[0]):][:len(names)]:
            raise ValueError(f"trunk_features must be consecutive names from {TRUNK_FEATURES}, "
                             f"finest first, e.g. ('C3', 'C4', 'C5'); got {self.trunk_features}")
        pyramid = pyramid_levels(names)
        rpn_levels = self.rpn_level_names
        if rpn_levels != pyramid[len(pyramid) - len(rpn_levels):]:
            raise ValueError(f"rpn_levels must be consecutive levels of the pyramid {pyramid} ending at "
                             f"{pyramid[-1]}, e.g. {pyramid[1:]}; got {self.rpn_levels}")
        if len(self.anchor_sizes) != len(rpn_levels):
            raise ValueError(f"anchor_sizes needs one size per level {rpn_levels[0]}..{rpn_levels[-1]} "
                             f"(the RPN's levels, {len(rpn_levels)}), got {self.anchor_sizes}")
        if not self.roi_canonical_scale > 0:
            raise ValueError(f"roi_canonical_scale must be > 0, got {self.roi_canonical_scale}")
        if not self.aspect_ratios or any(r <= 0 for r in self.aspect_ratios):
            raise ValueError(f"aspect_ratios must be positive, got {self.aspect_ratios}")
        for name in ("rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "box_fg_iou_thresh", "box_bg_iou_thresh",
                     "rpn_positive_fraction", "box_positive_fraction", "nms_thresh", "rpn_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for stage in ("rpn", "box"):
            low, high = getattr(self, f"{stage}_bg_iou_thresh"), getattr(self, f"{stage}_fg_iou_thresh")
            if low > high:
                raise ValueError(f"{stage}_bg_iou_thresh ({low}) must be <= {stage}_fg_iou_thresh ({high})")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values, got {self.image_mean}, {self.image_std}")

    @property
    def rpn_level_names(self) -> Tuple[str, ...]:
        """The pyramid levels the RPN runs on: ``rpn_levels``, or every level when empty."""
        return tuple(self.rpn_levels) or pyramid_levels(self.trunk_features)


# ---------------------------------------------------------------------------
# Head: the optional residual FPN block, the box heads, the predictor
# ---------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    """``x + BN(conv3x3(ReLU(BN(conv3x3(x)))))``: the block of [digits-lab]'s Residual FPN.

    [digits-lab] adds "a residual block after the FPN outputs", before RoIAlign, and
    gives no internals. We choose [resnet]'s basic block without the final ReLU,
    one per level (levels differ in statistics), its last BN scale initialised to 0
    so that the block starts as the identity: a model with ``residual_fpn=True``
    begins exactly where the plain FPN is (e.g. torchvision's weights).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.conv2.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.bn2.weight)  # identity at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class TwoMLPHead(nn.Module):
    """v1 box head: flatten, fc6, ReLU, fc7, ReLU ([fpn] Sec. 4.2, "2fc")."""

    def __init__(self, in_features: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))  # (R, representation_size)


def conv_fc_head(channels: int, output_size: int, representation_size: int, num_convs: int = 4) -> nn.Sequential:
    """v2 box head "4conv1fc": 4 x (3x3 conv, BN, ReLU), flatten, FC, ReLU ([torchvision]).

    An ``nn.Sequential`` whose indices are torchvision's ``FastRCNNConvFCHead``'s
    (convs 0..3 as [conv, BN, ReLU], 4 = flatten, 5 = linear, 6 = ReLU).
    """
    layers = [nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                            nn.BatchNorm2d(channels), nn.ReLU(inplace=True)) for _ in range(num_convs)]
    layers += [nn.Flatten(), nn.Linear(channels * output_size ** 2, representation_size), nn.ReLU(inplace=True)]
    head = nn.Sequential(*layers)
    for layer in head.modules():
        if isinstance(layer, nn.Conv2d):  # torchvision's init of this head
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return head


class FastRCNNPredictor(nn.Module):
    """K + 1 class logits (0 = background) and 4 (K + 1) class-specific deltas ([fast-rcnn] Sec. 2.2)."""

    def __init__(self, in_features: int, num_classes_with_background: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes_with_background)
        self.bbox_pred = nn.Linear(in_features, num_classes_with_background * 4)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)  # (R, K + 1), (R, 4 (K + 1))


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

def assign_targets(proposals: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                   gt_labels: Sequence[torch.Tensor], matcher: Matcher,
                   sampler: BalancedPositiveNegativeSampler):
    """Sample the RoIs to train on and their targets ([fast-rcnn] Sec. 2.3, [torchvision]).

    Per image: the ground-truth boxes are appended to the proposals (so every box
    has at least one perfect positive early in training); each RoI takes the class
    of the box it overlaps with IoU >= 0.5, background below; the sampler keeps
    512 RoIs, at most 25 % positive; the chosen RoIs stay in index order.

    Args:
        proposals: B tensors (P_b, 4); gt_boxes: B tensors (M_b, 4) xyxy pixels;
        gt_labels: B tensors (M_b,) int64 in 0..K-1.

    Returns:
        rois: B tensors (R_b, 4); labels: B tensors (R_b,) int64, 0 = background,
        k + 1 = class k; matched_boxes: B tensors (R_b, 4), each RoI's box (the
        first box for background RoIs, zeros when the image has none).
    """
    with_gt = [torch.cat([p, g.to(p.dtype)]) for p, g in zip(proposals, gt_boxes)]
    all_labels, all_matched = [], []
    for rois, boxes, labels in zip(with_gt, gt_boxes, gt_labels):
        if boxes.numel() == 0:
            all_matched.append(torch.zeros(len(rois), dtype=torch.int64, device=rois.device))
            all_labels.append(torch.zeros(len(rois), dtype=torch.int64, device=rois.device))
            continue
        matched = matcher(box_iou(boxes.to(rois.dtype), rois))  # (P + M,)
        label = labels[matched.clamp(min=0)].to(torch.int64) + 1  # torchvision's 1..K
        label[matched == BACKGROUND] = BACKGROUND_CLASS
        label[matched == IGNORE] = NOT_SAMPLED
        all_matched.append(matched.clamp(min=0))
        all_labels.append(label)
    pos_masks, neg_masks = sampler(all_labels)
    sampled_rois, sampled_labels, matched_boxes = [], [], []
    for index, (pos, neg) in enumerate(zip(pos_masks, neg_masks)):
        chosen = torch.where(pos | neg)[0]
        boxes = gt_boxes[index].to(with_gt[index].dtype)
        if boxes.numel() == 0:
            boxes = torch.zeros((1, 4), dtype=with_gt[index].dtype, device=with_gt[index].device)
        sampled_rois.append(with_gt[index][chosen])
        sampled_labels.append(all_labels[index][chosen])
        matched_boxes.append(boxes[all_matched[index][chosen]])
    return sampled_rois, sampled_labels, matched_boxes


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------

def faster_rcnn_loss(class_logits: torch.Tensor, box_deltas: torch.Tensor, labels: Sequence[torch.Tensor],
                     regression_targets: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The second stage's losses ([fast-rcnn] Eq. (1), [torchvision]'s ``fastrcnn_loss``)::

        loss_classifier = mean over sampled RoIs of CE(logits, u)
        loss_box_reg = sum over positive RoIs of smooth_L1_beta(t^u - v) / N_sampled

    t^u are the deltas of the true class u only; beta = 1/9.

    Args:
        class_logits: (R, K + 1); box_deltas: (R, 4 (K + 1)).
        labels: B tensors (R_b,) int64 in 0..K (0 background); regression_targets: B tensors (R_b, 4).
    """
    labels, targets = torch.cat(list(labels)), torch.cat(list(regression_targets))
    num_rois, num_logits = class_logits.shape
    if box_deltas.shape != (num_rois, 4 * num_logits) or labels.shape != (num_rois,):
        raise ValueError(f"box_deltas must be {(num_rois, 4 * num_logits)} and labels {(num_rois,)}, "
                         f"got {tuple(box_deltas.shape)} and {tuple(labels.shape)}")
    classification = F.cross_entropy(class_logits, labels) if num_rois else class_logits.sum() * 0
    positive = torch.where(labels > BACKGROUND_CLASS)[0]
    deltas = box_deltas.reshape(num_rois, num_logits, 4)[positive, labels[positive]]  # (P, 4)
    box_loss = smooth_l1_loss(deltas, targets[positive], beta=SMOOTH_L1_BETA, reduction="sum")
    return {"loss_classifier": classification, "loss_box_reg": box_loss / max(num_rois, 1)}


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------

def postprocess(class_logits: torch.Tensor, boxes_per_class: torch.Tensor, rois_per_image: Sequence[int],
                image_sizes: Sequence[Tuple[int, int]], *, score_thresh: float = 0.05,
                nms_thresh: float = 0.5, detections_per_img: int = 100) -> List[Dict[str, torch.Tensor]]:
    """Detections from RoI predictions ([torchvision]'s ``postprocess_detections``).

    Per image: softmax over K + 1 classes; every (RoI, class) pair with class >= 1 is
    a candidate with its own decoded box, clipped to the image; keep score >
    ``score_thresh``; remove boxes under 1e-2 px; NMS per class; the best
    ``detections_per_img``.

    Args:
        class_logits: (R, K + 1); boxes_per_class: (R, K + 1, 4) decoded xyxy.
        rois_per_image: B counts summing to R; image_sizes: B unpadded (H, W).

    Returns:
        B dicts ``boxes`` (D, 4), ``scores`` (D,) descending, ``labels`` (D,) in 0..K-1.
    """
    scores = F.softmax(class_logits, dim=-1)  # (R, K + 1)
    detections = []
    for image_scores, image_boxes, size in zip(scores.split(list(rois_per_image)),
                                               boxes_per_class.split(list(rois_per_image)), image_sizes):
        image_boxes = clip_boxes_to_image(image_boxes, size)[:, 1:].reshape(-1, 4)  # (R_b K, 4)
        num_classes = image_scores.shape[1] - 1
        labels = torch.arange(num_classes, device=scores.device).expand(len(image_scores), -1).reshape(-1)
        image_scores = image_scores[:, 1:].reshape(-1)  # (R_b K,), class-major within a RoI
        keep = torch.where(image_scores > score_thresh)[0]
        keep = keep[remove_small_boxes(image_boxes[keep], MIN_DETECTION_SIZE)]
        image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
        keep = batched_nms(image_boxes, image_scores, labels, nms_thresh)[:detections_per_img]
        detections.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": labels[keep]})
    return detections


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class FasterRCNN(nn.Module):
    """The two-stage detector (see the module docstring; call convention of every detector).

    Args:
        config: a :class:`FasterRCNNConfig`.
        trunk: optional module returning ``config.trunk_features`` (C2..C5 by default),
            with ``out_channels``.
    """

    def __init__(self, config: FasterRCNNConfig, trunk: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.config = c = config
        self.preprocess = ImagePreprocessor(c.image_mean, c.image_std, c.size_divisible)
        self.backbone = trunk if trunk is not None else build_trunk(
            c.backbone, c.pretrained, c.frozen_bn, c.trainable_layers, feature_names=c.trunk_features)
        num_pooled = len(c.trunk_features)  # RoIs are pooled from these levels, not the max-pooled top
        self.fpn = FPN(self.backbone.out_channels, c.fpn_channels, num_pooled + 1, "maxpool", norm=c.fpn_norm)
        self.residual = (nn.ModuleList(ResidualBlock(c.fpn_channels) for _ in range(self.fpn.num_levels))
                         if c.residual_fpn else None)
        # the RPN reads the coarsest len(rpn_level_names) levels (all by default); RoIs every trunk level
        self.rpn_first_level = self.fpn.num_levels - len(c.rpn_level_names)
        self.rpn = RegionProposalNetwork(
            c.fpn_channels, tuple((s,) for s in c.anchor_sizes), c.aspect_ratios, conv_depth=c.rpn_conv_depth,
            fg_iou_thresh=c.rpn_fg_iou_thresh, bg_iou_thresh=c.rpn_bg_iou_thresh,
            batch_size_per_image=c.rpn_batch_size_per_image, positive_fraction=c.rpn_positive_fraction,
            pre_nms_top_n=dict(training=c.rpn_pre_nms_top_n_train, testing=c.rpn_pre_nms_top_n_test),
            post_nms_top_n=dict(training=c.rpn_post_nms_top_n_train, testing=c.rpn_post_nms_top_n_test),
            nms_thresh=c.rpn_nms_thresh, min_size=c.rpn_min_size, score_thresh=c.rpn_score_thresh)
        self.roi_pool = MultiScaleRoIAlign([str(i) for i in range(num_pooled)],
                                           c.roi_output_size, c.roi_sampling_ratio,
                                           canonical_scale=c.roi_canonical_scale,
                                           canonical_level=c.roi_canonical_level,
                                           summation=c.roi_align_summation)
        if c.box_head == "2fc":
            self.box_head = TwoMLPHead(c.fpn_channels * c.roi_output_size ** 2, c.representation_size)
        else:
            self.box_head = conv_fc_head(c.fpn_channels, c.roi_output_size, c.representation_size)
        self.box_predictor = FastRCNNPredictor(c.representation_size, c.num_classes + 1)
        self.box_coder = BoxCoder(ROI_BOX_WEIGHTS, math.log(1000.0 / 16))
        self.box_matcher = Matcher(c.box_fg_iou_thresh, c.box_bg_iou_thresh, allow_low_quality_matches=False)
        self.box_sampler = BalancedPositiveNegativeSampler(c.box_batch_size_per_image, c.box_positive_fraction)

    def pyramid(self, images, image_sizes=None):
        """Normalised padded batch, unpadded sizes and the pyramid (P2..P6 by default; after the residual blocks)."""
        batch, sizes = self.preprocess(images, image_sizes)
        features = self.backbone(batch)
        features = list(features.values()) if isinstance(features, dict) else list(features)
        levels = self.fpn(features)  # (len(trunk_features) + 1) x (B, C, H_l, W_l)
        if self.residual is not None:
            levels = [block(level) for block, level in zip(self.residual, levels)]
        return batch, sizes, levels

    def forward(self, images, targets: Optional[Sequence[Dict]] = None, *, image_sizes=None, orig_sizes=None):
        """Losses in train mode, detections in eval mode (``fcos_from_scratch.models`` convention)."""
        image_sizes = image_sizes if image_sizes is not None else sizes_from_targets(targets, "image_size")
        batch, sizes, levels = self.pyramid(images, image_sizes)
        gt_boxes = gt_labels = None
        if self.training:
            if targets is None or len(targets) != len(batch):
                raise ValueError(f"train mode needs one target per image: model(images, targets); "
                                 f"got {None if targets is None else len(targets)} for {len(batch)} images")
            gt_boxes, gt_labels = self.ground_truth(targets, batch.device)
        proposals, _, losses = self.rpn(tuple(batch.shape[-2:]), levels[self.rpn_first_level:], sizes, gt_boxes)
        if self.training:
            rois, labels, matched = assign_targets(proposals, gt_boxes, gt_labels, self.box_matcher, self.box_sampler)
            class_logits, box_deltas = self.roi_predictions(levels, rois, sizes)
            targets_t = self.box_coder.encode(matched, rois)
            return {**faster_rcnn_loss(class_logits, box_deltas, labels, targets_t), **losses}
        return self.detect(levels, proposals, sizes, orig_sizes, targets)

    def ground_truth(self, targets, device):
        """B (M_b, 4) float boxes and (M_b,) labels, checked (:func:`ground_truth_lists`)."""
        return ground_truth_lists(targets, device, self.config.num_classes)

    def roi_predictions(self, levels, rois, sizes):
        """Pool every RoI from the trunk levels (P2..P5 by default; not the max-pooled top) and run the heads."""
        pooled = self.roi_pool({str(i): level for i, level in enumerate(levels)}, rois, sizes)  # (R, C, 7, 7)
        return self.box_predictor(self.box_head(pooled))  # (R, K + 1), (R, 4 (K + 1))

    @torch.no_grad()
    def detect(self, levels, proposals, sizes, orig_sizes, targets=None) -> List[Dict]:
        """Detections per image, in original image coordinates."""
        config = self.config
        class_logits, box_deltas = self.roi_predictions(levels, proposals, sizes)
        boxes = self.box_coder.decode(box_deltas, proposals)  # (R, K + 1, 4)
        if boxes.dim() == 2:  # no RoI at all: decode returns (0, 4 (K + 1))
            boxes = boxes.reshape(0, config.num_classes + 1, 4)
        detections = postprocess(class_logits, boxes, [len(p) for p in proposals], sizes,
                                 score_thresh=config.score_thresh, nms_thresh=config.nms_thresh,
                                 detections_per_img=config.detections_per_img)
        orig_sizes = orig_sizes if orig_sizes is not None else sizes_from_targets(targets, "orig_size")
        for detection, (height, width), orig in zip(detections, sizes, orig_sizes or sizes):
            orig_h, orig_w = (int(v) for v in orig)
            if (orig_h, orig_w) != (height, width):
                detection["boxes"] = scale_boxes(detection["boxes"], (height, width), (orig_h, orig_w))
        return detections
