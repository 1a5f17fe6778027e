"""The FCOS training loss ([fcos] Eq. (2), with the [fcos-imp] refinements).

    L = w_cls / N_pos * sum_points   FL(p, c*)                         (focal, all points)
      + w_box / sum(c*) * sum_pos    c* . (1 - GIoU(box, box*))         (GIoU, positives)
      + w_ctr / N_pos * sum_pos     BCE(ctr, c*)                        (centerness)

* Classification: sigmoid focal loss ([focal] Eq. (5), alpha 0.25, gamma 2) over
  every point and class, the background's target a row of zeros; divided by the
  number of positive points N_pos ([fcos] Eq. (2)), at least 1.
* Box: GIoU loss ([giou]; the FCOS code's choice, [fcos] used IoU) on the
  positives, weighted by their centerness targets c* and divided by sum(c*) (the
  FCOS code's ``box_weighting="centerness"``) -- points near a box's centre,
  whose predictions survive inference, count more. ``box_weighting="none"``
  gives torchvision's variant: unweighted, divided by N_pos.
* Centerness: binary cross-entropy with logits against c* ([fcos] Eq. (3)) on the
  positives, divided by N_pos.
* Under ``torch.distributed`` N_pos and sum(c*) are averaged over processes, so
  every process divides by the same number and DDP's gradient averaging gives
  the gradient of the global-batch loss ([fcos-imp]; torchvision does not).

GIoU is invariant to translation and scale, so boxes are compared in the point's
own frame in stride units: the prediction (l, t, r, b) is the box
(-l, -t, r, b) and the target likewise. No decoding to pixels is needed.

Papers:
    [fcos] Tian et al., ICCV 2019.  [fcos-imp] Tian et al., TPAMI 2022.
    [focal] Lin et al., ICCV 2017.  [giou] Rezatofighi et al., CVPR 2019.
"""

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F

from ..comm import all_reduce_mean
from ..ops import generalized_box_iou_loss, sigmoid_focal_loss

BOX_WEIGHTINGS = ("centerness", "none")


@dataclass(frozen=True)
class FCOSLossConfig:
    """Term weights and focal parameters; defaults are [fcos]'s.

    ``ctr_weight = 2`` is what seed 001 used to make centerness converge faster.
    """

    alpha: float = 0.25  # [focal] Sec. 3, [fcos] Sec. 4
    gamma: float = 2.0  # [focal] Sec. 3
    cls_weight: float = 1.0  # [fcos] Eq. (2)
    box_weight: float = 1.0  # lambda = 1, [fcos] Eq. (2)
    ctr_weight: float = 1.0  # seed 001: 2.0
    box_weighting: str = "centerness"  # the FCOS code; "none" = torchvision

    def __post_init__(self) -> None:
        if self.box_weighting not in BOX_WEIGHTINGS:
            raise ValueError(
                f"box_weighting must be one of {BOX_WEIGHTINGS}, got {self.box_weighting!r}"
            )
        for name in ("cls_weight", "box_weight", "ctr_weight", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def ltrb_to_local_box(ltrb: torch.Tensor) -> torch.Tensor:
    """(..., 4) distances (l, t, r, b) -> (..., 4) xyxy box (-l, -t, r, b) around the point."""
    return torch.cat([-ltrb[..., :2], ltrb[..., 2:]], dim=-1)


def fcos_loss(
    cls_logits: torch.Tensor,
    box_ltrb: torch.Tensor,
    ctr_logits: torch.Tensor,
    target_labels: torch.Tensor,
    target_ltrb: torch.Tensor,
    target_centerness: torch.Tensor,
    config: FCOSLossConfig = FCOSLossConfig(),
) -> Dict[str, torch.Tensor]:
    """The three weighted FCOS loss terms for a batch.

    Args:
        cls_logits: (B, N, K) class logits.
        box_ltrb: (B, N, 4) predicted distances (l, t, r, b) in strides, >= 0.
        ctr_logits: (B, N) centerness logits.
        target_labels: (B, N) int64 class 0..K-1, negative for background.
        target_ltrb: (B, N, 4) target distances in strides (used on positives).
        target_centerness: (B, N) centerness targets c* (used on positives).
        config: weights and focal parameters.

    Returns:
        ``{"loss_cls", "loss_box", "loss_ctr"}``: scalars already multiplied by their
        weights, so the training objective is their sum. Finite and
        differentiable also when the batch has no positive point.
    """
    batch, num_points, num_classes = cls_logits.shape
    if box_ltrb.shape != (batch, num_points, 4) or ctr_logits.shape != (batch, num_points):
        raise ValueError(
            f"box_ltrb must be {(batch, num_points, 4)} and ctr_logits {(batch, num_points)}, "
            f"got {tuple(box_ltrb.shape)} and {tuple(ctr_logits.shape)}"
        )
    if target_labels.shape != (batch, num_points):
        raise ValueError(f"target_labels must be {(batch, num_points)}, got {tuple(target_labels.shape)}")
    cls_logits, box_ltrb, ctr_logits = cls_logits.float(), box_ltrb.float(), ctr_logits.float()
    positive = target_labels >= 0  # (B, N)

    # Normalisers, shared by all processes (detached: they are counts, not predictions).
    num_pos = all_reduce_mean(positive.sum().to(cls_logits.dtype).detach()).clamp(min=1.0)
    one_hot = F.one_hot(target_labels.clamp(min=0), num_classes).to(cls_logits.dtype)  # (B, N, K)
    one_hot = one_hot * positive[..., None]
    loss_cls = sigmoid_focal_loss(cls_logits, one_hot, config.alpha, config.gamma, "sum") / num_pos

    centerness = target_centerness[positive].to(cls_logits.dtype)  # (P,)
    giou = generalized_box_iou_loss(
        ltrb_to_local_box(box_ltrb[positive]),  # (P, 4)
        ltrb_to_local_box(target_ltrb[positive].to(cls_logits.dtype)),
        reduction="none",
    )  # (P,)
    if config.box_weighting == "centerness":
        ctr_sum = all_reduce_mean(centerness.sum().detach()).clamp(min=1e-6)
        loss_box = (giou * centerness).sum() / ctr_sum
    else:
        loss_box = giou.sum() / num_pos

    loss_ctr = F.binary_cross_entropy_with_logits(
        ctr_logits[positive], centerness, reduction="sum"
    ) / num_pos
    return {
        "loss_cls": config.cls_weight * loss_cls,
        "loss_box": config.box_weight * loss_box,
        "loss_ctr": config.ctr_weight * loss_ctr,
    }
