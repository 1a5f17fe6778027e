"""COCO-json loader (fcos_from_scratch/data/coco.py) on a tiny json built in tmp_path."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_from_scratch.data import BadSampleError, CocoDetection, build_dataset


def coco_dict():
    return {
        "images": [
            {"id": 42, "file_name": "a.png", "height": 30, "width": 40},
            {"id": 7, "file_name": "b.png", "height": 20, "width": 20},
            {"id": 9, "file_name": "c.png", "height": 16, "width": 24},  # no annotations
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 18, "bbox": [2.5, 3, 10, 6], "iscrowd": 0, "area": 60},
            {"id": 2, "image_id": 42, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1, "area": 1200},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [4, 4, 0, 5], "iscrowd": 0, "area": 0},  # w = 0
            {"id": 4, "image_id": 7, "category_id": 18, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25},
        ],
        # Ids with gaps and out of order, as in COCO: labels follow increasing id.
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
    }


def write_coco(tmp_path, data=None):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    data = coco_dict() if data is None else data
    for i, image in enumerate(data["images"]):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 256, (image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / image["file_name"])
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return images, ann


def test_xywh_to_xyxy_and_label_maps(tmp_path):
    dataset = CocoDetection(*write_coco(tmp_path))
    assert dataset.class_names == ("car", "dog") and dataset.category_ids == (3, 18)
    assert dataset.category_id_to_label(18) == 1 and dataset.label_to_category_id(0) == 3
    with pytest.raises(ValueError, match="category_id 5"):
        dataset.category_id_to_label(5)
    assert [r["image_id"] for r in dataset.records] == [7, 9, 42]  # sorted by id
    image, target = dataset[2]
    assert image.shape == (3, 30, 40)
    # [x, y, w, h] = [2.5, 3, 10, 6] -> (2.5, 3, 12.5, 9); the crowd box is not a training box.
    assert target["boxes"].tolist() == [[2.5, 3, 12.5, 9]]
    assert target["labels"].tolist() == [1] and target["iscrowd"].tolist() == [False]
    assert target["image_id"] == 42 and target["orig_size"] == (30, 40)


def test_crowd_kept_for_evaluation(tmp_path):
    images, ann = write_coco(tmp_path)
    dataset = CocoDetection(images, ann, keep_crowd=True)
    _, target = dataset[2]
    assert target["iscrowd"].tolist() == [False, True] and target["labels"].tolist() == [1, 0]
    gt = dataset.coco_gt()
    assert sorted(a["id"] for a in gt["annotations"]) == [1, 2, 3, 4]  # as in the file, crowd included
    assert [c["id"] for c in gt["categories"]] == [18, 3]


def test_degenerate_box_dropped_and_counted_never_nan(tmp_path):
    dataset = CocoDetection(*write_coco(tmp_path))
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[1, 1, 6, 6]]  # the w = 0 box is gone
    assert dataset.report.dropped_boxes == 1
    widths = target["boxes"][:, 2:] - target["boxes"][:, :2]
    assert (widths > 0).all() and torch.isfinite(target["boxes"]).all()


def test_empty_image_is_valid(tmp_path):
    _, target = CocoDetection(*write_coco(tmp_path))[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["iscrowd"].shape == (0,)


def bad(data, case):
    if case == "missing file":
        data["images"][0]["file_name"] = "gone.png"
    elif case == "unknown image":
        data["annotations"][0]["image_id"] = 1234
    elif case == "unknown category":
        data["annotations"][0]["category_id"] = 99
    elif case == "short bbox":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif case == "outside":
        data["annotations"][0]["bbox"] = [35, 3, 10, 6]  # x2 = 45 > W = 40
    elif case == "no size":
        del data["images"][0]["height"]
    elif case == "negative width":
        data["annotations"][0]["bbox"] = [10, 3, -4, 6]
    return data


MESSAGES = {"missing file": "image file not found", "unknown image": "unknown image_id 1234",
            "unknown category": "unknown category_id 99", "short bbox": "needs bbox",
            "outside": "outside the image", "no size": "height", "negative width": "inverted box"}


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_bad_input_names_file_and_problem(tmp_path, case):
    data = coco_dict()
    write_coco(tmp_path, data)  # write the images first: "missing file" renames after
    images, ann = tmp_path / "images", tmp_path / "instances.json"
    ann.write_text(json.dumps(bad(data, case)))
    with pytest.raises(BadSampleError, match=MESSAGES[case]) as info:
        CocoDetection(images, ann)
    assert "a.png" in str(info.value) or "gone.png" in str(info.value) or "instances.json" in str(info.value)


def test_skip_bad_skips_and_summarises(tmp_path, caplog):
    data = bad(coco_dict(), "outside")
    images, ann = write_coco(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="fcos_from_scratch.data"):
        dataset = CocoDetection(images, ann, skip_bad=True)
    assert [r["image_id"] for r in dataset.records] == [7, 9]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("skipped") for m in messages) == 1 and "a.png" in messages[0]
    assert messages[-1] == dataset.report.summary() and "1 skipped" in messages[-1]
    assert {im["id"] for im in dataset.coco_gt()["images"]} == {7, 9}


def test_malformed_json_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDetection(tmp_path, tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        CocoDetection(tmp_path, tmp_path / "broken.json")
    (tmp_path / "partial.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="'annotations'"):
        CocoDetection(tmp_path, tmp_path / "partial.json")


def test_build_dataset_coco_layout(tmp_path):
    data = coco_dict()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    for i, image in enumerate(data["images"]):
        Image.new("RGB", (image["width"], image["height"]), (i, i, i)).save(tmp_path / "val2017" / image["file_name"])
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    val = build_dataset("coco", "val", root=tmp_path)
    assert len(val) == 3 and val.keep_crowd  # evaluation split keeps crowd boxes
    train_view = build_dataset("coco", "val", root=tmp_path, train=True, augment=False)
    assert not train_view.keep_crowd
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("imagenet", "train")
