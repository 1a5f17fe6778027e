"""coco_eval: frozen pycocotools numbers, hand-computed cases, properties, edge cases."""

import copy
import json
import os
import random

import numpy as np
import pytest

from fcos_from_scratch.evaluation import STAT_KEYS, coco_eval, evaluate_coco
from fcos_from_scratch.evaluation.coco import average_precision
from fcos_from_scratch.evaluation.matching import crowd_iou
from conftest import FIXTURES, REPO

FIXTURE = os.path.join(FIXTURES, "coco_eval_refs.json")
with open(FIXTURE) as _f:
    REFS = json.load(_f)


def _gt(boxes, cats=None, areas=None, crowd=None, images=(1,), image_of=None, categories=(1, 2)):
    """A tiny COCO gt dict; boxes are xywh."""
    anns = []
    for i, box in enumerate(boxes):
        anns.append({"id": i + 1, "image_id": image_of[i] if image_of else images[0],
                     "category_id": cats[i] if cats else 1, "bbox": list(box),
                     "area": areas[i] if areas else box[2] * box[3], "iscrowd": crowd[i] if crowd else 0})
    return {"images": [{"id": i} for i in images], "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in categories]}


def _det(box, score, cat=1, image=1):
    return {"image_id": image, "category_id": cat, "bbox": list(box), "score": score}


# --------------------------------------------------------------------------- reference values

@pytest.mark.parametrize("name", sorted(REFS["cases"]))
def test_matches_frozen_pycocotools(name):
    case = REFS["cases"][name]
    result = evaluate_coco(case["coco_gt"], case["coco_dets"])
    ours = np.array([result.stats[k] for k in REFS["stat_order"]])
    np.testing.assert_allclose(ours, case["stats"], rtol=0, atol=1e-9)
    for cat_id, ap in case["per_class"].items():
        assert abs(result.per_class[int(cat_id)] - ap) <= 1e-9
    np.testing.assert_allclose(result.recall[:, :, 0, -1], case["recall_all_100"], rtol=0, atol=1e-9)


def test_frozen_cases_cover_the_rules():
    """The fixture really contains what it claims to test."""
    cases = REFS["cases"]
    assert any(a["iscrowd"] for c in cases.values() for a in c["coco_gt"]["annotations"])
    assert any(-1.0 in c["per_class"].values() for c in cases.values())  # category without GT
    assert any(-1.0 in c["stats"] for c in cases.values())  # an area range without GT
    dense = cases["over_100_dets"]["coco_dets"]
    groups = {}
    for d in dense:
        groups[(d["image_id"], d["category_id"])] = groups.get((d["image_id"], d["category_id"]), 0) + 1
    assert max(groups.values()) > 100
    without_gt = 0
    for c in cases.values():
        gt_images = {a["image_id"] for a in c["coco_gt"]["annotations"]}
        scores = [d["score"] for d in c["coco_dets"]]
        assert len(set(scores)) < len(scores)  # tied scores
        without_gt += sum(d["image_id"] not in gt_images for d in c["coco_dets"])
    assert without_gt > 0  # detections on images without GT
    areas = [a["area"] for c in cases.values() for a in c["coco_gt"]["annotations"]]
    assert 32.0**2 in areas and 96.0**2 in areas  # exactly on the area bounds


def test_hand_computed_ap():
    # 2 GT, detections in score order: hit A, miss, hit B (all IoU = 1).
    # precision 1/1, 1/2, 2/3; recall .5, .5, 1; envelope 1, 2/3, 2/3.
    # Recall points 0.00..0.50 (51 of them) read 1, 0.51..1.00 (50) read 2/3:
    # AP = (51 * 1 + 50 * 2/3) / 101 = 0.834983...
    gt = _gt([(0, 0, 10, 10), (50, 50, 10, 10)])
    dets = [_det((0, 0, 10, 10), 0.9), _det((200, 200, 5, 5), 0.8), _det((50, 50, 10, 10), 0.7)]
    result = coco_eval(gt, dets)
    assert result["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert result["AR100"] == pytest.approx(1.0) and result["AR1"] == pytest.approx(0.5)
    assert result["per_class"] == {1: pytest.approx(result["AP"]), 2: -1.0}
    assert result["APm"] == -1.0 and result["APs"] == pytest.approx(result["AP"])  # all boxes are small


def test_crowd_region_absorbs_detections():
    # A crowd region 100x100; a 10x10 detection inside has crowd IoU = 100 / 100 = 1:
    # ignored, not a false positive; several of them are all absorbed.
    boxes = [(0, 0, 10, 10), (100, 100, 100, 100)]
    dets = [_det((0, 0, 10, 10), 0.5)] + [_det((110 + 20 * i, 110, 10, 10), 0.9) for i in range(3)]
    crowd = coco_eval(_gt(boxes, crowd=[0, 1]), dets)
    assert crowd["AP"] == pytest.approx(1.0, abs=1e-12)
    not_crowd = coco_eval(_gt(boxes, crowd=[0, 0]), dets)
    assert not_crowd["AP"] < 0.5


def test_crowd_iou_formula():
    dt = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 10.0, 10.0], [20.0, 0.0, 1.0, 1.0]])
    gt = np.array([[0.0, 0.0, 20.0, 10.0]])
    regular = crowd_iou(dt[:, None], gt[None], np.array([False]))[:, 0]
    crowd = crowd_iou(dt[:, None], gt[None], np.array([True]))[:, 0]
    # inter 100 / union (100 + 200 - 100); inter 5*5... box 2: x 5..15, y 5..15 vs 0..20, 0..10 -> 10*5 = 50
    np.testing.assert_allclose(regular, [100 / 200, 50 / (100 + 200 - 50), 0.0])
    np.testing.assert_allclose(crowd, [1.0, 50 / 100, 0.0])  # inter / detection area; touching = 0


def test_area_bounds_are_inclusive_and_use_the_gt_area_field():
    # A GT whose box is 40x40 (1600) but whose 'area' is exactly 32**2 = 1024 is small
    # AND medium; a detection's own range is w*h.
    gt = _gt([(0, 0, 40, 40)], areas=[1024.0])
    result = coco_eval(gt, [_det((0, 0, 40, 40), 0.9)])
    assert result["APs"] == pytest.approx(1.0) and result["APm"] == pytest.approx(1.0)
    assert result["APl"] == -1.0


def test_max_dets_cut_per_image_and_category():
    # 100 background detections outscore the one true hit: it is cut away.
    gt = _gt([(0, 0, 10, 10)])
    noise = [_det((300 + i, 300, 5, 5), 0.9) for i in range(100)]
    cut = coco_eval(gt, noise + [_det((0, 0, 10, 10), 0.1)])
    assert cut["AR100"] == 0.0 and cut["AP"] == 0.0
    # ... but the cut is per category: the same noise in another category does not matter.
    other = [dict(d, category_id=2) for d in noise]
    kept = coco_eval(gt, other + [_det((0, 0, 10, 10), 0.1)])
    assert kept["AP"] == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- properties

def test_perfect_detections_score_one():
    case = REFS["cases"]["mixed"]["coco_gt"]
    dets = [_det(a["bbox"], 1.0 - 1e-3 * i, a["category_id"], a["image_id"])
            for i, a in enumerate(case["annotations"]) if not a["iscrowd"]]
    result = coco_eval(case, dets)
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert result[key] == pytest.approx(1.0, abs=1e-12)


def test_shuffling_distinct_score_detections_changes_nothing():
    case = REFS["cases"]["crowd_heavy"]
    dets = copy.deepcopy(case["coco_dets"])
    for i, d in enumerate(dets):
        d["score"] = d["score"] + 1e-7 * i  # make scores distinct
    before = coco_eval(case["coco_gt"], dets)
    random.Random(0).shuffle(dets)
    after = coco_eval(case["coco_gt"], dets)
    assert before == after


def test_category_and_image_id_values_do_not_matter():
    case = REFS["cases"]["mixed"]
    gt, dets = copy.deepcopy(case["coco_gt"]), copy.deepcopy(case["coco_dets"])
    for item in gt["images"]:
        item["id"] += 1000
    for item in gt["annotations"] + dets:
        item["image_id"] += 1000
    result = coco_eval(gt, dets)
    assert [result[k] for k in STAT_KEYS] == pytest.approx(case["stats"], abs=1e-12)


def test_average_precision_helper():
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2) == \
        pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)


# --------------------------------------------------------------------------- edge cases

def test_empty_detections_give_zeros():
    result = coco_eval(REFS["cases"]["mixed"]["coco_gt"], [])
    assert result["AP"] == 0.0 and result["AR100"] == 0.0
    assert all(v in (0.0, -1.0) for k, v in result.items() if k != "per_class")


def test_no_ground_truth_at_all_gives_minus_one():
    gt = _gt([])
    result = coco_eval(gt, [_det((0, 0, 5, 5), 0.5)])
    assert all(result[k] == -1.0 for k in STAT_KEYS)


@pytest.mark.parametrize("mutate, message", [
    (lambda g, d: d[0].update(image_id=999), r"coco_dets\[0\]\['image_id'\]: unknown id 999"),
    (lambda g, d: d[1].update(category_id=42), r"coco_dets\[1\]\['category_id'\]: unknown id 42"),
    (lambda g, d: d[0].update(bbox=[0, 0, float("nan"), 1]), r"coco_dets\[0\]\['bbox'\]: must be finite"),
    (lambda g, d: d[1].update(bbox=[0, 0, -2, 1]), r"coco_dets\[1\]\['bbox'\]: width and height"),
    (lambda g, d: d[1].update(bbox=[0, 0, 1]), r"coco_dets\[1\]\['bbox'\]: must be a list of 4"),
    (lambda g, d: d[0].update(score=float("inf")), r"coco_dets\[0\]\['score'\]: must be finite"),
    (lambda g, d: d[1].update(score="high"), r"coco_dets\[1\]\['score'\]: must be a number"),
    (lambda g, d: d[0].pop("score"), r"coco_dets\[0\] has no field 'score'"),
    (lambda g, d: g["annotations"][1].update(category_id=9), r"annotations'\]\[1\]\['category_id'\]: unknown"),
    (lambda g, d: g["annotations"][1].update(id=1), r"annotations'\]\[1\]\['id'\]: duplicate id 1"),
    (lambda g, d: g["annotations"][0].update(area=float("nan")), r"annotations'\]\[0\]\['area'\]: must be finite"),
    (lambda g, d: g.pop("images"), r"coco_gt has no 'images' list"),
])
def test_bad_input_names_entry_and_field(mutate, message):
    gt = _gt([(0, 0, 10, 10), (5, 5, 10, 10)])
    dets = [_det((0, 0, 10, 10), 0.9), _det((1, 1, 10, 10), 0.8)]
    mutate(gt, dets)
    with pytest.raises(ValueError, match=message):
        coco_eval(gt, dets)


def test_missing_optional_fields_take_defaults():
    gt = _gt([(0, 0, 10, 10)])
    del gt["annotations"][0]["area"], gt["annotations"][0]["iscrowd"]
    assert coco_eval(gt, [_det((0, 0, 10, 10), 0.9)])["AP"] == pytest.approx(1.0)


def test_annotation_id_zero_is_an_ordinary_id():
    # pycocotools stores the matched GT's id in dtMatches and tests it for != 0, so a
    # detection matched to a GT with id 0 counts as unmatched there (a known quirk).
    # Here ids are only labels: a perfect detection of GT id 0 is a true positive.
    gt = _gt([(0, 0, 10, 10)])
    gt["annotations"][0]["id"] = 0
    assert coco_eval(gt, [_det((0, 0, 10, 10), 0.9)])["AP"] == pytest.approx(1.0)


def test_benchmark_script_runs_on_a_tiny_set(capsys):
    import importlib.util

    path = str(REPO / "benchmarks" / "bench_eval.py")
    spec = importlib.util.spec_from_file_location("bench_eval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--images", "4", "--classes", "3", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "4 images, 3 classes" in out and "fcos_from_scratch" in out
