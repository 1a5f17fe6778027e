"""A plain, loop-based port of the PASCAL VOC devkit's detection AP.

The oracle for ``fcos_from_scratch.evaluation.voc_eval``: it follows the
devkit's ``VOCevaldet.m`` / the widely used ``voc_eval.py`` line by line (one
detection at a time, a Python loop, a dict of per-image GT records), with two
switches:

* ``legacy_pixel``: the devkit's inclusive-pixel ``+ 1`` widths, or none;
* ``use_07_metric``: 11-point AP, or the all-point area.

Two choices made explicit: detections are sorted with a *stable* sort (MATLAB's
``sort`` is stable; ``voc_eval.py``'s default quicksort is not, so its order for
tied scores is unspecified), and in continuous mode an IoU with zero union is 0
(the devkit never meets zero unions because of its ``+ 1``). Classes without a
non-difficult GT are skipped.

Plain numpy only; kept in ``tests/`` and imported by the tests.
"""

import numpy as np


def devkit_voc_ap(rec, prec, use_07_metric=False):
    """``voc_ap`` with explicit loops."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def devkit_class_ap(targets, preds, cls, ovthresh=0.5, use_07_metric=False, legacy_pixel=False):
    """AP of one class; ``targets``/``preds`` are per-image dicts of numpy arrays."""
    one = 1.0 if legacy_pixel else 0.0
    class_recs, npos = {}, 0
    for i, t in enumerate(targets):
        keep = t["labels"] == cls
        difficult = t.get("difficult", np.zeros(len(t["labels"]), bool))[keep].astype(bool)
        class_recs[i] = {"bbox": t["boxes"][keep], "difficult": difficult, "det": [False] * int(keep.sum())}
        npos += int((~difficult).sum())
    if npos == 0:
        return None
    image_ids, confidence, boxes = [], [], []
    for i, p in enumerate(preds):
        for j in range(len(p["labels"])):
            if p["labels"][j] == cls:
                image_ids.append(i)
                confidence.append(p["scores"][j])
                boxes.append(p["boxes"][j])
    sorted_ind = np.argsort(-np.array(confidence, dtype=float), kind="stable")
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[sorted_ind[d]]]
        bb = np.asarray(boxes[sorted_ind[d]], dtype=float)
        ovmax = -np.inf
        BBGT = np.asarray(R["bbox"], dtype=float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + one, 0.0)
            ih = np.maximum(iymax - iymin + one, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                   + (BBGT[:, 2] - BBGT[:, 0] + one) * (BBGT[:, 3] - BBGT[:, 1] + one) - inters)
            overlaps = np.array([inters[g] / uni[g] if uni[g] > 0 else 0.0 for g in range(len(uni))])
            ovmax = np.max(overlaps)
            jmax = int(np.argmax(overlaps))
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return devkit_voc_ap(rec, prec, use_07_metric)


def devkit_voc_eval(targets, preds, ovthresh=0.5, use_07_metric=False, legacy_pixel=False):
    """``{"mAP", "per_class"}`` over classes with at least one non-difficult GT."""
    labels = sorted({int(c) for t in targets for c in t["labels"]})
    per_class = {}
    for c in labels:
        ap = devkit_class_ap(targets, preds, c, ovthresh, use_07_metric, legacy_pixel)
        if ap is not None:
            per_class[c] = ap
    return {"mAP": float(np.mean(list(per_class.values()))) if per_class else -1.0, "per_class": per_class}
