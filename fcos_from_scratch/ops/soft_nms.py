"""Soft-NMS: decay the scores of overlapping boxes instead of deleting them.

Greedy NMS deletes every box that overlaps a kept box by more than a threshold,
so of two overlapping objects one is lost. Soft-NMS [soft-nms, Alg. 1] keeps
picking the box with the highest *current* score, and multiplies the score of
every remaining box by a weight that falls with its overlap with the pick:

* ``"linear"`` [soft-nms, Eq. (2)]: ``s_i <- s_i * (1 - IoU)`` if ``IoU > N_t``,
  else unchanged;
* ``"gaussian"`` [soft-nms, Eq. (3)]: ``s_i <- s_i * exp(-IoU^2 / sigma)`` for
  every remaining box;
* ``"hard"``: ``s_i <- 0`` if ``IoU > N_t`` (the reference's method 0, i.e.
  greedy NMS, as a special case).

A box whose score falls below ``score_threshold`` is dropped. The rules are those
of the authors' reference implementation (``cpu_soft_nms`` in
bharatsingh430/soft-nms, ported in ``tests/reference/soft_nms_reference.py``);
see :func:`soft_nms` for the exact comparisons and the one place we differ.

The procedure is sequential by nature (each pick depends on all earlier decays),
so there is one Python step per kept box; each step is a handful of tensor ops
on all remaining boxes (one IoU row, one decay, one filter). Picks come out by
non-increasing rescored score, so a detector that keeps only its best D
detections can stop after D picks (``max_kept = D``): the D boxes and scores are
exactly the first D of the full run, and the loop costs D steps instead of one
per surviving box (with the Gaussian, which decays but rarely drops, that is
nearly every candidate).

Papers:
    [soft-nms] Bodla et al., "Soft-NMS -- Improving Object Detection With One Line
    of Code", ICCV 2017.
"""

import math
from typing import Optional, Tuple

import torch

from ._checks import check_boxes, check_choice, check_finite_boxes, check_scores, check_tensor, upcast
from .boxes import elementwise_box_iou, order_corners, pairwise_iou
from .nms import _take  # index_select: stays on one thread for small copies

SOFT_NMS_METHODS = ("linear", "gaussian", "hard")
DENSE_LIMIT = 1024  # up to this many boxes, all decay weights are computed at once ((R, R) floats)


def _check_real(name: str, value, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False) -> float:
    """A real number in [low, high] (or (low, high] when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def _check_soft_nms_inputs(boxes, scores, idxs, iou_threshold, sigma, score_threshold, method, max_kept=0):
    check_boxes("boxes", boxes)
    check_finite_boxes("boxes", boxes)  # NaN would never decay anything
    check_scores("scores", scores, boxes.shape[0])
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor (they are rescaled), got {scores.dtype}")
    if idxs is not None:
        check_tensor("idxs", idxs)
        if idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"idxs must have shape ({boxes.shape[0]},) like boxes, got {tuple(idxs.shape)}"
            )
        if idxs.is_floating_point() or idxs.is_complex():
            raise ValueError(f"idxs must be an integer tensor of class ids, got dtype {idxs.dtype}")
    _check_real("iou_threshold", iou_threshold, low=0.0, high=1.0)
    _check_real("sigma", sigma, low=0.0, low_open=True)
    _check_real("score_threshold", score_threshold)
    check_choice("method", method, SOFT_NMS_METHODS)
    if isinstance(max_kept, bool) or not isinstance(max_kept, int) or max_kept < 0:
        raise ValueError(f"max_kept must be an int >= 0 (0 = no limit), got {max_kept!r}")


def _decay(iou: torch.Tensor, iou_threshold: float, sigma: float, method: str) -> torch.Tensor:
    """Weights for the remaining scores given their IoU with the pick, (R,)."""
    if method == "gaussian":
        # exp is evaluated in float64 and rounded, as the reference calls np.exp
        # on a C float; the exponent itself is computed in the IoU dtype. We write
        # exp(x) as expm1(x) + 1 (equal up to one float64 rounding) because
        # torch.exp hands even 100 elements to the thread pool, which can stall
        # for milliseconds on a busy machine; expm1 stays on one thread.
        exponent = (-(iou * iou) / sigma).double()  # (R,)
        return (torch.expm1(exponent) + 1).to(iou.dtype)
    above = iou > iou_threshold  # strict, like the reference's ``ov > Nt``
    decayed = 1 - iou if method == "linear" else torch.zeros_like(iou)
    return torch.where(above, decayed, torch.ones_like(iou))


def _soft_nms_loop(boxes, scores, labels: Optional[torch.Tensor], iou_threshold, sigma,
                   score_threshold, method, max_kept: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """The Soft-NMS loop; boxes only decay boxes with the same label (if given).

    Stops after ``max_kept`` picks when > 0: later steps never change earlier picks.
    """
    boxes = order_corners(upcast(boxes.detach()))  # as box_iou reads them, once
    iou_dtype = torch.promote_types(boxes.dtype, torch.float32)
    work_dtype = torch.promote_types(scores.dtype, iou_dtype)
    current = scores.detach().to(work_dtype)  # (N,) current scores
    alive = torch.nonzero(current >= score_threshold).flatten()  # (R,) increasing
    current = _take(current, alive)  # (R,)
    if 0 < alive.numel() <= DENSE_LIMIT:
        return _soft_nms_dense(boxes, scores, labels, alive, current, iou_threshold, sigma, score_threshold,
                               method, max_kept)
    keep, kept_scores = [], []
    while alive.numel() > 0 and (max_kept <= 0 or len(keep) < max_kept):
        best = int(torch.argmax(current))  # first maximum: lowest index among ties
        pick = int(alive[best])
        keep.append(pick)
        kept_scores.append(current[best].item())  # exact: a Python float is a double
        iou = pairwise_iou(boxes[pick].unsqueeze(0), _take(boxes, alive))[0]  # (R,)
        weight = _decay(iou, iou_threshold, sigma, method)  # (R,)
        if labels is not None:
            other = _take(labels, alive) != labels[pick]  # (R,) other categories
            weight = weight.masked_fill(other, 1)
        current = current * weight
        survives = current >= score_threshold  # the reference drops ``s < threshold``
        survives[best] = False  # the pick leaves the pool
        alive, current = alive.masked_select(survives), current.masked_select(survives)
    keep = torch.tensor(keep, dtype=torch.int64, device=scores.device)
    kept_scores = torch.tensor(kept_scores, dtype=work_dtype, device=scores.device)
    return keep, kept_scores.to(scores.dtype)


def _soft_nms_dense(boxes, scores, labels, alive, current, iou_threshold, sigma, score_threshold, method,
                    max_kept: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same loop with every decay weight computed up front, for up to DENSE_LIMIT boxes.

    The (R, R) weights ``decay(IoU)`` (1 across categories) are the numbers the
    row-by-row loop computes, element for element, so the picks and scores are
    identical; each step is then one multiply by a stored row, a picked box is
    marked ``-inf`` instead of being removed (argmax still takes the lowest index
    among equal maxima), and boxes below the threshold stay in place: scores only
    fall, so once the best left is below the threshold, all are, and the loop ends. Fewer, cheaper steps: what a detector's
    Soft-NMS needs to stay within milliseconds.
    """
    candidates = _take(boxes, alive)  # (R, 4)
    if labels is None:
        weights = _decay(pairwise_iou(candidates, candidates), iou_threshold, sigma, method)  # (R, R)
    else:  # only same-category pairs decay: compute those (R^2 / K of them), 1 elsewhere
        same = _take(labels, alive)
        rows, cols = torch.nonzero(same[:, None] == same[None, :], as_tuple=True)  # (P,) each
        iou = elementwise_box_iou(_take(candidates, rows), _take(candidates, cols))  # pairwise_iou's arithmetic
        decay = _decay(iou, iou_threshold, sigma, method)  # (P,)
        weights = torch.ones((len(alive), len(alive)), dtype=decay.dtype, device=decay.device)
        weights[rows, cols] = decay
    dead = torch.tensor(-math.inf, dtype=current.dtype)
    has_zero = bool((weights == 0).any())  # "hard" and "linear" at IoU 1
    keep, kept_scores = [], []
    limit = max_kept if max_kept > 0 else len(alive)
    while len(keep) < limit:
        top, where = current.max(dim=0)  # one op for both; the first maximum: lowest index among ties
        best, score = int(where), top.item()
        # Scores only decrease, so a box below the threshold never comes back: instead of
        # dropping each one, stop when the best left is below it (or picked: -inf).
        if not score >= score_threshold:
            break
        keep.append(best)
        kept_scores.append(score)
        current.mul_(weights[best])
        if has_zero:  # -inf (a past pick) x 0 is NaN, which argmax would take: back to -inf
            current.nan_to_num_(nan=-math.inf, neginf=-math.inf)
        current[best] = dead  # the pick leaves the pool
    keep = _take(alive, torch.tensor(keep, dtype=torch.int64, device=alive.device))
    kept_scores = torch.tensor(kept_scores, dtype=current.dtype, device=scores.device)
    return keep.to(scores.device), kept_scores.to(scores.dtype)


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
    _check_soft_nms_inputs(boxes, scores, None, iou_threshold, sigma, score_threshold, method, max_kept)
    return _soft_nms_loop(boxes, scores, None, iou_threshold, sigma, score_threshold, method, max_kept)


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "linear",
    max_kept: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS run independently per category, merged by rescored score.

    One loop over all categories in which a pick only decays boxes of its own
    category; this equals running :func:`soft_nms` per category and merging the
    outputs by decreasing rescored score, equal scores by increasing index (within
    one run, picks with equal scores already come by increasing index: the box with
    the lower index had that score first and ties go to the lower index).

    Args:
        boxes: (N, 4) xyxy boxes.
        scores: (N,) float scores, no NaN.
        idxs: (N,) integer category of each box.
        iou_threshold, sigma, score_threshold, method: as in :func:`soft_nms`.
        max_kept: > 0 stops after that many picks over all categories: the picks
            of the one loop are by non-increasing rescored score across categories,
            so these are exactly the first ``max_kept`` of the full result.

    Returns:
        ``(keep, rescored_scores)``, (K,) each, by non-increasing rescored score.
    """
    _check_soft_nms_inputs(boxes, scores, idxs, iou_threshold, sigma, score_threshold, method, max_kept)
    return _soft_nms_loop(boxes, scores, idxs, iou_threshold, sigma, score_threshold, method, max_kept)


# ---------------------------------------------------------------------------
# The plain loop: the definition, for teaching and as a test oracle
# ---------------------------------------------------------------------------

def _soft_nms_weight(iou: float, iou_threshold: float, sigma: float, method: str) -> float:
    """The factor a remaining score is multiplied by, [soft-nms] Eqs. (2)-(3)."""
    if method == "linear":
        return 1.0 - iou if iou > iou_threshold else 1.0
    if method == "gaussian":
        return math.exp(-iou * iou / sigma)
    return 0.0 if iou > iou_threshold else 1.0  # "hard": greedy NMS


def soft_nms_reference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "linear",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS as a plain loop over Python numbers, [soft-nms] Alg. 1.

    Same arguments, rules and result as :func:`soft_nms`, written as the
    algorithm reads::

        drop every box with s < score_threshold
        while boxes remain:
            pick the box with the largest current s (ties: the lowest index)
            output it with its current score and remove it
            for every remaining box i: s_i *= weight(IoU(pick, i))
            drop every box with s < score_threshold

    IoU is the continuous IoU of :func:`~fcos_from_scratch.ops.box_iou_reference`.
    The arithmetic is on Python floats (doubles), where :func:`soft_nms` works in
    the IoU's dtype: on float64 inputs the two agree to rounding, on float32 inputs
    to float32 rounding (and pick the same boxes unless two scores or an IoU and a
    threshold are within that rounding of each other).

    Args:
        boxes: (N, 4) xyxy boxes.
        scores: (N,) float scores, no NaN.
        iou_threshold: N_t in [0, 1], for "linear" and "hard".
        sigma: the Gaussian's sigma > 0 (weight ``exp(-IoU^2 / sigma)``).
        score_threshold: boxes whose score falls below it are dropped.
        method: "linear", "gaussian" or "hard".

    Returns:
        ``(keep, rescored_scores)``: (K,) int64 indices in pick order and (K,) their
        scores after decay, in the dtype of ``scores``.
    """
    from .boxes import _scalar_iou  # the one-pair IoU of box_iou_reference

    _check_soft_nms_inputs(boxes, scores, None, iou_threshold, sigma, score_threshold, method)
    rows = boxes.tolist()  # N lists [x1, y1, x2, y2]
    current = scores.tolist()  # N current scores s_i
    remaining = [i for i in range(len(rows)) if current[i] >= score_threshold]
    keep, kept_scores = [], []
    while remaining:
        pick = max(remaining, key=lambda i: (current[i], -i))  # ties: lowest index
        keep.append(pick)
        kept_scores.append(current[pick])
        remaining.remove(pick)
        for i in remaining:
            current[i] *= _soft_nms_weight(_scalar_iou(rows[pick], rows[i]),
                                           iou_threshold, sigma, method)
        remaining = [i for i in remaining if current[i] >= score_threshold]
    return (torch.tensor(keep, dtype=torch.int64, device=scores.device),
            torch.tensor(kept_scores, dtype=scores.dtype, device=scores.device))
