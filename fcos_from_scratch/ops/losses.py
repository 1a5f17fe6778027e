"""IoU losses, the sigmoid focal loss and smooth L1, element-wise, with torchvision's
signatures; and the weighted soft-label cross entropy of [refinedetlite] Eq. (2).

Papers:
    [focal] Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    [giou]  Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.
    [diou]  Zheng et al., "Distance-IoU Loss", AAAI 2020 (DIoU and CIoU).
    [refinedetlite] Chen et al., CVPRW 2020 (soft labels, sample and class weights).

The box losses compare ``boxes1[i]`` with ``boxes2[i]`` (not all pairs) and add
``eps`` to every denominator exactly as torchvision does, so values agree with it to
float precision; gradients stay finite on identical and on zero-area boxes.

Malformed boxes (``docs/CONVENTIONS.md``): a box with ``x2 < x1`` (``y2 < y1``) is
read as the empty box at ``x1`` (``y1``), so each loss stays in its range; a pair
with a NaN or inf coordinate has loss NaN -- no host synchronisation, and the
training loop's non-finite guard names the term.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import OpInputError, check_boxes, check_reduction, check_tensor, upcast_non_float
from .boxes import aspect_ratio_term, order_corners



def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction``; the mean of an empty loss is 0 and still backpropagates."""
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_loss_boxes(boxes1, boxes2, reduction):
    """Checked, float, corner-ordered boxes; also an (...,) mask of non-finite pairs."""
    check_boxes("boxes1", boxes1, allow_batch_dims=True)
    check_boxes("boxes2", boxes2, allow_batch_dims=True)
    if boxes1.shape != boxes2.shape:  # torchvision fails in a broadcast: RuntimeError
        raise OpInputError(
            f"boxes1 and boxes2 must have the same shape (..., 4), got "
            f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    check_reduction(reduction)
    boxes1, boxes2 = upcast_non_float(boxes1), upcast_non_float(boxes2)
    non_finite = ~(torch.isfinite(boxes1).all(-1) & torch.isfinite(boxes2).all(-1))  # (...,)
    return order_corners(boxes1), order_corners(boxes2), non_finite


def _finish(loss: torch.Tensor, non_finite: torch.Tensor, reduction: str) -> torch.Tensor:
    """NaN where a pair had a NaN or inf coordinate (the loss is undefined), then reduce."""
    return _reduce(loss.masked_fill(non_finite, math.nan), reduction)


def _inter_union(boxes1: torch.Tensor, boxes2: torch.Tensor):
    """Element-wise intersection and union areas, (...,) each."""
    x1, y1, x2, y2 = boxes1.unbind(-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(-1)
    # relu, not clamp: its gradient is 0 where boxes only touch, as torchvision's mask.
    inter_w = (torch.min(x2, x2g) - torch.max(x1, x1g)).relu()
    inter_h = (torch.min(y2, y2g) - torch.max(y1, y1g)).relu()
    inter = inter_w * inter_h
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter, union


def _enclosing_wh(boxes1: torch.Tensor, boxes2: torch.Tensor):
    """Element-wise width and height of the smallest enclosing box."""
    width = torch.max(boxes1[..., 2], boxes2[..., 2]) - torch.min(boxes1[..., 0], boxes2[..., 0])
    height = torch.max(boxes1[..., 3], boxes2[..., 3]) - torch.min(boxes1[..., 1], boxes2[..., 1])
    return width, height


def generalized_box_iou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """GIoU loss 1 - GIoU, [giou] Alg. 2.

    L = 1 - IoU + (|C| - |A ∪ B|) / |C|, with IoU = |A ∩ B| / (|A ∪ B| + eps) and
    ``eps`` also added to |C|.

    Args:
        boxes1: (N, 4) predicted xyxy boxes (any leading dims).
        boxes2: (N, 4) target xyxy boxes, same shape.
        reduction: ``"none"`` (per-box loss), ``"mean"`` or ``"sum"``.
        eps: added to the denominators.

    Returns:
        (N,) losses in [0, 2] for ``"none"``, else a scalar.
    """
    boxes1, boxes2, non_finite = _check_loss_boxes(boxes1, boxes2, reduction)
    inter, union = _inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    enclosing_w, enclosing_h = _enclosing_wh(boxes1, boxes2)
    enclosing_area = enclosing_w * enclosing_h
    giou = iou - (enclosing_area - union) / (enclosing_area + eps)
    return _finish(1 - giou, non_finite, reduction)


def _diou_loss_and_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float):
    """Element-wise 1 - DIoU = 1 - IoU + ρ² / (c² + eps), and the IoU."""
    inter, union = _inter_union(boxes1, boxes2)
    iou = inter / (union + eps)
    enclosing_w, enclosing_h = _enclosing_wh(boxes1, boxes2)
    diagonal_sq = enclosing_w ** 2 + enclosing_h ** 2 + eps  # c²
    centre1 = (boxes1[..., :2] + boxes1[..., 2:]) / 2
    centre2 = (boxes2[..., :2] + boxes2[..., 2:]) / 2
    centre_distance_sq = ((centre1 - centre2) ** 2).sum(-1)  # ρ²
    return 1 - iou + centre_distance_sq / diagonal_sq, iou


def distance_box_iou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """DIoU loss, [diou] Eq. (7): L = 1 - IoU + ρ²(b, b_gt) / c².

    Args:
        boxes1: (N, 4) predicted xyxy boxes (any leading dims).
        boxes2: (N, 4) target xyxy boxes, same shape.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        eps: added to the union and to c².

    Returns:
        (N,) losses for ``"none"``, else a scalar.
    """
    boxes1, boxes2, non_finite = _check_loss_boxes(boxes1, boxes2, reduction)
    loss, _ = _diou_loss_and_iou(boxes1, boxes2, eps)
    return _finish(loss, non_finite, reduction)


def complete_box_iou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """CIoU loss, [diou] Eq. (10): L = 1 - IoU + ρ²/c² + α v.

    v = 4/π² (arctan(w_gt/h_gt) - arctan(w/h))² and α = v / (1 - IoU + v + eps),
    with α held constant (no gradient) as in the paper's Eq. (12) discussion.

    Args:
        boxes1: (N, 4) predicted xyxy boxes (any leading dims).
        boxes2: (N, 4) target xyxy boxes, same shape.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        eps: added to the union, to c² and to the denominator of α.

    Returns:
        (N,) losses for ``"none"``, else a scalar.
    """
    boxes1, boxes2, non_finite = _check_loss_boxes(boxes1, boxes2, reduction)
    diou_loss, iou = _diou_loss_and_iou(boxes1, boxes2, eps)
    w1, h1 = boxes1[..., 2] - boxes1[..., 0], boxes1[..., 3] - boxes1[..., 1]
    w2, h2 = boxes2[..., 2] - boxes2[..., 0], boxes2[..., 3] - boxes2[..., 1]
    v = aspect_ratio_term(w2, h2, w1, h1)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _finish(diou_loss + alpha * v, non_finite, reduction)


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
) -> torch.Tensor:
    """Sigmoid focal loss, [focal] Eq. (5): FL(p_t) = -α_t (1 - p_t)^γ log(p_t).

    p = sigmoid(x), p_t = p if t = 1 else 1 - p, α_t = α if t = 1 else 1 - α
    (``alpha = -1`` turns the α weighting off, as torchvision). Soft targets in
    [0, 1] are allowed: p_t and α_t interpolate linearly in t. The cross-entropy
    -log(p_t) is computed from the logits in the stable form
    max(x, 0) - x t + log(1 + exp(-|x|)) by torch's own
    ``binary_cross_entropy_with_logits``, so with γ = 0 and ``alpha = -1`` the loss
    *is* torch's BCE, bit for bit, and with γ >= 0 and α in [0, 1] it is <= it.

    Args:
        inputs: (...) logits, any shape.
        targets: (...) targets in [0, 1], same shape as ``inputs``.
        alpha: α in [0, 1], weight of the positive class ([focal] Sec. 3: 0.25),
            or -1 for no weighting.
        gamma: γ, focusing parameter ([focal] Sec. 3: 2).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        Loss with the shape of ``inputs`` for ``"none"``, else a scalar.
    """
    check_tensor("inputs", inputs)
    check_tensor("targets", targets)
    if inputs.shape != targets.shape:  # torchvision's (BCE's) wording, then ours
        raise ValueError(
            f"Target size ({targets.shape}) must be the same as input size ({inputs.shape}): "
            f"inputs and targets must have the same shape, got {tuple(inputs.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
        0 <= alpha <= 1 or alpha == -1
    ):
        raise ValueError(
            f"Invalid alpha value: {alpha}. alpha must be in the range [0,1] or -1 for ignore."
        )
    check_reduction(reduction)
    targets = targets.to(inputs.dtype)
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")  # -log(p_t)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


def smooth_l1_loss(
    input: torch.Tensor, target: torch.Tensor, beta: float = 1.0, reduction: str = "none"
) -> torch.Tensor:
    """Smooth L1 (Huber-like) loss, [fast-rcnn] Eq. (3), with a transition point β.

    With x = input - target, element-wise::

        smooth_l1(x) = 0.5 x² / β     if |x| < β
                       |x| - 0.5 β    otherwise

    The two pieces meet with equal value and slope at |x| = β. β = 0 is plain L1,
    |x|. [fast-rcnn] uses β = 1; torchvision's Faster R-CNN uses β = 1/9 for the
    RPN and the box head. Values and gradients equal
    ``torch.nn.functional.smooth_l1_loss``; one difference: the ``"mean"`` of an
    empty loss is 0 here (PyTorch: NaN), like every loss in this module.

    Args:
        input: (...) predictions, any shape.
        target: (...) targets, same shape as ``input``.
        beta: β >= 0, where the loss turns from quadratic to linear.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        Loss with the shape of ``input`` for ``"none"``, else a scalar.
    """
    check_tensor("input", input)
    check_tensor("target", target)
    if input.shape != target.shape:
        raise ValueError(
            f"input and target must have the same shape, got {tuple(input.shape)} "
            f"and {tuple(target.shape)}"
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < float("inf"):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    check_reduction(reduction)
    distance = (upcast_non_float(input) - upcast_non_float(target)).abs()  # |x|
    if beta == 0:  # plain L1; avoids 0 / 0 in the quadratic piece's gradient
        return _reduce(distance, reduction)
    quadratic = 0.5 * distance * distance / beta  # same operation order as PyTorch's kernel
    linear = distance - 0.5 * beta
    return _reduce(torch.where(distance < beta, quadratic, linear), reduction)


def soft_label_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    sample_weights: Optional[torch.Tensor] = None,
    class_weights: Optional[torch.Tensor] = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Weighted soft-label cross entropy, written as the KL divergence of [refinedetlite] Eq. (2).

    For sample j with logits x_j, soft label y_j (a distribution over the C classes,
    background included), sample weight η_j and class weights w_i::

        loss_j = η_j · Σ_i w_i · y_ji · log(y_ji / softmax(x_j)_i)
               = η_j · Σ_i w_i · (y_ji log y_ji − y_ji log softmax(x_j)_i)

    ``y log y`` is ``torch.xlogy(y, y)``, so a zero target contributes exactly 0
    (not 0 · log 0 = NaN). With one-hot targets the first term vanishes and this is
    the weighted cross entropy ``F.cross_entropy(x, t, weight=w)`` per sample; with
    soft targets it differs from ``F.cross_entropy(x, y, weight=w)`` only by the
    constant η_j Σ_i w_i y_ji log y_ji, so the gradients are the same, and the
    loss is >= 0 with 0 exactly when softmax(x_j) = y_j.

    The paper divides the sum by N; which N (anchors after OHEM, positives) is the
    detector's choice, so the default reduction is ``"sum"``.

    Args:
        logits: (N, C) float, unnormalised scores x_j.
        targets: (N, C) float soft labels y_j, rows non-negative and summing to 1
            (not checked: that would synchronise with the device).
        sample_weights: optional (N,) η_j, e.g. :func:`iou_guided_sample_weights`.
        class_weights: optional (C,) w_i, e.g. :func:`class_weights_from_counts`.
        reduction: ``"sum"`` (default), ``"mean"`` (over the N samples; 0 for
            N = 0) or ``"none"`` (the (N,) per-sample losses).

    Returns:
        Scalar, or (N,) for ``"none"``; an empty input gives 0 that backpropagates.
    """
    check_tensor("logits", logits)
    check_tensor("targets", targets)
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets must have the shape of logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    num, num_classes = logits.shape
    for name, weights, size in (("sample_weights", sample_weights, num),
                                ("class_weights", class_weights, num_classes)):
        if weights is not None and (not isinstance(weights, torch.Tensor)
                                    or tuple(weights.shape) != (size,)):
            shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights)
            raise ValueError(f"{name} must be a ({size},) tensor, got {shape}")
    check_reduction(reduction)
    logits = upcast_non_float(logits)
    targets = targets.to(logits.dtype)
    log_p = F.log_softmax(logits, dim=1)  # (N, C)
    per_class = torch.xlogy(targets, targets) - targets * log_p  # (N, C): y log(y / p)
    if class_weights is not None:
        per_class = per_class * class_weights.to(logits.dtype)  # (N, C) · (C,)
    loss = per_class.sum(dim=1)  # (N,)
    if sample_weights is not None:
        loss = loss * sample_weights.to(logits.dtype)
    return _reduce(loss, reduction)
