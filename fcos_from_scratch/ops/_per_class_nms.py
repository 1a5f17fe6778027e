"""Greedy NMS for every category at once, on a padded (K, n, n) IoU tensor.

The fast path of :func:`~fcos_from_scratch.ops.batched_nms` when every category is
small (detectors: ~20-80 classes, a few hundred boxes each). Categories never
suppress each other, so each needs only its own IoU matrix: group the boxes by
category (by score inside each), pad every group to the largest one, and compute

1. one (K, n, n) IoU tensor, ``sum_k n_k² <= K·n²`` pairs instead of the N² of a
   global matrix (pads are all-zero boxes: IoU 0 with everything, and they come
   after the real boxes, so they never affect them);
2. ``S[k, i, j] = IoU > t and i < j`` ("earlier box i would suppress box j");
3. greedy NMS of all K groups at once, as the fixed point of
   ``keep <- (keep @ S == 0)`` started from "keep everything" -- the rule of
   ``nms._resolve_block``, batched: one (K, 1, n) x (K, n, n) product per step,
   (longest suppression chain + 1) steps, typically 2 to 6.

IoUs are computed with exactly the operations of ``box_iou`` in the same order,
element by element, so every comparison -- and the result -- is identical to the
block algorithm's.
"""

import torch

from .boxes import _safe_divide

# Most padded pairs (K * n * n) for the fast path: a 4 MiB bool (K, n, n) tensor
# and its 16 MiB float32 copy. Beyond it (one huge category, or plain nms) the
# block algorithm of nms.py is used, whose memory does not grow with N².
MAX_PADDED_PAIRS = 1 << 22
# IoUs are computed a few groups at a time, about this many pairs per chunk: each
# float32 temporary (1 MiB) stays in cache, which makes the element-wise passes
# about 3x faster than on the whole (K, n, n) tensor.
CHUNK_PAIRS = 1 << 18
# Leading rounds: the first LEAD unvisited boxes of every category are resolved
# and their kept boxes remove what they suppress, (K, LEAD, n) IoUs per round,
# while a round removes at least as many boxes as it visits (clustered boxes:
# most of them); the rest get the full (K, n, n) solve.
LEAD = 32


def _padded_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(K, m, 4) x (K, n, 4) prepared boxes → (K, m, n) IoU, bit-identical to ``box_iou``.

    The same operations as ``boxes._box_inter_union`` and ``_safe_divide``, in the
    same order; contiguous coordinate rows and in-place updates keep it fast.
    """
    x1, y1, x2, y2 = boxes1.permute(2, 0, 1).contiguous()[..., None].unbind(0)  # (K, m, 1)
    u1, v1, u2, v2 = boxes2.permute(2, 0, 1).contiguous()[:, :, None, :].unbind(0)  # (K, 1, n)
    area1, area2 = (x2 - x1) * (y2 - y1), (u2 - u1) * (v2 - v1)  # (K, m, 1), (K, 1, n)
    inter_w = torch.min(x2, u2).sub_(torch.max(x1, u1)).relu_()  # (K, m, n)
    inter_h = torch.min(y2, v2).sub_(torch.max(y1, v1)).relu_()  # (K, m, n)
    inter = inter_w.mul_(inter_h)  # (K, m, n)
    union = (area1 + area2).sub_(inter)  # (K, m, n), box_iou's order
    return _safe_divide(inter, union)


def _greedy_padded(boxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """(K, n, 4) padded boxes → (K, n) bool greedy keep, a cache-sized chunk of groups at a time.

    Pads must come after every real box of their row (they then never matter).
    """
    num_groups, longest, _ = boxes.shape
    earlier = torch.ones(longest, longest, dtype=torch.bool, device=boxes.device).triu_(1)
    step = max(1, CHUNK_PAIRS // (longest * longest))  # groups per chunk
    keep = []
    for start in range(0, num_groups, step):
        chunk = boxes[start : start + step]  # (step, n, 4)
        keep.append(_resolve_padded((_padded_iou(chunk, chunk) > threshold) & earlier))
    return torch.cat(keep)  # (K, n)


def _compact(boxes: torch.Tensor, position: torch.Tensor, alive: torch.Tensor):
    """Move each row's alive entries to its front, in order; drop all-dead columns.

    Args:
        boxes: (K, w, 4); position: (K, w) int64; alive: (K, w) bool.

    Returns:
        The same three, (K, w'), with pads (all-zero boxes, position -1) last.
    """
    width = int(alive.sum(dim=1).max()) if alive.numel() else 0
    index = torch.sort((~alive).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    alive = alive.gather(1, index)  # (K, w')
    boxes = boxes.gather(1, index[:, :, None].expand(-1, -1, 4)).masked_fill(~alive[:, :, None], 0)
    position = position.gather(1, index).masked_fill(~alive, -1)
    return boxes, position, alive


def _solve_groups(padded: torch.Tensor, valid: torch.Tensor, threshold: float) -> torch.Tensor:
    """(K, n, 4) padded groups, (K, n) real boxes → (K, n) bool greedy keep.

    Rounds of ``nms._greedy_blocks``, one block per group at once: the first
    ``LEAD`` unvisited boxes of every group are resolved among themselves, their
    kept boxes remove the later boxes they suppress, and the survivors are
    compacted, so each round compares a block only with boxes still alive. When
    few boxes are left, one full (K, w, w) solve finishes. Later boxes never
    affect earlier ones, so this is exact.
    """
    num_groups, longest = valid.shape
    kept = torch.zeros(num_groups * longest + 1, dtype=torch.bool, device=valid.device)  # +1: pads
    position = torch.arange(num_groups * longest, device=valid.device).view(num_groups, longest)
    boxes, position, alive = _compact(padded, position, valid)  # (K, w, ...)
    earlier = torch.ones(LEAD, LEAD, dtype=torch.bool, device=valid.device).triu_(1)
    while boxes.shape[1] > 2 * LEAD:
        block, rest = boxes[:, :LEAD], boxes[:, LEAD:]  # (K, LEAD, 4), (K, w - LEAD, 4)
        keep_block = _resolve_padded((_padded_iou(block, block) > threshold) & earlier)
        keep_block &= alive[:, :LEAD]  # (K, LEAD)
        kept[position[:, :LEAD].masked_select(keep_block)] = True
        suppressed = ((_padded_iou(block, rest) > threshold) & keep_block[:, :, None]).any(dim=1)
        boxes, position, alive = _compact(rest, position[:, LEAD:], alive[:, LEAD:] & ~suppressed)
    if boxes.shape[1] > 0:  # the few boxes left: one full solve
        keep_rest = _greedy_padded(boxes, threshold) & alive  # (K, w)
        kept[position.masked_select(keep_rest)] = True
    return kept[:-1].view(num_groups, longest)


def _resolve_padded(suppresses: torch.Tensor) -> torch.Tensor:
    """(K, n, n) strictly upper-triangular bool → (K, n) bool greedy keep, per group."""
    s = suppresses.to(torch.float32)  # counts below stay exact (n < 2**24)
    keep = torch.ones(s.shape[0], 1, s.shape[1], dtype=torch.float32, device=s.device)
    while True:
        # box j survives iff no kept earlier box of its group suppresses it
        new_keep = (torch.bmm(keep, s) == 0).to(torch.float32)  # (K, 1, n)
        if torch.equal(new_keep, keep):
            return keep[:, 0, :].bool()  # (K, n)
        keep = new_keep


def per_class_nms(boxes: torch.Tensor, labels: torch.Tensor, threshold: float):
    """Greedy NMS per label on boxes already in visiting (decreasing score) order.

    Args:
        boxes: (N, 4) prepared boxes (upcast, corners ordered), by decreasing score.
        labels: (N,) category of each box.
        threshold: suppress when IoU > threshold (a value of the IoU dtype).

    Returns:
        (K',) int64 kept positions (any order), or ``None`` when the padded
        tensor would exceed ``MAX_PADDED_PAIRS`` (the caller falls back).
    """
    by_label = torch.sort(labels, stable=True)  # stable: by score inside each label
    grouped = by_label.indices  # (N,) positions, grouped by label
    _, group_of, counts = torch.unique_consecutive(
        by_label.values, return_inverse=True, return_counts=True)  # (N,), (K,)
    num_groups, longest = counts.numel(), int(counts.max())
    if num_groups * longest * longest > MAX_PADDED_PAIRS:
        return None
    starts = torch.cumsum(counts, 0) - counts  # (K,)
    rank = torch.arange(grouped.numel(), device=boxes.device) - starts.index_select(0, group_of)
    slot = group_of * longest + rank  # (N,) flat index into the (K, n) padding
    padded = boxes.new_zeros(num_groups * longest, 4)
    padded.index_copy_(0, slot, boxes.index_select(0, grouped))
    padded = padded.view(num_groups, longest, 4)  # (K, n, 4)
    valid = torch.zeros(num_groups * longest, dtype=torch.bool, device=boxes.device)
    valid = valid.index_fill_(0, slot, True).view(num_groups, longest)  # (K, n) real boxes
    keep = _solve_groups(padded, valid, threshold).view(-1).index_select(0, slot)  # (N,)
    return grouped.masked_select(keep)
