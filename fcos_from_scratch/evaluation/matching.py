"""COCO's greedy detection-to-ground-truth matching, for all groups at once.

pycocotools (``COCOeval.evaluateImg``) matches, for every image, category, area
range and IoU threshold, the detections in order of decreasing score:

    for each detection d (highest score first):
        among ground truths g still free (or crowd, which never fills up) with
        IoU(d, g) >= t, take the one with the largest IoU, preferring regular
        GT over ignored GT (crowd or outside the area range); on an IoU tie the
        one listed last wins.

The loop over detections is sequential by nature: a GT taken by detection 3 is
no longer free for detection 4. Everything else is not. So we loop over the
*rank* of a detection inside its (image, category) group -- at most
``maxDets = 100`` steps -- and at each step run the greedy choice for every
group, every area range A and every threshold T together, on flat arrays of
(detection, GT) pairs. Memory is linear in the number of pairs; no padding.
"""

from dataclasses import dataclass

import numpy as np


def crowd_iou(dt_boxes: np.ndarray, gt_boxes: np.ndarray, gt_iscrowd: np.ndarray) -> np.ndarray:
    """IoU in pycocotools' arithmetic, with crowd regions measured against the detection.

    ``IoU = inter / (area_d + area_g - inter)`` for a regular GT and
    ``inter / area_d`` for a crowd GT (a detection inside a crowd is not a false
    positive, however small it is). The operations are pycocotools' ``bbIou``
    in the same order, so the float64 results are bit-identical.

    Args:
        dt_boxes: (..., 4) float64, xywh detections.
        gt_boxes: (..., 4) float64, xywh ground truth, broadcastable with ``dt_boxes``.
        gt_iscrowd: (...) bool, broadcastable with the leading dimensions.

    Returns:
        (...) float64 IoU, 0 where the boxes do not overlap.
    """
    dx, dy, dw, dh = np.moveaxis(dt_boxes, -1, 0)
    gx, gy, gw, gh = np.moveaxis(gt_boxes, -1, 0)
    inter_w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    inter_h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    overlap = (inter_w > 0) & (inter_h > 0)
    inter = inter_w * inter_h
    dt_area = dw * dh
    union = np.where(gt_iscrowd, dt_area, dt_area + gw * gh - inter)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


@dataclass
class Pairs:
    """Every (detection, GT) pair of the same group, ordered by (det rank, group, GT).

    Attributes:
        det: (P,) detection index of each pair.
        gt: (P,) GT index of each pair.
        iou: (P,) float64 crowd-aware IoU.
        det_order: (Dm,) detections that have at least one GT, by (rank, group).
        seg_start: (Dm + 1,) first pair of each of those detections, then P.
        step_start: (S + 1,) first position in ``det_order`` of each rank, then Dm.
    """

    det: np.ndarray
    gt: np.ndarray
    iou: np.ndarray
    det_order: np.ndarray
    seg_start: np.ndarray
    step_start: np.ndarray


def make_pairs(det_group, det_rank, det_boxes, gt_group, gt_boxes, gt_iscrowd) -> Pairs:
    """Build the flat pair list; ``gt_group`` must be sorted (GT grouped, in json order)."""
    num_groups = int(max(det_group.max(initial=-1), gt_group.max(initial=-1))) + 1
    gt_count = np.bincount(gt_group, minlength=num_groups)  # (groups,)
    gt_start = np.cumsum(gt_count) - gt_count
    has_gt = np.flatnonzero(gt_count[det_group] > 0)
    det_order = has_gt[np.lexsort((det_group[has_gt], det_rank[has_gt]))]  # (Dm,)
    n_gt = gt_count[det_group[det_order]]  # (Dm,)
    seg_start = np.concatenate([[0], np.cumsum(n_gt)])  # (Dm + 1,)
    pair_det = np.repeat(det_order, n_gt)  # (P,)
    offset = np.arange(len(pair_det)) - np.repeat(seg_start[:-1], n_gt)
    pair_gt = np.repeat(gt_start[det_group[det_order]], n_gt) + offset  # (P,)
    iou = crowd_iou(det_boxes[pair_det], gt_boxes[pair_gt], gt_iscrowd[pair_gt])
    ranks = det_rank[det_order]
    steps = np.arange(int(ranks.max(initial=-1)) + 2)
    step_start = np.searchsorted(ranks, steps, side="left")
    return Pairs(pair_det, pair_gt, iou, det_order, seg_start, step_start)


def _preference_keys(pairs: Pairs, pair_ignore: np.ndarray) -> np.ndarray:
    """(P, A) int64 keys: within a detection, the largest key among candidates wins.

    The order is pycocotools' choice rule: regular GT before ignored GT, then
    larger IoU, then later position in the json (a tie goes to the last one).
    """
    num_pairs, num_areas = pair_ignore.shape
    segment = np.repeat(np.arange(len(pairs.det_order)), np.diff(pairs.seg_start))
    position = np.arange(num_pairs)
    keys = np.empty((num_pairs, num_areas), dtype=np.int64)
    for a in range(num_areas):
        order = np.lexsort((position, pairs.iou, ~pair_ignore[:, a], segment))
        keys[order, a] = position
    return keys


def greedy_match(pairs: Pairs, num_dets, gt_iscrowd, gt_ignore, iou_thresholds):
    """Run COCO's greedy matching for every group, area range and IoU threshold.

    Args:
        pairs: output of :func:`make_pairs`.
        num_dets: D, the number of (kept) detections.
        gt_iscrowd: (G,) bool.
        gt_ignore: (G, A) bool, crowd or area outside range ``a``.
        iou_thresholds: (T,) float64.

    Returns:
        matched: (D, A, T) bool, the detection took a GT.
        matched_ignored: (D, A, T) bool, ... and that GT is ignored.
    """
    num_areas, num_thr = gt_ignore.shape[1], len(iou_thresholds)
    thresholds = np.minimum(iou_thresholds, 1 - 1e-10)  # as pycocotools
    iou_ok = pairs.iou[:, None] >= thresholds[None, :]  # (P, T)
    pair_ignore = gt_ignore[pairs.gt]  # (P, A)
    keys = _preference_keys(pairs, pair_ignore)  # (P, A)
    taken = np.zeros((len(gt_iscrowd), num_areas, num_thr), dtype=bool)  # (G, A, T)
    matched = np.zeros((num_dets, num_areas, num_thr), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    for step in range(len(pairs.step_start) - 1):
        d0, d1 = pairs.step_start[step], pairs.step_start[step + 1]
        p0, p1 = pairs.seg_start[d0], pairs.seg_start[d1]
        gt = pairs.gt[p0:p1]  # (S,)
        free = ~taken[gt] | gt_iscrowd[gt][:, None, None]  # (S, A, T)
        candidate = free & iou_ok[p0:p1, None, :]  # (S, A, T)
        key = np.where(candidate, keys[p0:p1, :, None], -1)  # (S, A, T)
        local_start = pairs.seg_start[d0:d1] - p0  # (n,)
        best = np.maximum.reduceat(key, local_start, axis=0)  # (n, A, T)
        chosen = candidate & (key == np.repeat(best, np.diff(pairs.seg_start[d0:d1 + 1]), axis=0))
        rows, areas, thrs = np.nonzero(chosen)
        taken[gt[rows], areas, thrs] = True
        dets = pairs.det_order[d0:d1]
        matched[dets] = best >= 0
        chosen_ignored = chosen & pair_ignore[p0:p1, :, None]
        matched_ignored[dets] = np.logical_or.reduceat(chosen_ignored, local_start, axis=0)
    return matched, matched_ignored
