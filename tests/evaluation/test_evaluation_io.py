"""COCO json in/out, per-image <-> COCO conversions, and the streaming evaluator."""

import json
import os

import numpy as np
import pytest
import torch

from fcos_from_scratch.evaluation import (
    DetectionEvaluator,
    coco_eval,
    coco_to_detections,
    detections_to_coco,
    load_coco_gt,
    load_coco_results,
    save_coco_results,
    targets_to_coco,
    voc_eval,
)
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "coco_eval_refs.json")
with open(FIXTURE) as _f:
    REFS = json.load(_f)


def coco_case_as_per_image(case):
    """Turn a frozen COCO case into per-image targets and predictions (xyxy tensors)."""
    gt, dets = case["coco_gt"], case["coco_dets"]
    image_ids = [image["id"] for image in gt["images"]]
    targets = []
    for image_id in image_ids:
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        targets.append({"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                        "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.long),
                        "area": torch.tensor([a["area"] for a in anns], dtype=torch.float64),
                        "iscrowd": torch.tensor([bool(a["iscrowd"]) for a in anns]),
                        "image_id": image_id})
    preds = coco_to_detections(dets, image_ids)
    return targets, preds, image_ids


def test_xyxy_xywh_round_trip_with_label_maps():
    preds = [{"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.5, 0.5, 3.25, 4.0]]),
              "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([0, 2])},
             {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    to_cat, to_label = {0: 1, 2: 90}, {1: 0, 90: 2}
    results = detections_to_coco(preds, image_ids=[42, 7], label_to_category=to_cat)
    assert results[0] == {"image_id": 42, "category_id": 1, "bbox": [1.0, 2.0, 10.0, 20.0],
                          "score": pytest.approx(0.9)}
    back = coco_to_detections(results, [42, 7], category_to_label=to_label)
    torch.testing.assert_close(back[0]["boxes"].float(), preds[0]["boxes"])
    assert back[0]["labels"].tolist() == [0, 2] and len(back[1]["boxes"]) == 0


def test_unknown_ids_in_conversions():
    with pytest.raises(ValueError, match=r"has no entry in the label -> category map"):
        detections_to_coco([{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([5])}],
                           label_to_category={0: 1})
    with pytest.raises(ValueError, match=r"results\[0\]\['image_id'\]: unknown id 3"):
        coco_to_detections([{"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], [1, 2])


def test_json_files_round_trip_and_errors(tmp_path):
    case = REFS["cases"]["mixed"]
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "sub" / "dets.json"
    gt_path.write_text(json.dumps(case["coco_gt"]))
    save_coco_results(case["coco_dets"], dets_path)
    gt = load_coco_gt(gt_path)
    assert load_coco_results(dets_path, gt) == case["coco_dets"]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_coco_gt(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('[{"image_id": 1,')
    with pytest.raises(ValueError, match=r"bad.json: malformed json .* line 1"):
        load_coco_results(tmp_path / "bad.json")
    (tmp_path / "dict.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="holds a json list"):
        load_coco_results(tmp_path / "dict.json")
    bad = [dict(d) for d in case["coco_dets"]]
    bad[3]["bbox"] = [0, 0, -1, 5]
    save_coco_results(bad, tmp_path / "neg.json")
    with pytest.raises(ValueError, match=r"neg.json\[3\]\['bbox'\]: width and height must be >= 0"):
        load_coco_results(tmp_path / "neg.json", gt)


def test_per_image_conversion_reproduces_pycocotools():
    """targets_to_coco + detections_to_coco round trip a frozen case: same 12 numbers."""
    case = REFS["cases"]["crowd_heavy"]
    targets, preds, image_ids = coco_case_as_per_image(case)
    categories = [c["id"] for c in case["coco_gt"]["categories"]]
    gt = targets_to_coco(targets, image_ids, categories=categories)
    result = coco_eval(gt, detections_to_coco(preds, image_ids))
    np.testing.assert_allclose([result[k] for k in REFS["stat_order"]], case["stats"], atol=1e-9, rtol=0)


def test_streaming_equals_one_shot_and_reset():
    case = REFS["cases"]["mixed"]
    targets, preds, image_ids = coco_case_as_per_image(case)
    categories = [c["id"] for c in case["coco_gt"]["categories"]]
    evaluator = DetectionEvaluator(label_to_category={c: c for c in categories})
    evaluator.update(preds[:1], targets[:1])
    evaluator.reset()
    assert len(evaluator) == 0
    for start in range(0, len(targets), 3):  # batches of 3
        evaluator.update(preds[start:start + 3], targets[start:start + 3])
    assert len(evaluator) == len(targets)
    streamed = evaluator.compute()
    np.testing.assert_allclose([streamed["coco"][k] for k in REFS["stat_order"]], case["stats"], atol=1e-9, rtol=0)
    assert streamed["voc"] == voc_eval(targets, preds)


def test_streaming_memory_keeps_only_what_it_needs():
    evaluator = DetectionEvaluator(num_classes=3)
    pred = {"boxes": torch.zeros(2, 4), "scores": torch.ones(2), "labels": torch.tensor([0, 1]),
            "features": torch.zeros(1000)}
    evaluator.update([pred], [{"boxes": torch.zeros(1, 4), "labels": torch.tensor([0]), "masks": torch.zeros(9)}])
    assert set(evaluator._preds[0]) == {"boxes", "scores", "labels"}
    assert isinstance(evaluator._preds[0]["boxes"], np.ndarray)
    with pytest.raises(ValueError, match=r"label 3 >= num_classes=3"):
        evaluator.update([dict(pred, labels=torch.tensor([3, 0]))], [{"boxes": torch.zeros(0, 4),
                                                                     "labels": torch.zeros(0, dtype=torch.long)}])


def test_streaming_with_no_detections_gives_zeros():
    evaluator = DetectionEvaluator(num_classes=2)
    evaluator.update([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}],
                     [{"boxes": torch.tensor([[0.0, 0.0, 50.0, 50.0]]), "labels": torch.tensor([1])}])
    result = evaluator.compute()
    assert result["coco"]["AP"] == 0.0 and result["coco"]["per_class"] == {0: -1.0, 1: 0.0}
    assert result["voc"] == {"mAP": 0.0, "per_class": {1: 0.0}}
