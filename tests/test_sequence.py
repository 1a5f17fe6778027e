"""The digit-sequence task (``fcos_from_scratch/sequence.py``, [digits-lab] task 2)."""

import csv

import pytest
import torch

from fcos_from_scratch.sequence import (
    best_threshold,
    number_accuracy,
    one_digit_per_place,
    parse_thresholds,
    predict_split,
    read_number,
    sweep,
    threshold_grid,
    write_csv,
)


def det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_grid_is_the_labs_and_rejects_bounds_outside_0_1():
    grid = threshold_grid()
    assert len(grid) == 46 and grid[0] == 0.45 and grid[-1] == 0.9 and grid[1] == 0.46
    for bad in [(0.0, 0.9, 0.01), (0.45, 1.0, 0.01), (0.9, 0.45, 0.01), (0.45, 0.9, 0.0)]:
        with pytest.raises(ValueError, match="thresholds"):
            threshold_grid(*bad)
    with pytest.raises(ValueError, match="--thresholds expects start,stop,step"):
        parse_thresholds("0.5,0.9")


def test_read_number_sorts_by_box_centre_and_thresholds():
    # Box centres x: 35, 12.5, 60 -> "7 4 1" read as "471"; the 0.3 digit is dropped at 0.5.
    detection = det([[30, 0, 40, 10], [5, 0, 20, 10], [55, 0, 65, 10], [0, 0, 4, 4]],
                    [0.9, 0.8, 0.6, 0.3], [7, 4, 1, 9])
    assert read_number(detection, 0.5) == "471"
    assert read_number(detection, 0.25) == "9471"
    assert read_number(detection, 0.95) == ""


def test_one_digit_per_place_reads_the_best_of_overlapping_digits():
    # a "3" and an "8" on the same glyph (IoU 0.8): class-wise NMS keeps both, the number
    # would read "381"; with overlap_iou 0.5 only the better "8" is read, and a third digit
    # touching it (IoU 0) stays
    detection = det([[0, 0, 10, 20], [0, 0, 10, 16], [10, 0, 20, 20]], [0.7, 0.9, 0.8], [3, 8, 1])
    assert read_number(detection, 0.5) == "381"  # stable sort: the equal centres keep their order
    (kept,) = one_digit_per_place([detection], 0.5)
    assert read_number(kept, 0.5) == "81"
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.8])
    (same,) = one_digit_per_place([detection], 0.0)  # 0 = off, the lab's rule
    assert read_number(same, 0.5) == "381"
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="overlap_iou"):
            one_digit_per_place([detection], bad)


def test_accuracy_and_best_threshold_ties_go_low():
    assert number_accuracy(["12", "", "3"], ["12", "5", "3"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one image"):
        number_accuracy([], [])
    rows = [{"threshold": 0.5, "accuracy": 0.8}, {"threshold": 0.6, "accuracy": 0.9},
            {"threshold": 0.7, "accuracy": 0.9}]
    assert best_threshold(rows) == 0.6


def test_sweep_reports_accuracy_and_thresholded_ap():
    gt = {"images": [{"id": 1, "height": 20, "width": 80}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [5, 0, 15, 10], "area": 150,
                           "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 0, 10, 10], "area": 100,
                           "iscrowd": 0}],
          "categories": [{"id": i, "name": str(i)} for i in range(10)]}
    detection = det([[30, 0, 40, 10], [5, 0, 20, 10], [50, 0, 60, 10]], [0.9, 0.6, 0.55], [7, 4, 1])
    rows = sweep([detection], ["47"], gt, [1], [0.5, 0.58, 0.7])
    assert [r["accuracy"] for r in rows] == [0.0, 1.0, 0.0]  # "471", "47", "7"
    assert rows[1]["AP50"] == pytest.approx(1.0) and rows[2]["AP50"] < 1.0


def test_csv_writes_minus_one_for_no_digit(tmp_path):
    write_csv(tmp_path / "pred.csv", [3, 4], ["105", ""])
    rows = list(csv.reader(open(tmp_path / "pred.csv")))
    assert rows == [["image_id", "pred_label"], ["3", "105"], ["4", "-1"]]


def test_empty_split_is_an_error_naming_it():
    class Empty(list):
        split = "val"

        def digit_string(self, index):
            return ""

    with pytest.raises(ValueError, match="split 'val' is empty"):
        predict_split(torch.nn.Linear(1, 1), Empty())
