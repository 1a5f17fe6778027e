"""Soft labels, sample weights and class weights for a softmax classifier ([refinedetlite] Sec. 4).

Three ways to reshape the classification loss :func:`~fcos_from_scratch.ops.losses.soft_label_cross_entropy`
(Eq. (2)) without touching inference:

* IoU-guided soft labels (Eq. (3)): a positive whose regressed box overlaps its
  ground truth badly should not be pushed to full confidence; the target of its
  class is lowered with the IoU (and a negative's background target lowered when
  its box overlaps an object).
* IoU-guided sample weights (Eq. (4)): harder positives (low IoU) weigh more.
* class weights from box counts (Eq. (5)): rarer classes weigh more, from 1 for the
  most frequent to W for the rarest.

Labels follow the softmax columns: 0 is the background, 1..K the foreground classes,
so ``num_classes`` = K + 1 (the paper's "K classes including background", indexed
0..K-1 in its text; see ``docs/CONVENTIONS.md``). Ignored anchors must be removed by
the caller before these functions.

The IoU is that of the *refined* box (anchor decoded with the predicted offsets)
with the anchor's assigned ground truth: a function of the prediction, so it is
detached here — the label is a target, not something to optimise through.

Worked values with α = 0.25, β = 0.9 (the paper's)::

    IoU   positive y_t   negative y_0   η (positives)
    0.0   0.75           1.0            10.0
    0.5   0.875          0.875          1.818
    1.0   1.0            0.75           1.0
"""

import torch

from ._checks import check_tensor, upcast_non_float

__all__ = ["iou_guided_soft_labels", "iou_guided_sample_weights", "class_weights_from_counts"]


def _check_labels_ious(labels: torch.Tensor, ious: torch.Tensor) -> None:
    check_tensor("labels", labels)
    check_tensor("ious", ious)
    if labels.dim() != 1 or labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"labels must be an (N,) integer tensor (0 = background, 1..K), got "
            f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    if ious.shape != labels.shape:
        raise ValueError(f"ious must be (N,) like labels {tuple(labels.shape)}, got {tuple(ious.shape)}")


def _check_fraction(name: str, value, upper_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0)
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def iou_guided_soft_labels(labels: torch.Tensor, ious: torch.Tensor, num_classes: int,
                           alpha: float = 0.25) -> torch.Tensor:
    """IoU-guided soft labels, [refinedetlite] Eq. (3).

    With hard label t_j and IoU_j of the refined box with its ground truth::

        y_{j,t_j} = 1 − α (1 − IoU_j)    if t_j > 0 (positive)
        y_{j,0}   = 1 − α IoU_j          if t_j = 0 (negative)
        y_{j,i}   = (1 − y_{j,t_j}) / (num_classes − 1)   for every other i

    so each row sums to 1. α = 0 gives the one-hot labels.

    Args:
        labels: (N,) int64, 0 = background, 1..K = foreground class.
        ious: (N,) float, IoU_j in [0, 1] (clamped; detached here). For a negative,
            the IoU of its box with its best-overlapping ground truth (0 if none).
        num_classes: K + 1, the softmax width including background (>= 2).
        alpha: α in [0, 1] ([refinedetlite] Sec. 5: 0.25).

    Returns:
        (N, num_classes) float soft labels, rows summing to 1.
    """
    _check_labels_ious(labels, ious)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (K + 1 with background), got {num_classes!r}")
    _check_fraction("alpha", alpha)
    if labels.numel() > 0 and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] (0 = background), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    iou = upcast_non_float(ious).detach().clamp(0.0, 1.0)  # (N,)
    positive = labels > 0
    target = torch.where(positive, 1.0 - alpha * (1.0 - iou), 1.0 - alpha * iou)  # (N,) y_{j,t_j}
    rest = (1.0 - target) / (num_classes - 1)  # (N,) spread over the other classes
    soft = rest[:, None].expand(-1, num_classes).clone()  # (N, num_classes)
    soft.scatter_(1, labels.long()[:, None], target[:, None])
    return soft


def iou_guided_sample_weights(ious: torch.Tensor, labels: torch.Tensor, beta: float = 0.9
                              ) -> torch.Tensor:
    """IoU-guided sample weights, [refinedetlite] Eq. (4).

        η_j = 1 / (1 + β (IoU_j − 1) · 1(t_j > 0))

    A positive with IoU 1 weighs 1, with IoU 0 it weighs 1 / (1 − β) (10 for
    β = 0.9); negatives weigh 1.

    Args:
        ious: (N,) float IoU_j in [0, 1] (clamped; detached here).
        labels: (N,) int64, 0 = background, 1..K foreground.
        beta: β in [0, 1) ([refinedetlite] Sec. 5: 0.9); β = 1 would divide by 0.

    Returns:
        (N,) float weights >= 1.
    """
    _check_labels_ious(labels, ious)
    _check_fraction("beta", beta, upper_open=True)
    iou = upcast_non_float(ious).detach().clamp(0.0, 1.0)
    positive = (labels > 0).to(iou.dtype)
    return 1.0 / (1.0 + beta * (iou - 1.0) * positive)


def class_weights_from_counts(counts: torch.Tensor, max_weight: float = 10.0, gamma: float = 0.75,
                              with_background: bool = True) -> torch.Tensor:
    """Class weights from the number of labelled boxes per class, [refinedetlite] Eq. (5).

    With M_i boxes of foreground class i, r_i = M_max / M_i, r_max = M_max / M_min::

        w_i = (W − 1) / (r_max^γ − 1) · (r_i^γ − 1) + 1     (foreground)
        w_0 = 1                                              (background)

    The most frequent class gets 1, the rarest W. Two cases the paper leaves open:

    * **balanced counts** (M_max = M_min, r_max = 1): the formula is 0/0; every
      weight is 1 here. Note that nearly balanced counts still spread the weights
      over the whole 1..W range (the formula normalises by r_max, whatever its
      size): use these weights on data that is really imbalanced.
    * **a class with no boxes** (M_i = 0): r_i = ∞; it gets W (it has no positives
      to weigh anyway), and M_min is taken over the classes that have boxes. All
      counts zero is the balanced case.

    Example ([refinedetlite] App. A, COCO trainval35k: person 273,468 boxes, hair
    drier 209, so r_max = 1308.5 and r_max^0.75 = 217.6): r = 1, 10, 100, r_max give
    w = 1, 1.192, 2.273, 10.

    Args:
        counts: (K,) box counts M_1..M_K of the foreground classes (int or float, >= 0).
        max_weight: W >= 1 ([refinedetlite] Sec. 5: 10).
        gamma: γ > 0 ([refinedetlite] Sec. 5: 3/4).
        with_background: prepend w_0 = 1, giving the (K + 1,) weights of a softmax
            with the background in column 0; False returns the K foreground weights.

    Returns:
        (K + 1,) or (K,) float32 (float64 for float64 counts) weights in [1, W].
    """
    check_tensor("counts", counts)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"counts must be a non-empty (K,) tensor, got shape {tuple(counts.shape)}")
    if not (isinstance(max_weight, (int, float)) and not isinstance(max_weight, bool) and max_weight >= 1):
        raise ValueError(f"max_weight must be a number >= 1 (W), got {max_weight!r}")
    if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and gamma > 0):
        raise ValueError(f"gamma must be a number > 0, got {gamma!r}")
    m = counts.double() if counts.dtype == torch.float64 else counts.float()
    if not bool(torch.isfinite(m).all()) or bool((m < 0).any()):
        raise ValueError(f"counts must be finite and >= 0, got {counts.tolist()}")
    present = m > 0
    weights = torch.ones_like(m)
    if bool(present.any()):
        m_max, m_min = m[present].max(), m[present].min()
        if m_max > m_min:  # otherwise balanced: all ones
            r_max_g = (m_max / m_min) ** gamma
            r_g = (m_max / m[present]) ** gamma  # r_i^γ of the present classes
            weights[present] = (max_weight - 1.0) / (r_max_g - 1.0) * (r_g - 1.0) + 1.0
        weights[~present] = float(max_weight)
    if with_background:
        weights = torch.cat([weights.new_ones(1), weights])  # w_0 = 1
    return weights
