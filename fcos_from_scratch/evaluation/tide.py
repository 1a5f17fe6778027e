"""Where does the AP go? A TIDE-style error breakdown, for teaching.

Following TIDE [tide] Sec. 2, with foreground threshold ``t_f = 0.5`` and
background threshold ``t_b = 0.1``: detections (top ``max_dets`` per image by
score) are matched greedily per image and class at IoU >= t_f. Every unmatched
detection, with ``IoU_cls`` its best IoU with a GT of its own class and
``IoU_other`` with any other class, is, checking in this order (TIDE's):

* **Loc**   ``t_b <= IoU_cls <= t_f``: right class, box not good enough;
* **Cls**   ``IoU_other >= t_f``: good box, wrong class;
* **Dupl**  ``IoU_cls >= t_f`` with a GT already taken by a higher score;
* **Bkg**   ``IoU <= t_b`` with every GT: fired on background;
* **Both**  anything else (``t_b < IoU_other < t_f``): wrong class and box.

A GT nobody matched and no Cls/Loc error points at is **Miss**. Detections
inside a same-class crowd region (crowd IoU > t_f) are ignored.

For each type, ``delta_ap`` is how much AP at IoU = t_f (COCO's 101-point
interpolation, mean over classes with GT) rises when only that type is fixed:
a Cls/Loc detection becomes the true positive of its GT (if that GT is free and
it is the highest-scoring error pointing there; otherwise it is removed),
Dupl/Bkg/Both detections are removed, and a missed GT is taken out of the
count. Like TIDE, a negative change is reported as 0.

This is a teaching tool: it loops over images in Python (vectorised within
an image). The numbers follow TIDE's rules as written above; they are not
frozen against the TIDE package.

Papers:
    [tide] Bolya et al., "TIDE: A General Toolbox for Identifying Object
    Detection Errors", ECCV 2020.
"""

from dataclasses import dataclass, field

import numpy as np

from .coco import average_precision
from .matching import crowd_iou
from .parse import parse_coco_dets, parse_coco_gt

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupl", "Bkg", "Miss")
TP, IGNORED = "TP", "ignored"


@dataclass
class TideBreakdown:
    """Result of :func:`tide_errors`.

    Attributes:
        ap: AP at IoU = ``pos_threshold`` before any fix.
        counts: number of errors of each type (``ERROR_TYPES``).
        delta_ap: AP gained by fixing only that type.
        det_labels: (D,) str per detection: an error type, ``"TP"``, ``"ignored"``,
            or ``""`` for detections beyond ``max_dets``.
        missed: (G,) bool, the GT counted as Miss.
        pos_threshold: t_f, the IoU at which ``ap`` is measured.
    """

    ap: float
    counts: dict
    delta_ap: dict
    det_labels: np.ndarray
    missed: np.ndarray = field(repr=False)
    pos_threshold: float = 0.5


def _match_image(iou_cls: np.ndarray, pos_threshold: float):
    """Greedy per-image matching, highest score first. Returns (n,) matched GT or -1."""
    buffer = iou_cls.copy()  # (n, m); a taken GT's column is zeroed
    match = np.full(len(buffer), -1)
    for r in range(len(buffer)):
        j = int(np.argmax(buffer[r]))
        if buffer[r, j] >= pos_threshold:
            match[r] = j
            buffer[:, j] = 0.0
    return match


def _classify(r, iou, same, used, pos, bg):
    """TIDE's error type of the unmatched detection ``r`` and the GT it points at."""
    iou_cls, iou_other = iou[r] * same[r], iou[r] * ~same[r]
    j = int(np.argmax(iou_cls))
    if bg <= iou_cls[j] <= pos:
        return "Loc", j
    j = int(np.argmax(iou_other))
    if iou_other[j] >= pos:
        return "Cls", j
    if (iou_cls * used).max() >= pos:
        return "Dupl", -1
    if iou[r].max() <= bg:
        return "Bkg", -1
    return "Both", -1


def _analyse_image(gt, dets, d, g, crowd, pos, bg, labels, target):
    """Label the detections ``d`` (score order) of one image; returns the GT used flags."""
    used = np.zeros(len(g), dtype=bool)
    iou = crowd_iou(dets.boxes[d][:, None], gt.boxes[g][None], False)  # (n, m)
    same = dets.category[d][:, None] == gt.category[g][None]  # (n, m)
    match = _match_image(iou * same, pos) if len(g) else np.full(len(d), -1)
    used[match[match >= 0]] = True
    labels[d[match >= 0]] = TP
    in_crowd = np.zeros(len(d), dtype=bool)
    if len(crowd):
        crowd_ov = crowd_iou(dets.boxes[d][:, None], gt.boxes[crowd][None], True)
        in_crowd = ((crowd_ov > pos) & (dets.category[d][:, None] == gt.category[crowd][None])).any(1)
    for r in np.flatnonzero(match < 0):
        if in_crowd[r]:
            labels[d[r]] = IGNORED
        elif len(g) == 0:
            labels[d[r]] = "Bkg"
        else:
            labels[d[r]], j = _classify(r, iou, same, used, pos, bg)
            target[d[r]] = g[j] if j >= 0 else -1
    return used


def _best_fixable_error(labels, target, used, scores) -> np.ndarray:
    """(G,) per GT, the Cls/Loc error a fix would turn into its TP, or -1.

    Only a free GT can be fixed, and only once: by the highest-scoring error
    pointing at it (the first on a tie). Such a GT is not counted as Miss.
    """
    best_error = np.full(len(used), -1)
    fixable = np.flatnonzero(np.isin(labels, ("Cls", "Loc")) & (target >= 0))
    fixable = fixable[~used[target[fixable]]]
    fixable = fixable[np.argsort(-scores[fixable], kind="stable")]
    first_gt, first = np.unique(target[fixable], return_index=True)
    best_error[first_gt] = fixable[first]
    return best_error


def _mean_ap(category, scores, is_tp, num_gt) -> float:
    aps = [average_precision(scores[category == k], is_tp[category == k], int(num_gt[k]))
           for k in np.flatnonzero(num_gt > 0)]
    return float(np.mean(aps)) if aps else -1.0


def _fixed_ap(kind, gt, dets, labels, target, best_error, missed, num_gt) -> float:
    """AP with only the errors of type ``kind`` fixed."""
    counted = (labels != "") & (labels != IGNORED)
    is_tp = labels == TP
    category = dets.category.copy()
    num_gt = num_gt.copy()
    if kind == "Miss":
        np.subtract.at(num_gt, gt.category[missed], 1)
    elif kind in ("Cls", "Loc"):
        errors = labels == kind
        if not len(best_error):  # no ground truth at all: no Cls/Loc error can be fixed
            return _mean_ap(category[counted], dets.scores[counted], is_tp[counted], num_gt)
        fixed = errors & (best_error[np.maximum(target, 0)] == np.arange(len(labels)))
        is_tp = is_tp | fixed
        category[fixed] = gt.category[target[fixed]]
        counted &= ~(errors & ~fixed)
    else:
        counted &= labels != kind
    return _mean_ap(category[counted], dets.scores[counted], is_tp[counted], num_gt)


def tide_errors(coco_gt: dict, coco_dets: list, pos_threshold=0.5, bg_threshold=0.1,
                max_dets=100) -> TideBreakdown:
    """Classify every false positive and missed GT; the AP each type costs.

    Args:
        coco_gt, coco_dets: as for :func:`coco_eval`.
        pos_threshold: t_f, the foreground IoU threshold.
        bg_threshold: t_b, the background IoU threshold.
        max_dets: detections kept per image (highest scores).

    Returns:
        A :class:`TideBreakdown`.
    """
    if not 0.0 <= bg_threshold <= pos_threshold <= 1.0:
        raise ValueError(f"need 0 <= bg_threshold <= pos_threshold <= 1, got {bg_threshold}, {pos_threshold}")
    gt = parse_coco_gt(coco_gt)
    dets = parse_coco_dets(coco_dets, gt)
    labels = np.full(len(dets.scores), "", dtype=object)
    target = np.full(len(dets.scores), -1)
    used = np.zeros(len(gt.ids), dtype=bool)
    order = np.lexsort((-dets.scores, dets.image))
    image_start = np.searchsorted(dets.image[order], np.arange(len(gt.image_ids) + 1))
    for i in range(len(gt.image_ids)):
        d = order[image_start[i]:image_start[i + 1]][:max_dets]
        g = np.flatnonzero((gt.image == i) & ~gt.iscrowd)
        crowd = np.flatnonzero((gt.image == i) & gt.iscrowd)
        used[g] = _analyse_image(gt, dets, d, g, crowd, pos_threshold, bg_threshold, labels, target)
    best_error = _best_fixable_error(labels, target, used, dets.scores)
    missed = ~gt.iscrowd & ~used & (best_error < 0)
    num_gt = np.bincount(gt.category[~gt.iscrowd], minlength=len(gt.category_ids))
    counted = (labels != "") & (labels != IGNORED)
    ap = _mean_ap(dets.category[counted], dets.scores[counted], (labels == TP)[counted], num_gt)
    counts = {k: int(np.sum(labels == k)) for k in ERROR_TYPES if k != "Miss"}
    counts["Miss"] = int(missed.sum())
    delta = {k: max(_fixed_ap(k, gt, dets, labels, target, best_error, missed, num_gt) - ap, 0.0)
             for k in ERROR_TYPES}
    return TideBreakdown(ap, counts, delta, labels, missed, pos_threshold)
