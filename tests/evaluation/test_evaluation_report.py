"""Reports: the summary text, per-class table, PNGs, the TIDE-style breakdown, the CLI."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from fcos_from_scratch.evaluate import main
from fcos_from_scratch.evaluation import evaluate_coco, voc_eval
from fcos_from_scratch.evaluation.report import (
    format_error_breakdown,
    format_per_class_table,
    format_summary,
    plot_error_breakdown,
    plot_pr_curves,
)
from fcos_from_scratch.evaluation.tide import tide_errors
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "coco_eval_refs.json")
with open(FIXTURE) as _f:
    REFS = json.load(_f)


@pytest.mark.parametrize("name", ["mixed", "no_large_objects"])
def test_summary_is_pycocotools_text(name):
    case = REFS["cases"][name]
    result = evaluate_coco(case["coco_gt"], case["coco_dets"])
    assert format_summary(result.stats) + "\n" == case["summary"]


def test_per_class_table():
    case = REFS["cases"]["many_categories"]
    table = format_per_class_table(evaluate_coco(case["coco_gt"], case["coco_dets"]))
    lines = table.splitlines()
    assert lines[0].split() == ["id", "class", "AP", "AP50", "AP75"]
    assert len(lines) == 2 + len(case["coco_gt"]["categories"])
    ap_class0 = case["per_class"]["1"]
    assert f"{100 * ap_class0:.2f}" in lines[2] and "class_0" in lines[2]
    assert lines[-1].split()[2:] == ["-", "-", "-"]  # a category without GT
    voc = format_per_class_table({3: 0.5, 1: 0.25}, names={1: "cat"})
    assert voc.splitlines()[2].split() == ["1", "cat", "25.00"]


def _tide_case():
    """One error of each TIDE type (hand-built; see test_tide_breakdown)."""
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}, {"id": 2}], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},    # A
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 100, 10, 10], "area": 100, "iscrowd": 0},  # B
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [200, 200, 10, 10], "area": 100, "iscrowd": 0},  # C
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [300, 300, 10, 10], "area": 100, "iscrowd": 0},  # D
    ]}
    det = lambda box, score: {"image_id": 1, "category_id": 1, "bbox": box, "score": score}  # noqa: E731
    dets = [det([0, 0, 10, 10], 0.95),      # TP on A
            det([0, 0, 10, 10], 0.9),       # Dupl: A is taken
            det([100, 100, 10, 10], 0.85),  # Cls: perfect box on B, wrong class
            det([305, 300, 10, 10], 0.8),   # Loc: IoU 50 / 150 = 1/3 with D
            det([500, 500, 10, 10], 0.7),   # Bkg
            det([105, 100, 10, 10], 0.6)]   # Both: IoU 1/3 with B, wrong class
    return gt, dets                         # C is missed


def test_tide_breakdown():
    gt, dets = _tide_case()
    b = tide_errors(gt, dets)
    assert list(b.det_labels) == ["TP", "Dupl", "Cls", "Loc", "Bkg", "Both"]
    assert b.counts == {"Cls": 1, "Loc": 1, "Both": 1, "Dupl": 1, "Bkg": 1, "Miss": 1}
    assert b.missed.tolist() == [False, False, True, False]
    # AP@.5: class 1 reaches recall 1/3 at precision 1 -> 34 of 101 recall points; class 2: 0.
    assert b.ap == pytest.approx(34 / 101 / 2)
    # Cls fixed: class 2 gets a TP -> AP 1 for it: +0.5.
    # Loc fixed: class 1 TP, FP, FP, TP -> 34 points at 1, 33 at 1/2 -> +(50.5 - 34) / 202.
    # Miss fixed: class 1 has 2 GT -> recall 1/2 at precision 1 -> 51 points -> +(51 - 34) / 202.
    expected = {"Cls": 0.5, "Loc": 16.5 / 202, "Both": 0.0, "Dupl": 0.0, "Bkg": 0.0, "Miss": 17 / 202}
    assert b.delta_ap == pytest.approx(expected)
    text = format_error_breakdown(b)
    assert "Cls" in text and "50.00" in text


def test_tide_ignores_detections_inside_crowd_and_checks_thresholds():
    gt, dets = _tide_case()
    gt["annotations"].append({"id": 5, "image_id": 1, "category_id": 1, "bbox": [480, 480, 50, 50],
                              "area": 2500, "iscrowd": 1})
    assert tide_errors(gt, dets).det_labels[4] == "ignored"  # the Bkg detection lies in the crowd
    with pytest.raises(ValueError, match="bg_threshold"):
        tide_errors(gt, dets, pos_threshold=0.1, bg_threshold=0.5)


def test_pngs_render(tmp_path):
    case = REFS["cases"]["mixed"]
    result = evaluate_coco(case["coco_gt"], case["coco_dets"])
    pr = plot_pr_curves(result, tmp_path / "pr.png")
    errors = plot_error_breakdown(tide_errors(case["coco_gt"], case["coco_dets"]), tmp_path / "errors.png")
    for path in (pr, errors):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 600
            assert np.asarray(image.convert("L")).std() > 1  # not a blank canvas
    with pytest.raises(ValueError, match="no COCO setting"):
        plot_pr_curves(result, tmp_path / "x.png", iou_threshold=0.42)


def test_cli(tmp_path, capsys):
    case = REFS["cases"]["mixed"]
    gt, dets = tmp_path / "gt.json", tmp_path / "dets.json"
    gt.write_text(json.dumps(case["coco_gt"]))
    dets.write_text(json.dumps(case["coco_dets"]))
    assert main(["--gt", str(gt), "--dets", str(dets), "--voc", "--plots", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(case["summary"])
    assert "11-point (VOC07)" in out and "Miss" in out
    assert sorted(os.listdir(tmp_path / "plots")) == ["error_breakdown.png", "pr_curves.png"]
    for argv, message in ((["--checkpoint", "model.pt"], "--checkpoint 'model.pt' is not a file"),
                          (["--dataset", "digits"], "need --checkpoint"),
                          (["--gt", str(gt)], "both required")):
        assert main(argv) == 2  # usage errors: one line, exit status 2 (tests/test_commands.py)
        assert message in capsys.readouterr().err


def test_cli_voc_numbers_match_voc_eval(tmp_path, capsys):
    from fcos_from_scratch.evaluate import coco_to_voc_targets
    from fcos_from_scratch.evaluation import coco_to_detections

    case = REFS["cases"]["integer_boxes_ties"]
    targets = coco_to_voc_targets(case["coco_gt"])
    image_ids = sorted(i["id"] for i in case["coco_gt"]["images"])
    preds = coco_to_detections(case["coco_dets"], image_ids)
    expected = voc_eval(targets, preds, use_07_metric=True, legacy_pixel=True)["mAP"]
    (tmp_path / "g.json").write_text(json.dumps(case["coco_gt"]))
    (tmp_path / "d.json").write_text(json.dumps(case["coco_dets"]))
    main(["--gt", str(tmp_path / "g.json"), "--dets", str(tmp_path / "d.json"), "--voc"])
    assert f"legacy +1 pixels  mAP = {expected:.4f}" in capsys.readouterr().out
