"""COCO box mAP with pycocotools' exact semantics, on whole arrays.

What ``COCOeval(iouType="bbox")`` computes, step by step ([coco] Sec. "Detection
Evaluation", and pycocotools' ``cocoeval.py``):

1. Per (image, category) the detections are stably sorted by score and cut to
   ``maxDets[-1] = 100``.
2. A ground truth is *ignored* in area range ``[lo, hi]`` if it is a crowd
   region or its json ``area`` is outside the range (bounds inclusive).
   Detections are matched greedily (:mod:`.matching`); a detection matched to an
   ignored GT, or unmatched with ``w * h`` outside the range, is ignored.
3. Per category, area range, ``maxDets`` in (1, 10, 100) and IoU threshold
   t in .50:.05:.95, the detections of all images are stably sorted by score;
   cumulative TP/FP give recall ``r = TP / n_gt`` and precision
   ``p = TP / (TP + FP + eps)``. The precision envelope
   ``p_interp(r) = max_{r' >= r} p(r')`` is sampled at 101 recall points
   ``0:.01:1`` (0 beyond the largest recall reached).
4. AP is the mean of those samples over recall points, thresholds and categories
   that have at least one non-ignored GT; absent settings are -1.

Papers:
    [coco] Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014.
"""

from dataclasses import dataclass

import numpy as np

from .matching import greedy_match, make_pairs
from .parse import CocoDetections, CocoGroundTruth, parse_coco_dets, parse_coco_gt

# pycocotools' Params.setDetParams; linspace, not arange, so that 0.6 is 0.6000000000000001
# exactly as there.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2),
               "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}

# (key, is_ap, iou threshold or None for the mean over all, area label, maxDets)
STAT_DEFINITIONS = (
    ("AP", True, None, "all", 100), ("AP50", True, 0.5, "all", 100),
    ("AP75", True, 0.75, "all", 100), ("APs", True, None, "small", 100),
    ("APm", True, None, "medium", 100), ("APl", True, None, "large", 100),
    ("AR1", False, None, "all", 1), ("AR10", False, None, "all", 10),
    ("AR100", False, None, "all", 100), ("ARs", False, None, "small", 100),
    ("ARm", False, None, "medium", 100), ("ARl", False, None, "large", 100),
)
STAT_KEYS = tuple(s[0] for s in STAT_DEFINITIONS)


@dataclass
class CocoEvaluation:
    """Everything ``COCOeval.accumulate`` and ``summarize`` produce.

    Attributes:
        precision: (T, R, K, A, M) float64 interpolated precision, -1 where absent.
        recall: (T, K, A, M) float64 final recall, -1 where absent.
        stats: the 12 summary numbers by key (``STAT_KEYS``).
        per_class: category id -> AP (IoU .50:.95, area all, 100 dets), -1 if no GT.
        category_ids: (K,) int64 category ids, sorted.
        category_names: K names.
    """

    precision: np.ndarray
    recall: np.ndarray
    stats: dict
    per_class: dict
    category_ids: np.ndarray
    category_names: list


def _outside_area_ranges(area: np.ndarray) -> np.ndarray:
    """(N, A) bool: ``area`` outside each range of ``AREA_RANGES`` (bounds inclusive)."""
    lo, hi = np.array(list(AREA_RANGES.values())).T  # (A,), (A,)
    return (area[:, None] < lo) | (area[:, None] > hi)  # (N, A)


def _gt_ignore(gt: CocoGroundTruth) -> np.ndarray:
    """(G, A) bool: crowd, or json ``area`` outside the range."""
    return _outside_area_ranges(gt.area) | gt.iscrowd[:, None]


def _match(gt: CocoGroundTruth, dets: CocoDetections, gt_ignore: np.ndarray):
    """Sort and cut the detections per (image, category), then match them.

    Returns:
        order: (D',) indices of the kept detections (at most 100 per group).
        rank: (D',) int, rank of each inside its (image, category) group.
        tp: (D', A, T) bool, matched a non-ignored GT.
        fp: (D', A, T) bool, unmatched and inside the area range (pycocotools
            ignores an unmatched detection outside the range).
    """
    num_cats = len(gt.category_ids)
    det_group = dets.image * num_cats + dets.category  # (D,)
    order = np.lexsort((-dets.scores, det_group))  # stable: ties keep json order
    group_sorted = det_group[order]
    rank = np.arange(len(order)) - np.searchsorted(group_sorted, group_sorted)
    kept = rank < MAX_DETS[-1]
    order, rank = order[kept], rank[kept]  # (D',)
    gt_group = gt.image * num_cats + gt.category
    gt_order = np.argsort(gt_group, kind="stable")
    pairs = make_pairs(det_group[order], rank, dets.boxes[order],
                       gt_group[gt_order], gt.boxes[gt_order], gt.iscrowd[gt_order])
    matched, matched_ignored = greedy_match(
        pairs, len(order), gt.iscrowd[gt_order], gt_ignore[gt_order], IOU_THRESHOLDS)
    outside = _outside_area_ranges(dets.area[order])  # (D', A)
    tp = matched & ~matched_ignored  # (D', A, T)
    fp = ~matched & ~outside[:, :, None]  # (D', A, T)
    return order, rank, tp, fp


def _first_count_reaching(num_gt: np.ndarray) -> np.ndarray:
    """(rows, R) smallest integer TP count c with ``c / num_gt >= recall threshold``.

    With the same float division as pycocotools' ``rc = tp / npig``, its
    ``searchsorted(rc, recThrs, side="left")`` becomes "the c-th true positive".
    """
    num_gt = num_gt[:, None]  # (rows, 1)
    count = np.ceil(RECALL_THRESHOLDS * num_gt).astype(np.int64)  # (rows, R)
    for _ in range(2):  # float rounding can put ceil off by one either way
        count = np.where((count > 0) & ((count - 1) / num_gt >= RECALL_THRESHOLDS), count - 1, count)
        count = np.where(count / num_gt < RECALL_THRESHOLDS, count + 1, count)
    return count


def _precision_recall(tp: np.ndarray, fp: np.ndarray, num_gt: np.ndarray):
    """Interpolated precision at the 101 recall points, and final recall, for many rows.

    Precision only rises at a true positive, so the envelope
    ``max_{r' >= r} p(r')`` is the maximum over the true positives from there
    on, and the first point with recall >= r is the c(r)-th true positive
    (:func:`_first_count_reaching`). Only the TP positions are visited.

    Args:
        tp, fp: (n, rows) bool, detections in score order (a detection that is
            neither -- ignored, or beyond maxDets -- changes nothing).
        num_gt: (rows,) int > 0, non-ignored GT per row.

    Returns:
        precision: (rows, R) float64; recall: (rows,) float64.
    """
    rows = tp.shape[1]
    fp_count = np.cumsum(fp, axis=0, dtype=np.int64)  # (n, rows)
    row, pos = np.nonzero(tp.T)  # (P,) each true positive, by row then score order
    num_tp = np.bincount(row, minlength=rows)  # (rows,)
    nth = np.arange(len(row)) - np.repeat(np.cumsum(num_tp) - num_tp, num_tp) + 1  # c of each TP
    tp_sum, fp_sum = nth.astype(np.float64), fp_count[pos, row].astype(np.float64)
    width = max(int(num_tp.max(initial=0)), 1)
    envelope = np.zeros((rows, width))  # (rows, max TP); zero padding leaves suffix maxima alone
    envelope[row, nth - 1] = tp_sum / (fp_sum + tp_sum + np.spacing(1))  # pycocotools' arithmetic
    envelope = np.maximum.accumulate(envelope[:, ::-1], axis=1)[:, ::-1]
    need = np.maximum(_first_count_reaching(num_gt), 1)  # (rows, R); recall 0 reads the 1st TP
    sampled = np.take_along_axis(envelope, np.minimum(need, width) - 1, axis=1)
    return np.where(need <= num_tp[:, None], sampled, 0.0), num_tp / num_gt


def average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point interpolated AP of one class at one IoU threshold.

    Args:
        scores: (n,) float detection scores (any order; stably sorted here).
        is_tp: (n,) bool, the detection is a true positive (others are false positives).
        num_gt: number of GT of the class (> 0).
    """
    if num_gt <= 0:
        raise ValueError(f"num_gt must be > 0, got {num_gt}")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(is_tp, dtype=bool)[order][:, None]  # (n, 1)
    precision, _ = _precision_recall(tp, ~tp, np.array([num_gt]))
    return float(np.mean(precision))


def _accumulate(gt: CocoGroundTruth, dets: CocoDetections, gt_ignore, order, rank, tp, fp):
    """Fill pycocotools' (T, R, K, A, M) precision and (T, K, A, M) recall arrays."""
    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_areas, num_max, num_cats = len(AREA_RANGES), len(MAX_DETS), len(gt.category_ids)
    precision = -np.ones((num_thr, num_rec, num_cats, num_areas, num_max))
    recall = -np.ones((num_thr, num_cats, num_areas, num_max))
    num_gt = np.stack([np.bincount(gt.category[~gt_ignore[:, a]], minlength=num_cats)
                       for a in range(num_areas)], axis=1)  # (K, A)
    category, scores, image = dets.category[order], dets.scores[order], dets.image[order]
    by_score = np.lexsort((rank, image, -scores, category))  # pycocotools' concat + mergesort
    category, rank, tp, fp = category[by_score], rank[by_score], tp[by_score], fp[by_score]
    cat_start = np.searchsorted(category, np.arange(num_cats + 1))
    within = rank[:, None] < np.array(MAX_DETS)[None, :]  # (D', M)
    for k in range(num_cats):
        rows_gt = np.repeat(num_gt[k], num_max * num_thr)  # (A*M*T,), rows in (a, m, t) order
        present = rows_gt > 0  # rows without GT stay -1
        if not present.any():
            continue
        sl = slice(cat_start[k], cat_start[k + 1])
        keep = within[sl][:, None, :, None]  # (n, 1, M, 1): beyond maxDets[m] never counts
        tp_rows = (tp[sl][:, :, None, :] & keep).reshape(-1, len(rows_gt))  # (n, A*M*T)
        fp_rows = (fp[sl][:, :, None, :] & keep).reshape(-1, len(rows_gt))
        prec, rec = _precision_recall(tp_rows[:, present], fp_rows[:, present], rows_gt[present])
        full_prec, full_rec = -np.ones((len(rows_gt), num_rec)), -np.ones(len(rows_gt))
        full_prec[present], full_rec[present] = prec, rec
        precision[:, :, k] = full_prec.reshape(num_areas, num_max, num_thr, num_rec).transpose(2, 3, 0, 1)
        recall[:, k] = full_rec.reshape(num_areas, num_max, num_thr).transpose(2, 0, 1)
    return precision, recall


def _mean_present(values: np.ndarray) -> float:
    present = values[values > -1]
    return float(np.mean(present)) if present.size else -1.0


def summarize(precision: np.ndarray, recall: np.ndarray) -> dict:
    """The 12 numbers of ``COCOeval.summarize`` from the accumulated arrays."""
    area_labels = list(AREA_RANGES)
    stats = {}
    for key, is_ap, iou_thr, area, max_det in STAT_DEFINITIONS:
        a, m = area_labels.index(area), MAX_DETS.index(max_det)
        values = precision[..., a, m] if is_ap else recall[..., a, m]
        if iou_thr is not None:
            values = values[np.flatnonzero(IOU_THRESHOLDS == iou_thr)]
        stats[key] = _mean_present(values)
    return stats


def evaluate_coco(coco_gt: dict, coco_dets: list) -> CocoEvaluation:
    """Full COCO box evaluation; see :func:`coco_eval` for the arguments."""
    gt = parse_coco_gt(coco_gt)
    dets = parse_coco_dets(coco_dets, gt)
    gt_ignore = _gt_ignore(gt)
    order, rank, tp, fp = _match(gt, dets, gt_ignore)
    precision, recall = _accumulate(gt, dets, gt_ignore, order, rank, tp, fp)
    per_class = {int(cid): _mean_present(precision[:, :, k, 0, -1])
                 for k, cid in enumerate(gt.category_ids)}
    return CocoEvaluation(precision, recall, summarize(precision, recall), per_class,
                          gt.category_ids, gt.category_names)


def coco_eval(coco_gt: dict, coco_dets: list) -> dict:
    """COCO box AP/AR, equal to pycocotools' ``COCOeval(gt, dt, "bbox")``.

    Args:
        coco_gt: COCO ground-truth dict (``images``, ``annotations`` with xywh
            ``bbox``, ``area``, ``iscrowd``; ``categories``).
        coco_dets: COCO results list: dicts with ``image_id``, ``category_id``,
            ``bbox`` (xywh pixels) and ``score``. May be empty.

    Returns:
        dict with the 12 floats ``AP, AP50, AP75, APs, APm, APl, AR1, AR10,
        AR100, ARs, ARm, ARl`` (-1 where no GT makes a number meaningful, as
        pycocotools) and ``per_class``: {category_id: AP} (-1 for a category
        without GT).

    Raises:
        ValueError: malformed input, naming the entry and field.
    """
    result = evaluate_coco(coco_gt, coco_dets)
    return {**result.stats, "per_class": result.per_class}
