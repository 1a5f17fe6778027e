"""Greedy non-maximum suppression (NMS), written with tensor ops.

A detector proposes many overlapping boxes for one object. Greedy NMS keeps the
highest-scoring box, throws away every box that overlaps it by more than a
threshold, and repeats with the best box left [rcnn, Sec. 2.1]::

    keep = []
    for box i in order of decreasing score:
        if no box j already in keep has IoU(j, i) > iou_threshold:
            keep.append(i)

:func:`nms_reference` is exactly that loop. :func:`nms` returns the same indices
without a Python step per box: it walks the sorted boxes in blocks of
``BLOCK_SIZE`` and, per block,

1. computes the block's (b, b) IoU matrix and the matrix ``S[i, j] = IoU > t and
   i < j`` ("earlier box i would suppress box j");
2. solves greedy NMS inside the block as a fixed point: box j is kept iff no kept
   box i < j has ``S[i, j]``. Starting from "keep everything" and iterating
   ``keep <- (keep @ S == 0)`` reaches the unique fixed point after at most
   (longest suppression chain + 1) steps, typically 2 to 6; the fixed point is the
   greedy answer because the value at j only depends on the values before j;
3. removes every later box that a kept box of the block suppresses.

Later boxes never influence earlier ones, so the blocks give the greedy answer
exactly. The work is about ``(#kept) x N`` IoUs, as in torchvision's C++ loop,
plus ``BLOCK_SIZE x N`` for the blocks; no tensor op holds more than
``MAX_PAIRS_PER_OP`` pairs (see there why).

Papers:
    [rcnn] Girshick et al., "Rich feature hierarchies for accurate object
    detection and semantic segmentation", CVPR 2014.
"""

import math

import torch

from ._checks import OpInputError, check_finite_boxes, upcast
from ._per_class_nms import per_class_nms
from .boxes import order_corners, pairwise_iou

# At most this many box pairs per tensor op: just under PyTorch's CPU grain size
# (32768 elements), below which an op runs on one thread. Splitting ops this small
# across threads costs more than it saves, and on a busy 2-core machine a thread
# hand-off can stall for a scheduler tick (milliseconds): we chunk instead.
MAX_PAIRS_PER_OP = 32000
# Boxes resolved together; BLOCK_SIZE**2 <= MAX_PAIRS_PER_OP. Larger blocks mean
# fewer Python steps but more IoUs with boxes an earlier kept box already removed.
BLOCK_SIZE = 176


def _check_tensor(name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise OpInputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype == torch.bool or value.is_complex():
        raise OpInputError(f"{name} must be a real-valued tensor, got dtype {value.dtype}")


def _check_nms_inputs(boxes, scores, iou_threshold) -> None:
    """torchvision's checks, with its wording, as :class:`OpInputError` (also a RuntimeError).

    Stricter than torchvision: NaN scores, a NaN threshold and NaN or inf box
    coordinates are errors (torchvision silently keeps such boxes).
    """
    _check_tensor("boxes", boxes)
    _check_tensor("scores", scores)
    if boxes.dim() != 2:
        raise OpInputError(f"boxes should be a 2d tensor, got {boxes.dim()}D: "
                           f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if boxes.shape[1] != 4:
        raise OpInputError(f"boxes should have 4 elements in dimension 1, got {boxes.shape[1]}: "
                           f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 1:
        raise OpInputError(f"scores should be a 1d tensor, got {scores.dim()}D: "
                           f"scores must have shape (N,), got {tuple(scores.shape)}")
    if scores.shape[0] != boxes.shape[0]:
        raise OpInputError(
            "boxes and scores should have same number of elements in dimension 0, got "
            f"{boxes.shape[0]} and {scores.shape[0]}: scores has {scores.shape[0]} entries "
            f"but boxes has {boxes.shape[0]}; they must have the same length")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise OpInputError("scores contains NaN; scores must not be NaN")
    if isinstance(iou_threshold, torch.Tensor) and iou_threshold.numel() == 1:
        iou_threshold = iou_threshold.item()
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise OpInputError(
            "Expected a value of type 'float' for argument 'iou_threshold' but instead found "
            f"type '{type(iou_threshold).__name__}': iou_threshold must be a real number, "
            f"got {iou_threshold!r}")
    if math.isnan(iou_threshold):
        raise OpInputError("iou_threshold must be a real number, got nan")
    check_finite_boxes("boxes", boxes)


def _check_idxs(idxs, num_boxes: int) -> None:
    """Category ids: any real dtype (torchvision accepts float ids too), no NaN."""
    _check_tensor("idxs", idxs)
    if idxs.dim() != 1 or idxs.shape[0] != num_boxes:
        raise OpInputError(
            f"The size of idxs must match the size of boxes at dimension 0: "
            f"idxs must have shape ({num_boxes},) like boxes, got {tuple(idxs.shape)}"
        )
    if idxs.is_floating_point() and bool(torch.isnan(idxs).any()):
        raise OpInputError("idxs contains NaN; category ids must be numbers")


def _prepared(boxes: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Boxes in visiting order, as ``box_iou`` reads them: upcast, corners ordered."""
    return order_corners(upcast(boxes.detach().index_select(0, order)))


def _sort_by_score(scores: torch.Tensor) -> torch.Tensor:
    """Indices in decreasing score order; tied scores keep increasing index order."""
    return torch.sort(scores, descending=True, stable=True).indices


def _threshold_in(dtype: torch.dtype, iou_threshold: float) -> float:
    """The largest number ``t`` of ``dtype`` with ``t <= iou_threshold``.

    For an IoU ``v`` of that dtype, ``v > t`` holds exactly when the real number
    ``v`` is larger than ``iou_threshold``, which is torchvision's comparison (its
    kernel promotes the float IoU to double). A plain ``iou > 0.3`` would round 0.3
    up to 0.300000012 in float32, and an IoU of exactly 3/10 (which is that float)
    would no longer count as larger than 0.3.
    """
    exact = torch.tensor(float(iou_threshold), dtype=torch.float64)
    rounded = exact.to(dtype)
    if rounded.double() > exact:
        rounded = torch.nextafter(rounded, torch.tensor(-math.inf, dtype=dtype))
    return rounded.item()


def _iou_dtype(boxes: torch.Tensor) -> torch.dtype:
    """The dtype ``box_iou`` returns: float16/bfloat16/integers give float32."""
    return torch.promote_types(boxes.dtype, torch.float32)


# ---------------------------------------------------------------------------
# The plain loop: the definition, for teaching and as the test oracle
# ---------------------------------------------------------------------------

def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as a plain loop over the boxes.

    Same arguments and result as :func:`nms`; a Python step per box, but
    obviously correct: compute which pairs overlap by more than the threshold,
    then walk the boxes by decreasing score. The comparison is made in float64,
    i.e. it is the exact comparison of the real numbers ``IoU > iou_threshold``.

    The loop is the textbook one ([rcnn] Sec. 2.1): take the best box not yet
    suppressed, keep it, and suppress every box whose IoU with it exceeds the
    threshold. Precomputing the (N, N) "overlaps" table does not change the
    answer; it only keeps the Python loop to one step per box.

    Args:
        boxes: (N, 4) xyxy boxes.
        scores: (N,) scores, no NaN; ties are visited in increasing index order.
        iou_threshold: suppress boxes with IoU > iou_threshold (strict).

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    num_boxes = boxes.shape[0]
    boxes = _prepared(boxes, torch.arange(num_boxes, device=boxes.device))
    rows = max(1, MAX_PAIRS_PER_OP // max(1, num_boxes))
    overlaps = [  # (N, N) bool: IoU(i, j) > iou_threshold, a few rows at a time
        pairwise_iou(boxes[start : start + rows], boxes).double() > float(iou_threshold)
        for start in range(0, num_boxes, rows)
    ]
    overlaps = torch.cat(overlaps) if overlaps else boxes.new_zeros(0, 0, dtype=torch.bool)
    suppressed = torch.zeros(num_boxes, dtype=torch.bool, device=boxes.device)
    keep = []
    for i in _sort_by_score(scores).tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


# ---------------------------------------------------------------------------
# Block-wise greedy NMS
# ---------------------------------------------------------------------------

def _resolve_block(suppresses: torch.Tensor) -> torch.Tensor:
    """Greedy NMS inside one block, as a fixed point.

    Args:
        suppresses: (b, b) bool, ``S[i, j]`` = box i (earlier) would suppress box j;
            strictly upper triangular.

    Returns:
        (b,) bool: which boxes of the block greedy NMS keeps.
    """
    s = suppresses.to(torch.float32)  # (b, b); counts below stay exact
    keep = torch.ones(s.shape[0], dtype=torch.float32, device=s.device)  # (b,)
    while True:
        # Box j survives iff no kept earlier box suppresses it.
        new_keep = (keep @ s == 0).to(torch.float32)  # (b,)
        if torch.equal(new_keep, keep):
            return keep.bool()
        keep = new_keep


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` along dim 0.

    ``index_select`` rather than ``values[index]``: PyTorch's advanced-indexing
    kernel already splits a copy of a few thousand elements across threads, and
    the hand-off costs more than the copy (milliseconds on a busy 2-core machine).
    """
    return values.index_select(0, index)


def _same_label(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    return labels_a[:, None] == labels_b[None, :]  # (a, b)


def _suppressed(boxes, threshold, kept, tail, labels=None) -> torch.Tensor:
    """(T,) bool: which ``tail`` positions some ``kept`` position suppresses.

    Without ``labels``: all (kept, tail) pairs, a chunk of tail columns at a time.
    With ``labels`` (only same-label pairs count): both sides are sorted by label
    and cut into runs of whole labels with at most ``MAX_PAIRS_PER_OP`` pairs
    each, so that pairs of different labels are mostly never computed.
    """
    if labels is None:
        return _suppressed_chunks(boxes, threshold, kept, tail)
    kept_labels, by_label = torch.sort(_take(labels, kept), stable=True)  # (k,)
    kept = _take(kept, by_label)
    tail_labels, by_label = torch.sort(_take(labels, tail), stable=True)  # (T,)
    groups, counts = torch.unique_consecutive(kept_labels, return_counts=True)
    tail_starts = torch.searchsorted(tail_labels, groups).tolist()
    tail_ends = torch.searchsorted(tail_labels, groups, right=True).tolist()
    kept_ends = torch.cumsum(counts, dim=0).tolist()
    kept_starts = [0] + kept_ends[:-1]
    suppressed = torch.zeros(tail.numel(), dtype=torch.bool, device=tail.device)  # by label
    first = 0  # first label of the current run of labels
    for last in range(len(kept_ends)):
        if last + 1 < len(kept_ends):  # would the run still fit with one more label?
            pairs = ((kept_ends[last + 1] - kept_starts[first])
                     * (tail_ends[last + 1] - tail_starts[first]))
            if pairs <= MAX_PAIRS_PER_OP:
                continue
        k0, k1, t0, t1 = kept_starts[first], kept_ends[last], tail_starts[first], tail_ends[last]
        if t1 > t0:
            suppressed[t0:t1] = _suppressed_chunks(
                boxes, threshold, kept[k0:k1], _take(tail, by_label[t0:t1]),
                kept_labels[k0:k1], tail_labels[t0:t1])
        first = last + 1
    return torch.zeros_like(suppressed).index_copy_(0, by_label, suppressed)


def _suppressed_chunks(boxes, threshold, kept, tail, kept_labels=None, tail_labels=None):
    """:func:`_suppressed` over all pairs, masked by label when labels are given."""
    kept_boxes = _take(boxes, kept)  # (k, 4)
    chunk = max(1, MAX_PAIRS_PER_OP // kept.numel())
    suppressed = []
    for start in range(0, tail.numel(), chunk):
        part = tail[start : start + chunk]  # (t,)
        overlap = pairwise_iou(kept_boxes, _take(boxes, part)) > threshold  # (k, t)
        if kept_labels is not None:
            overlap &= _same_label(kept_labels, tail_labels[start : start + chunk])
        suppressed.append(overlap.any(dim=0))
    return torch.cat(suppressed)


def _greedy_blocks(boxes, threshold, remaining, labels=None, segment_end=None, until_dense=False):
    """Block-wise greedy NMS over ``remaining``, positions in visiting order.

    Args:
        boxes: (N, 4) xyxy boxes, indexed by position.
        threshold: suppress when IoU > threshold (a value of the IoU dtype).
        remaining: (R,) int64 increasing positions still to visit.
        labels: optional (N,) category per position; boxes only suppress boxes
            with the same label.
        segment_end: optional (N,) int64, used instead of ``labels`` when every
            category is a run of consecutive positions: the end (exclusive) of the
            run. Then only the block's last run can go on past the block.
        until_dense: stop (and return what is left) after a block whose kept
            boxes remove fewer later boxes than the block holds.

    Returns:
        ``(kept, remaining)``: increasing positions kept, and those not visited.
    """
    kept = []
    rank = torch.arange(BLOCK_SIZE, device=boxes.device)
    earlier = rank[:, None] < rank[None, :]  # (B, B) i before j (triu() would be
    while remaining.numel() > 0:  # multi-threaded even for a small matrix)
        block = remaining[:BLOCK_SIZE]  # (b,)
        b = block.numel()
        block_boxes = _take(boxes, block)  # (b, 4)
        suppresses = (pairwise_iou(block_boxes, block_boxes) > threshold) & earlier[:b, :b]
        tail_end = remaining.numel()
        group = labels if segment_end is None else segment_end
        if group is not None:
            block_group = _take(group, block)  # (b,)
            suppresses &= _same_label(block_group, block_group)
        if segment_end is not None:  # only the block's last run goes on past it
            last_end = segment_end[block[-1]]
            tail_end = int(torch.searchsorted(remaining, last_end.view(1)))
        kept_block = block.masked_select(_resolve_block(suppresses))  # (k,)
        kept.append(kept_block)
        tail = remaining[b:tail_end]  # (T,) boxes the block may suppress
        if segment_end is not None:
            kept_block = kept_block.masked_select(_take(segment_end, kept_block) == last_end)
        survivors = tail
        if tail.numel() > 0 and kept_block.numel() > 0:
            suppressed = _suppressed(boxes, threshold, kept_block, tail, labels)  # (T,)
            survivors = tail.masked_select(~suppressed)
        remaining = torch.cat([survivors, remaining[tail_end:]])
        if until_dense and tail.numel() - survivors.numel() < b:
            break
    return (torch.cat(kept) if kept else remaining[:0]), remaining


def _run_ends(runs: torch.Tensor) -> torch.Tensor:
    """For a non-decreasing (R,) tensor, the end (exclusive) of each value's run."""
    _, run_of, counts = torch.unique_consecutive(runs, return_inverse=True, return_counts=True)
    return _take(torch.cumsum(counts, dim=0), run_of)  # (R,)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, equal to ``torchvision.ops.nms``.

    Visits the boxes by decreasing score and keeps a box unless a box kept before
    it has ``IoU > iou_threshold`` with it (strict: an IoU equal to the threshold
    does not suppress). IoU is :func:`~fcos_from_scratch.ops.box_iou` (continuous
    coordinates, 0 where the union is 0) and the comparison is the exact real
    comparison, as torchvision's kernel does in double precision.

    Tied scores are visited in increasing index order (a stable sort), which is
    what torchvision's CPU kernel does in practice.

    Args:
        boxes: (N, 4) xyxy boxes, any real dtype (float16/bfloat16 and integers
            are compared in float32, like ``box_iou``), finite; a box with
            ``x2 < x1`` is read as an empty box (it suppresses nothing and is
            suppressed by nothing).
        scores: (N,) scores, no NaN.
        iou_threshold: discard boxes with IoU > iou_threshold with a kept box.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.

    Raises:
        ValueError: bad shapes or types (also a ``RuntimeError``, as torchvision's,
            with its wording), NaN scores or threshold, NaN or inf coordinates.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    order = _sort_by_score(scores.detach())  # (N,)
    threshold = _threshold_in(_iou_dtype(boxes), float(iou_threshold))
    remaining = torch.arange(boxes.shape[0], device=boxes.device)  # (N,)
    kept, _ = _greedy_blocks(_prepared(boxes, order), threshold, remaining)  # (K,)
    return _take(order, kept)


def _batched_greedy(boxes_sorted, labels, threshold) -> torch.Tensor:
    """Kept positions of per-category greedy NMS (see :func:`batched_nms`)."""
    kept = per_class_nms(boxes_sorted, labels, threshold)
    if kept is not None:  # every category small enough to pad: all at once
        return kept
    remaining = torch.arange(boxes_sorted.shape[0], device=boxes_sorted.device)  # (N,)
    kept, remaining = _greedy_blocks(
        boxes_sorted, threshold, remaining, labels=labels, until_dense=True
    )
    if remaining.numel() > 0:  # regroup by category, by score within each
        by_label = torch.sort(_take(labels, remaining), stable=True)
        grouped = _take(remaining, by_label.indices)  # (R,)
        local = torch.arange(grouped.numel(), device=boxes_sorted.device)
        kept_grouped, _ = _greedy_blocks(
            _take(boxes_sorted, grouped), threshold, local, segment_end=_run_ends(by_label.values)
        )
        kept = torch.cat([kept, _take(grouped, kept_grouped)])
    return kept


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS run independently per category, equal to ``torchvision.ops.batched_nms``.

    Boxes with different ``idxs`` never suppress each other. The result equals
    running :func:`nms` on each category and merging the kept boxes by score.

    How: when ``#categories x (largest category)²`` is small enough, every
    category is solved at once on padded per-category IoU tensors
    (``ops/_per_class_nms.py``). Otherwise: the blocks of :func:`nms`, where a box
    only suppresses boxes of its own category (a mask inside a block; later boxes
    are compared category by category, so pairs of different categories are
    mostly never computed). The blocks first follow decreasing score over all
    categories, which is fast when kept boxes remove many later boxes; once a
    block removes fewer boxes than it holds, the rest is regrouped by category
    (each category a run of consecutive positions).
    Any order that visits each category by decreasing score gives the same
    per-category greedy result.

    The textbook way, and torchvision's below 1000 boxes, is the "coordinate
    offset trick": shift each category's boxes by ``idx * (max coordinate + 1)``
    so that categories cannot overlap, then run one NMS. We do not use it: the
    shifted coordinates are rounded (0.3 + 2048 is not exact in float32), which
    moves IoUs near the threshold, and the shift does not separate categories
    whose boxes have negative coordinates. Masking by category is exact.

    Args:
        boxes: (N, 4) xyxy boxes, as in :func:`nms`.
        scores: (N,) scores, no NaN.
        idxs: (N,) category of each box (integers; float ids are compared as
            numbers, as torchvision accepts them).
        iou_threshold: discard boxes with IoU > iou_threshold with a kept box of
            the same category.

    Returns:
        (K,) int64 indices of the kept boxes by decreasing score; tied scores in
        increasing index order. Empty ``boxes`` (any shape, ``numel() == 0``) give
        an empty result before any other argument is looked at, as torchvision
        (``batched_nms(torch.empty(0), None, None, None)`` is valid there).

    Raises:
        ValueError: as :func:`nms` (also a ``RuntimeError``), and for ``idxs``
            of the wrong shape or with NaN.
    """
    if isinstance(boxes, torch.Tensor) and boxes.numel() == 0:  # torchvision checks this first
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    _check_nms_inputs(boxes, scores, iou_threshold)
    _check_idxs(idxs, boxes.shape[0])
    order = _sort_by_score(scores.detach())  # (N,)
    boxes_sorted, labels = _prepared(boxes, order), _take(idxs, order)  # (N, 4), (N,)
    threshold = _threshold_in(_iou_dtype(boxes), float(iou_threshold))
    kept = _batched_greedy(boxes_sorted, labels, threshold)  # (K,) positions
    kept = torch.sort(_take(order, kept)).values  # by index, so that ties stay in that order
    return _take(kept, _sort_by_score(_take(scores.detach(), kept)))


def batched_nms_reference(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Per-category NMS as a plain loop over categories, for lessons and tests.

    Runs :func:`nms_reference` on the boxes of each category separately and merges
    the kept boxes by decreasing score (tied scores: increasing index), which is
    the definition :func:`batched_nms` implements without the loop.

    Args:
        boxes: (N, 4) xyxy boxes.
        scores: (N,) scores, no NaN.
        idxs: (N,) integer category of each box.
        iou_threshold: suppress boxes with IoU > iou_threshold within a category.

    Returns:
        (K,) int64 indices of the kept boxes by decreasing score.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    _check_idxs(idxs, boxes.shape[0])
    kept = []
    for category in idxs.unique().tolist():
        members = torch.nonzero(idxs == category).flatten()  # (n_c,) increasing
        kept_in_category = nms_reference(boxes[members], scores[members], iou_threshold)
        kept.extend(members[kept_in_category].tolist())  # back to indices into boxes
    kept = torch.tensor(sorted(kept), dtype=torch.int64, device=boxes.device)  # by index
    return kept[_sort_by_score(scores.detach()[kept])]  # stable: ties stay by index
