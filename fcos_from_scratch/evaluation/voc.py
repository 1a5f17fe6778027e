"""PASCAL VOC mAP with the devkit's rules, on whole arrays.

The devkit ([voc] Sec. 4.4; the reference ``VOCevaldet.m`` and its Python port
``voc_eval.py``), per class:

1. all detections of the class, over all images, sorted by score (stable);
2. each one is compared with the GT of its image of the highest IoU (first one
   on a tie; difficult and already-matched GT included);
3. ``IoU > threshold`` (strict) with a difficult GT: ignored (neither TP nor FP);
   with a free GT: TP, and the GT is taken; with a taken GT: FP (duplicate);
   ``IoU <= threshold``: FP;
4. ``recall = TP / n_pos`` with ``n_pos`` the non-difficult GT,
   ``precision = TP / max(TP + FP, eps)``;
5. AP = 11-point ``sum_{t in 0:.1:1} max_{r >= t} p(r) / 11`` (VOC2007) or the
   area under the precision envelope (VOC2010+).

Step 2 does not depend on which GT are taken, so it is computed for all
detections at once; step 3 then reduces to "the first detection, in score order,
whose best GT is g takes g", which is ``np.unique(..., return_index=True)``.

``legacy_pixel=True`` uses the devkit's inclusive-pixel widths ``x2 - x1 + 1``
(its published numbers need it); the default is the library's continuous
convention ``x2 - x1``. Classes without a non-difficult GT are left out of the
mean (the devkit would divide by zero).

Papers:
    [voc] Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010.
"""

import numpy as np

from .inputs import check_per_image

VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)  # as voc_eval.py: 0.30000000000000004 included


def voc_pair_iou(dt: np.ndarray, gt: np.ndarray, legacy_pixel: bool) -> np.ndarray:
    """IoU of paired xyxy boxes in the devkit's arithmetic.

    Args:
        dt, gt: (P, 4) float64 xyxy boxes.
        legacy_pixel: add the devkit's ``+ 1`` to every width and height.

    Returns:
        (P,) float64, 0 where the union is 0 (continuous mode, degenerate boxes).
    """
    one = 1.0 if legacy_pixel else 0.0
    iw = np.maximum(np.minimum(gt[:, 2], dt[:, 2]) - np.maximum(gt[:, 0], dt[:, 0]) + one, 0.0)
    ih = np.maximum(np.minimum(gt[:, 3], dt[:, 3]) - np.maximum(gt[:, 1], dt[:, 1]) + one, 0.0)
    inter = iw * ih
    union = ((dt[:, 2] - dt[:, 0] + one) * (dt[:, 3] - dt[:, 1] + one)
             + (gt[:, 2] - gt[:, 0] + one) * (gt[:, 3] - gt[:, 1] + one) - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a recall/precision curve, as the devkit's ``voc_ap``.

    Args:
        recall, precision: (n,) float64, detections in score order.
        use_07_metric: 11-point interpolation (VOC2007) instead of the area.
    """
    if use_07_metric:
        # max_{r >= t} p(r) is the suffix maximum at the first index with r >= t.
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        first = np.searchsorted(recall, VOC07_RECALL_POINTS, side="left")
        ap = 0.0
        for t in range(len(VOC07_RECALL_POINTS)):  # summed in the devkit's order
            p = envelope[first[t]] if first[t] < len(recall) else 0.0
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _concat(items: list, key: str, empty_shape) -> np.ndarray:
    """``items[i][key]`` for all images, concatenated (an empty list gives ``empty_shape``)."""
    return np.concatenate([item[key] for item in items] + [np.zeros(empty_shape)])


def _flatten(targets: list, preds: list):
    """Concatenate per-image dicts into flat arrays, each row with its image index."""
    def image_index(items):
        return _concat([{"i": np.full(len(x["labels"]), i)} for i, x in enumerate(items)], "i", 0).astype(np.int64)

    gt = dict(image=image_index(targets), boxes=_concat(targets, "boxes", (0, 4)),
              labels=_concat(targets, "labels", 0).astype(np.int64),
              difficult=_concat(targets, "difficult", 0).astype(bool))
    dt = dict(image=image_index(preds), boxes=_concat(preds, "boxes", (0, 4)),
              labels=_concat(preds, "labels", 0).astype(np.int64), scores=_concat(preds, "scores", 0))
    return gt, dt


def _best_gt(gt, dt, legacy_pixel):
    """For every detection, the IoU with and index of its best GT (same image and class).

    Returns (D,) float64 best IoU (-inf without candidates) and (D,) int64 GT index.
    """
    key_gt = gt["image"] * (1 << 31) + gt["labels"]  # (G,) group of each GT
    order = np.argsort(key_gt, kind="stable")
    key_sorted = key_gt[order]
    key_dt = dt["image"] * (1 << 31) + dt["labels"]
    start = np.searchsorted(key_sorted, key_dt, side="left")  # (D,)
    count = np.searchsorted(key_sorted, key_dt, side="right") - start
    best_iou = np.full(len(key_dt), -np.inf)
    best_gt = np.full(len(key_dt), -1, dtype=np.int64)
    has = np.flatnonzero(count > 0)
    if len(has) == 0:
        return best_iou, best_gt
    seg = np.concatenate([[0], np.cumsum(count[has])])
    pair_dt = np.repeat(has, count[has])  # (P,)
    pair_gt = order[np.repeat(start[has], count[has]) + np.arange(seg[-1]) - np.repeat(seg[:-1], count[has])]
    iou = voc_pair_iou(dt["boxes"][pair_dt], gt["boxes"][pair_gt], legacy_pixel)
    best = np.maximum.reduceat(iou, seg[:-1])  # (Dh,)
    is_best = iou == np.repeat(best, count[has])
    first = np.minimum.reduceat(np.where(is_best, np.arange(seg[-1]), seg[-1]), seg[:-1])
    best_iou[has], best_gt[has] = best, pair_gt[first]
    return best_iou, best_gt


def _class_ap(cls, gt, dt, best_iou, best_gt, iou_threshold, use_07_metric) -> float:
    in_class = np.flatnonzero(dt["labels"] == cls)
    order = in_class[np.argsort(-dt["scores"][in_class], kind="stable")]  # (n,)
    hit = best_iou[order] > iou_threshold  # strict, as the devkit
    target = best_gt[order]
    difficult_hit = hit & gt["difficult"][np.maximum(target, 0)]
    fair_hit = np.flatnonzero(hit & ~difficult_hit)
    _, first = np.unique(target[fair_hit], return_index=True)  # first claim on each GT wins
    tp = np.zeros(len(order))
    tp[fair_hit[first]] = 1.0
    fp = (~difficult_hit).astype(float) - tp  # everything not TP nor ignored
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    num_pos = int(np.sum((gt["labels"] == cls) & ~gt["difficult"]))
    recall = tp / float(num_pos)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric)


def voc_eval(targets, preds, iou_threshold=0.5, use_07_metric=False, legacy_pixel=False) -> dict:
    """PASCAL VOC mAP with the devkit's matching rules.

    Args:
        targets: one dict per image: ``boxes`` (M, 4) xyxy, ``labels`` (M,) int,
            optional ``difficult`` (M,) bool. Tensors or numpy arrays.
        preds: one dict per image, same order: ``boxes`` (N, 4) xyxy, ``scores``
            (N,), ``labels`` (N,).
        iou_threshold: a match needs IoU strictly greater than this.
        use_07_metric: 11-point AP (VOC2007) instead of the all-point area.
        legacy_pixel: devkit ``+ 1`` pixel widths, for parity with its numbers.

    Returns:
        ``{"mAP": float, "per_class": {label: AP}}`` over the labels with at
        least one non-difficult GT; ``mAP`` is -1.0 when there is none.
    """
    targets = check_per_image(targets, "targets", ("boxes", "labels"), optional=("difficult",))
    preds = check_per_image(preds, "preds", ("boxes", "scores", "labels"))
    if len(targets) != len(preds):
        raise ValueError(f"targets has {len(targets)} images but preds has {len(preds)}")
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    gt, dt = _flatten(targets, preds)
    best_iou, best_gt = _best_gt(gt, dt, legacy_pixel)
    classes = np.unique(gt["labels"][~gt["difficult"]])
    per_class = {int(c): _class_ap(c, gt, dt, best_iou, best_gt, iou_threshold, use_07_metric)
                 for c in classes}
    mean = float(np.mean(list(per_class.values()))) if per_class else -1.0
    return {"mAP": mean, "per_class": per_class}
