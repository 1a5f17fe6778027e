"""voc_eval: equal to the loop-based devkit port in all four modes, hand cases, properties."""

import os

import numpy as np
import pytest
import torch

from fcos_from_scratch.evaluation import voc_eval
from fcos_from_scratch.evaluation.voc import voc_ap

from voc_devkit_port import devkit_voc_ap, devkit_voc_eval  # tests/reference/, on sys.path via conftest

MODES = [(use_07, legacy) for use_07 in (False, True) for legacy in (False, True)]


def random_case(seed, num_images=8, num_classes=4, integer=True):
    """Detections near GT (integer jitter makes exact IoU ties), difficult GT, duplicates."""
    rng = np.random.default_rng(seed)
    targets, preds = [], []
    for _ in range(num_images):
        m = int(rng.integers(0, 7))
        xy = rng.integers(0, 80, (m, 2)).astype(float)
        wh = rng.integers(1, 40, (m, 2)).astype(float)
        if not integer:
            xy, wh = xy + rng.random((m, 2)), wh + rng.random((m, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        if m > 1 and rng.random() < 0.5:
            boxes[1] = boxes[0]  # two GT on the same box
        labels = rng.integers(0, num_classes, m)
        targets.append({"boxes": boxes, "labels": labels, "difficult": rng.random(m) < 0.2})
        n = int(rng.integers(0, 12))
        source = rng.integers(0, max(m, 1), n)
        det = (boxes[source] if m else np.full((n, 4), 10.0)) + rng.integers(-4, 5, (n, 4))
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2])
        det_labels = np.where(rng.random(n) < 0.8, labels[source] if m else 0, rng.integers(0, num_classes, n))
        preds.append({"boxes": det, "labels": det_labels, "scores": np.round(rng.random(n), 1)})
    return targets, preds


@pytest.mark.parametrize("use_07, legacy", MODES)
@pytest.mark.parametrize("seed", range(6))
def test_equals_devkit_port(seed, use_07, legacy):
    targets, preds = random_case(seed, integer=seed % 2 == 0)
    for threshold in (0.5, 0.7):
        ours = voc_eval(targets, preds, threshold, use_07_metric=use_07, legacy_pixel=legacy)
        ref = devkit_voc_eval(targets, preds, threshold, use_07_metric=use_07, legacy_pixel=legacy)
        assert ours["per_class"].keys() == ref["per_class"].keys()
        for label, ap in ref["per_class"].items():
            assert abs(ours["per_class"][label] - ap) <= 1e-9
        assert abs(ours["mAP"] - ref["mAP"]) <= 1e-9


def _one_image(gt_boxes, det_boxes, scores, difficult=None):
    targets = [{"boxes": torch.tensor(gt_boxes, dtype=torch.float64), "labels": torch.zeros(len(gt_boxes), dtype=torch.long),
                "difficult": torch.tensor(difficult or [False] * len(gt_boxes))}]
    preds = [{"boxes": torch.tensor(det_boxes, dtype=torch.float64), "scores": torch.tensor(scores),
              "labels": torch.zeros(len(det_boxes), dtype=torch.long)}]
    return targets, preds


def test_strict_threshold_and_legacy_pixels():
    # GT 10x10, detection 10x20 sharing the top half: continuous IoU = 100 / 200 = 0.5,
    # not > 0.5 -> FP, AP 0. Devkit pixels: 11*11 / (11*11 + 11*21 - 11*11) = 121 / 231 = 0.524 -> TP.
    targets, preds = _one_image([[0, 0, 10, 10]], [[0, 0, 10, 20]], [0.9])
    assert voc_eval(targets, preds)["mAP"] == 0.0
    assert voc_eval(targets, preds, legacy_pixel=True)["mAP"] == pytest.approx(1.0)


def test_hand_computed_11_point_and_area():
    # 2 GT; detections: hit, background, hit. precision 1, 1/2, 2/3; recall .5, .5, 1.
    # all-point: 0.5 * 1 + 0.5 * 2/3 = 0.8333; 11-point: t = 0..0.5 (6 points) read 1,
    # t = .6..1 (5 points) read 2/3 -> (6 + 5 * 2/3) / 11 = 0.848485.
    targets, preds = _one_image([[0, 0, 10, 10], [50, 50, 60, 60]],
                                [[0, 0, 10, 10], [200, 200, 210, 210], [50, 50, 60, 60]], [0.9, 0.8, 0.7])
    assert voc_eval(targets, preds)["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
    assert voc_eval(targets, preds, use_07_metric=True)["mAP"] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)


def test_difficult_is_neither_counted_nor_penalised():
    # A difficult GT: the detection on it is ignored, and it is not in the recall denominator.
    targets, preds = _one_image([[0, 0, 10, 10], [50, 50, 60, 60]], [[0, 0, 10, 10], [50, 50, 60, 60]],
                                [0.9, 0.95], difficult=[False, True])
    assert voc_eval(targets, preds)["mAP"] == pytest.approx(1.0)
    # The devkit compares each detection with its best GT only, even if difficult:
    # a detection whose best GT is difficult is ignored although a regular GT overlaps too.
    targets, preds = _one_image([[0, 0, 10, 10], [0, 0, 10, 11]], [[0, 0, 10, 11]], [0.9], difficult=[False, True])
    assert voc_eval(targets, preds)["mAP"] == 0.0


def test_second_hit_on_a_gt_is_a_false_positive():
    # 2 GT; detections: A, A again (duplicate), B. The duplicate is an FP, exactly like a
    # background detection in test_hand_computed_11_point_and_area: AP = 0.5 + 0.5 * 2/3.
    targets, preds = _one_image([[0, 0, 10, 10], [50, 50, 60, 60]],
                                [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7])
    assert voc_eval(targets, preds)["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)


def test_voc_ap_equals_the_loop_version():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        tp = rng.random(n) < 0.5
        rec = np.cumsum(tp) / max(tp.sum() + 2, 1)
        prec = np.cumsum(tp) / np.arange(1, n + 1)
        for use_07 in (False, True):
            assert voc_ap(rec, prec, use_07) == pytest.approx(devkit_voc_ap(rec, prec, use_07), abs=1e-12)


def test_perfect_and_shuffled():
    targets, preds = random_case(3)
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": np.linspace(1, 0.5, len(t["labels"]))}
               for t in targets]
    assert voc_eval(targets, perfect)["mAP"] == pytest.approx(1.0)
    for p in preds:
        p["scores"] = p["scores"] + np.random.default_rng(1).random(len(p["scores"])) * 1e-3  # distinct
    before = voc_eval(targets, preds)
    rng = np.random.default_rng(2)
    shuffled = []
    for p in preds:
        order = rng.permutation(len(p["scores"]))
        shuffled.append({k: v[order] for k, v in p.items()})
    assert voc_eval(targets, shuffled) == before


def test_empty_predictions_and_empty_ground_truth():
    targets, preds = random_case(4)
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)} for _ in preds]
    result = voc_eval(targets, empty)
    assert result["mAP"] == 0.0 and all(v == 0.0 for v in result["per_class"].values())
    no_gt = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)} for _ in targets]
    assert voc_eval(no_gt, preds) == {"mAP": -1.0, "per_class": {}}


@pytest.mark.parametrize("mutate, message", [
    (lambda t, p: p[0].update(boxes=np.array([[5.0, 0, 1, 1]])), r"preds\[0\]\['boxes'\]: x2 < x1"),
    (lambda t, p: p[0].update(scores=np.array([np.nan])), r"preds\[0\]\['scores'\]: non-finite"),
    (lambda t, p: t[0].update(labels=np.array([0, 1])), r"targets\[0\]: lengths differ"),
    (lambda t, p: t.append(t[0]), r"targets has 2 images but preds has 1"),
    (lambda t, p: p[0].pop("scores"), r"preds\[0\] has no key 'scores'"),
    (lambda t, p: t[0].update(boxes=np.zeros((1, 3))), r"must have shape \(N, 4\)"),
])
def test_bad_input(mutate, message):
    targets = [{"boxes": np.array([[0.0, 0, 10, 10]]), "labels": np.array([0])}]
    preds = [{"boxes": np.array([[0.0, 0, 10, 10]]), "scores": np.array([0.5]), "labels": np.array([0])}]
    mutate(targets, preds)
    with pytest.raises(ValueError, match=message):
        voc_eval(targets, preds)
