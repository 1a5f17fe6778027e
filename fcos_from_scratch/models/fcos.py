"""FCOS: a fully convolutional, anchor-free one-stage detector ([fcos]).

The whole detector, composed of parts that live in their own modules::

    images in [0, 1] --normalise, pad to /32--> trunk (C3..C5) --> FPN (P3..P7)
        --> head: per point, K class logits, (l, t, r, b) distances, centerness
        train: fcos_targets.assign_targets --> losses.fcos_loss --> dict of losses
        eval:  fcos_inference --> [{"boxes", "scores", "labels"}] per image

Call convention (torchvision's, shared by every detector here)::

    model = build_model("fcos", backbone="resnet18", num_classes=K)
    model.train(); losses = model(images, targets)   # {"loss_cls", "loss_box", "loss_ctr"}
    model.eval();  detections = model(images)        # [{"boxes", "scores", "labels"}]

* ``images``: a (B, 3, H, W) tensor or a list of (3, H_b, W_b) tensors, RGB in
  [0, 1]. The model normalises them with ``image_mean``/``image_std`` (ImageNet's
  by default, as torchvision's detection transform does), pads bottom/right to a
  multiple of ``size_divisible`` and sets the padding to 0 *after* normalising, so
  a list and the same images pre-padded into a tensor give the same result.
* ``targets``: B dicts with ``boxes`` (M, 4) xyxy pixels of the input image and
  ``labels`` (M,) in 0..K-1 (no background class). Optional keys, also honoured in
  eval mode: ``image_size`` (H, W) of the unpadded image inside a padded batch
  tensor, and ``orig_size`` (H, W) of the image before the data pipeline resized
  it; detections are clipped to ``image_size`` and scaled to ``orig_size``. The
  keyword arguments ``image_sizes=`` and ``orig_sizes=`` do the same without targets.
"""

import math
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.fcos_loss import FCOSLossConfig, fcos_loss
from .backbones import build_backbone
from .fcos_head import FCOSHead
from .fcos_inference import postprocess, select_candidates
from .fcos_targets import FCOS_SIZES_OF_INTEREST, assign_targets, make_points, pad_ground_truth
from .fpn import FPN
from .tiny_trunk import TinyTrunk

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FCOSConfig:
    """Every FCOS hyper-parameter; defaults are the paper's ([fcos] Sec. 4).

    ``sizes_of_interest=()`` means [fcos]'s (0, 64, 128, 256, 512, inf) for the first
    ``num_levels`` levels, the last range open-ended.
    """

    num_classes: int = 0  # K, required
    backbone: str = "resnet50"  # [fcos] Sec. 4; "tiny" = CPU trunk (tiny_trunk.py)
    pretrained: str = ""  # path or URL of ImageNet weights ("" = random init)
    frozen_bn: Optional[bool] = None  # None = frozen iff pretrained (seed 000 froze BN)
    trainable_layers: int = -1  # -1 = backbone default (torchvision: 3 if pretrained, else all)
    fpn_channels: int = 256  # [fpn], [fcos]
    num_levels: int = 5  # P3..P7 [fcos] Sec. 3.2; 3 = P3..P5
    fpn_extra_source: str = "p5"  # P6 from P5 (FCOS code, seed 000) or "c5" (RetinaNet)
    head_convs: int = 4  # [fcos] Fig. 2
    prior_prob: float = 0.01  # [focal] Sec. 3.3
    reg_activation: str = "relu"  # FCOS code / torchvision; "exp" = [fcos] Sec. 3.2
    sizes_of_interest: Tuple[float, ...] = ()  # () = [fcos] Sec. 3.2 (see above)
    center_sampling_radius: float = 1.5  # [fcos-imp]
    focal_alpha: float = 0.25  # [focal]
    focal_gamma: float = 2.0  # [focal]
    cls_weight: float = 1.0
    box_weight: float = 1.0
    centerness_weight: float = 1.0  # seed 001: 2.0
    box_weighting: str = "centerness"  # FCOS code; "none" = torchvision
    score_thresh: float = 0.05  # [fcos] Sec. 4.1
    topk_candidates: int = 1000  # per level, [fcos] Sec. 4.1
    per_class_topk: int = 0  # > 0: top-k per class instead (seed 001)
    nms_thresh: float = 0.6  # [fcos] Sec. 4.1
    detections_per_img: int = 100  # [fcos] Sec. 4.1
    image_mean: Tuple[float, ...] = IMAGENET_MEAN
    image_std: Tuple[float, ...] = IMAGENET_STD
    size_divisible: int = 32  # C5 has stride 32

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not 1 <= self.num_levels <= 7 or self.head_convs < 0:
            raise ValueError(f"need 1 <= num_levels <= 7 and head_convs >= 0, got "
                             f"{self.num_levels}, {self.head_convs}")
        if self.sizes_of_interest and len(self.sizes_of_interest) != self.num_levels + 1:
            raise ValueError(f"sizes_of_interest needs num_levels + 1 = {self.num_levels + 1} "
                             f"bounds, got {self.sizes_of_interest}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values, got {self.image_mean} "
                             f"and {self.image_std}")

    @property
    def strides(self) -> Tuple[int, ...]:
        return tuple(8 * 2 ** level for level in range(self.num_levels))  # P3 has stride 8

    @property
    def level_ranges(self) -> Tuple[float, ...]:
        if self.sizes_of_interest:
            return tuple(float(s) for s in self.sizes_of_interest)
        return FCOS_SIZES_OF_INTEREST[: self.num_levels] + (math.inf,)

    def loss_config(self) -> FCOSLossConfig:
        return FCOSLossConfig(self.focal_alpha, self.focal_gamma, self.cls_weight,
                              self.box_weight, self.centerness_weight, self.box_weighting)


def build_trunk(config: FCOSConfig) -> nn.Module:
    """The C3..C5 trunk named by ``config.backbone``.

    ``frozen_bn=None`` freezes BatchNorm when ImageNet weights are loaded (seed 000)
    and trains it otherwise (frozen random statistics would normalise nothing).
    """
    trainable = None if config.trainable_layers < 0 else config.trainable_layers
    if config.backbone == "tiny":
        if config.frozen_bn or config.pretrained or trainable is not None:
            raise ValueError("backbone='tiny' is trained from scratch: it takes no pretrained, "
                             "frozen_bn=True or trainable_layers")
        return TinyTrunk()
    frozen_bn = bool(config.pretrained) if config.frozen_bn is None else config.frozen_bn
    return build_backbone(config.backbone, pretrained=config.pretrained or None,
                          frozen_bn=frozen_bn, trainable_layers=trainable)


def stack_images(images) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """A (B, 3, H, W) tensor (lists are zero-padded bottom/right) and the B sizes (H, W)."""
    if torch.is_tensor(images) and images.dim() == 4 and images.shape[1] == 3:
        return images, [tuple(images.shape[-2:])] * len(images)
    if not isinstance(images, (list, tuple)) or not images or any(
            not torch.is_tensor(i) or i.dim() != 3 or i.shape[0] != 3 for i in images):
        got = tuple(images.shape) if torch.is_tensor(images) else [
            tuple(i.shape) if torch.is_tensor(i) else type(i).__name__ for i in images]
        raise ValueError(f"images must be a (B, 3, H, W) tensor or a list of (3, H, W) tensors, got {got}")
    sizes = [tuple(image.shape[-2:]) for image in images]
    batch = images[0].new_zeros(len(images), 3, *map(max, zip(*sizes)))  # (B, 3, H, W)
    for tensor, image in zip(batch, images):
        tensor[:, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


def inside_mask(batch: torch.Tensor, sizes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 inside each image's true (H_b, W_b) and 0 in the padding."""
    rows = torch.arange(batch.shape[-2], device=batch.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(batch.shape[-1], device=batch.device)[None, None, :]  # (1, 1, W)
    true = torch.tensor(sizes, device=batch.device)  # (B, 2)
    inside = (rows < true[:, 0, None, None]) & (cols < true[:, 1, None, None])  # (B, H, W)
    return inside[:, None].to(batch.dtype)


class FCOS(nn.Module):
    """The FCOS detector (see the module docstring for the call convention).

    Args:
        config: an :class:`FCOSConfig`.
        trunk: optional module returning C3..C5 (with ``out_channels``); built from
            ``config.backbone`` when None.
    """

    def __init__(self, config: FCOSConfig, trunk: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = trunk if trunk is not None else build_trunk(config)
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels, config.num_levels,
                       config.fpn_extra_source)
        self.head = FCOSHead(config.fpn_channels, config.num_classes, config.num_levels,
                             config.head_convs, config.prior_prob, config.reg_activation)
        mean, std = torch.tensor(config.image_mean), torch.tensor(config.image_std)
        self.register_buffer("image_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", std.view(1, 3, 1, 1), persistent=False)

    # -- input ----------------------------------------------------------------
    def prepare_images(self, images, image_sizes=None) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Normalise, pad to a multiple of ``size_divisible``, zero the padding.

        Args:
            images: (B, 3, H, W) tensor or list of (3, H_b, W_b) tensors in [0, 1].
            image_sizes: B (H, W) true sizes inside a padded tensor (default: full).

        Returns:
            (B, 3, H', W') network input and the B unpadded sizes (H, W).
        """
        batch, sizes = stack_images(images)
        if image_sizes is not None:
            sizes = [tuple(int(v) for v in size) for size in image_sizes]
            if len(sizes) != len(batch):
                raise ValueError(f"image_sizes has {len(sizes)} entries for {len(batch)} images")
        height, width = batch.shape[-2:]
        if any(h > height or w > width or h < 1 or w < 1 for h, w in sizes):
            raise ValueError(f"image_sizes must lie within the batch's (H, W) = {(height, width)}, "
                             f"got {sizes}")
        batch = (batch - self.image_mean.to(batch.dtype)) / self.image_std.to(batch.dtype)
        pad_h, pad_w = -height % self.config.size_divisible, -width % self.config.size_divisible
        if pad_h or pad_w:
            batch = F.pad(batch, (0, pad_w, 0, pad_h))  # (B, 3, H', W')
        if any(size != (height, width) for size in sizes):
            batch = batch * inside_mask(batch, sizes)  # padding = 0 after normalising
        return batch, sizes

    # -- forward --------------------------------------------------------------
    def forward(self, images, targets: Optional[Sequence[Dict]] = None, *,
                image_sizes=None, orig_sizes=None):
        """Losses in train mode, detections in eval mode (see the module docstring)."""
        if image_sizes is None and targets is not None and all("image_size" in t for t in targets):
            image_sizes = [t["image_size"] for t in targets]
        batch, sizes = self.prepare_images(images, image_sizes)
        features = self.backbone(batch)
        features = list(features.values()) if isinstance(features, dict) else list(features)
        pyramid = self.fpn(features)  # L x (B, C, H_l, W_l)
        cls_logits, box_ltrb, ctr_logits = self.head(pyramid)  # (B, N, K), (B, N, 4), (B, N)
        points = make_points([p.shape[-2:] for p in pyramid], self.config.strides,
                             dtype=torch.float32, device=batch.device)  # L x (N_l, 2)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in train mode: model(images, targets)")
            if len(targets) != len(batch):
                raise ValueError(f"got {len(targets)} targets for {len(batch)} images")
            return self.compute_loss(cls_logits, box_ltrb, ctr_logits, points, targets)
        if orig_sizes is None and targets is not None and all("orig_size" in t for t in targets):
            orig_sizes = [t["orig_size"] for t in targets]
        orig_sizes = sizes if orig_sizes is None else [tuple(int(v) for v in s) for s in orig_sizes]
        return self.detect(cls_logits, box_ltrb, ctr_logits, points, sizes, orig_sizes)

    def compute_loss(self, cls_logits, box_ltrb, ctr_logits, points, targets) -> Dict:
        """Assign targets to points and evaluate :func:`fcos_loss`."""
        gt_boxes, gt_labels, gt_valid = pad_ground_truth(targets, device=cls_logits.device)
        labels = gt_labels[gt_valid]
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_classes):
            raise ValueError(f"target labels must be in 0..{self.config.num_classes - 1}, "
                             f"got {labels.unique().tolist()}")
        assigned = assign_targets(points, self.config.strides, gt_boxes, gt_labels, gt_valid,
                                  sizes_of_interest=self.config.level_ranges,
                                  center_sampling_radius=self.config.center_sampling_radius)
        return fcos_loss(cls_logits, box_ltrb, ctr_logits, assigned.labels, assigned.ltrb,
                         assigned.centerness, self.config.loss_config())

    @torch.no_grad()
    def detect(self, cls_logits, box_ltrb, ctr_logits, points, sizes, orig_sizes) -> List[Dict]:
        """Detections per image, in original image coordinates."""
        config = self.config
        boxes, scores, labels = select_candidates(
            cls_logits, box_ltrb, ctr_logits, points, config.strides,
            score_thresh=config.score_thresh, topk_candidates=config.topk_candidates,
            per_class_topk=config.per_class_topk)
        return postprocess(boxes, scores, labels, sizes, orig_sizes, nms_thresh=config.nms_thresh,
                           detections_per_img=config.detections_per_img)


def config_field_names() -> List[str]:
    return [f.name for f in fields(FCOSConfig)]
