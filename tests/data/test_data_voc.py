"""VOC loader (fcos_from_scratch/data/voc.py) on a 3-image VOCdevkit built in tmp_path."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_from_scratch.data import BadSampleError, VOC_CLASSES, VOCDetection, build_dataset
from fcos_from_scratch.data.voc import parse_voc_xml


def voc_xml(width, height, objects, with_size=True):
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if with_size else ""
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(hard)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, hard in objects
    )
    return f"<annotation><filename>x.jpg</filename>{size}{body}</annotation>"


# (stem, (W, H), objects) for the standard 3-image fixture.
IMAGES = [
    ("000001", (40, 30), [("dog", (10, 5, 20, 15), False), ("person", (1, 1, 40, 30), True)]),
    ("000002", (32, 24), [("tvmonitor", (3, 4, 9, 10), False)]),
    ("000003", (20, 20), []),  # no objects: a valid image
]


def write_image(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def make_devkit(root, images=IMAGES, year="2007", split="trainval"):
    base = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for i, (stem, (width, height), objects) in enumerate(images):
        (base / "Annotations" / f"{stem}.xml").write_text(voc_xml(width, height, objects))
        write_image(base / "JPEGImages" / f"{stem}.jpg", width, height, seed=i)
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s, _, _ in images))
    return base


def test_parsing_converts_devkit_pixels_to_continuous(tmp_path):
    make_devkit(tmp_path)
    dataset = VOCDetection(tmp_path, (("2007", "trainval"),), keep_difficult=True)
    assert len(dataset) == 3
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    # devkit (xmin, ymin, xmax, ymax) = (10, 5, 20, 15) -> (xmin - 1, ymin - 1, xmax, ymax):
    # 11 pixel columns 10..20 (1-based) = 0-based 9..19 = continuous [9, 20).
    assert target["boxes"].tolist() == [[9, 4, 20, 15], [0, 0, 40, 30]]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")] == [11, 14]
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == 1 and target["orig_size"] == (30, 40)


def test_class_order_is_the_devkits():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor" and VOC_CLASSES[14] == "person"


def test_difficult_dropped_for_training_kept_for_evaluation(tmp_path):
    make_devkit(tmp_path)
    train = VOCDetection(tmp_path, (("2007", "trainval"),))
    assert train[0][1]["labels"].tolist() == [11]
    gt = train.coco_gt()
    assert [a["difficult"] for a in gt["annotations"]] == [0, 1, 0]
    assert [a["ignore"] for a in gt["annotations"]] == [0, 1, 0]
    # bbox [x1, y1, w, h] continuous: the devkit's width xmax - xmin + 1 = 11.
    assert gt["annotations"][0]["bbox"] == [9, 4, 11, 11] and gt["annotations"][0]["category_id"] == 12
    assert [im["id"] for im in gt["images"]] == [1, 2, 3]
    assert gt["categories"][0] == {"id": 1, "name": "aeroplane"}
    assert train.label_to_category_id(11) == 12 and train.category_id_to_label(12) == 11


def test_empty_image_is_valid(tmp_path):
    make_devkit(tmp_path)
    _, target = VOCDetection(tmp_path, (("2007", "trainval"),))[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["difficult"].shape == (0,)


def test_07_plus_12_concatenates_with_unique_ids(tmp_path):
    make_devkit(tmp_path, IMAGES[:2], "2007", "trainval")
    make_devkit(tmp_path, [("2008_000001", (20, 20), [("cat", (2, 2, 8, 8), False)])], "2012", "trainval")
    make_devkit(tmp_path, IMAGES[2:], "2007", "test")
    train = build_dataset("voc", "train", root=tmp_path, augment=False)
    test = build_dataset("voc", "test", root=tmp_path / "VOCdevkit")
    assert len(train) == 3 and len(test) == 1
    assert [r["image_id"] for r in train.records] == [1, 2, 3]
    assert train[2][1]["labels"].tolist() == [VOC_CLASSES.index("cat")]
    assert test.keep_difficult and not train.keep_difficult


def test_missing_devkit_and_set_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit"):
        VOCDetection(tmp_path / "nowhere")
    make_devkit(tmp_path)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCDetection(tmp_path, (("2007", "test"),))


BAD_XML = {
    "no size": ('<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin>'
                '<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>', "missing <size>"),
    "xmin >= xmax": (voc_xml(20, 20, [("dog", (8, 2, 8, 6), False)]), "xmin >= xmax"),
    "outside": (voc_xml(20, 20, [("dog", (5, 5, 30, 10), False)]), "outside the image"),
    "unknown class": (voc_xml(20, 20, [("unicorn", (1, 1, 5, 5), False)]), "unknown class"),
    "malformed": ("<annotation><size>", "malformed XML"),
    "not a number": (voc_xml(20, 20, [("dog", ("a", 1, 5, 5), False)]), "must be a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_XML))
def test_bad_annotation_names_file_and_problem(tmp_path, case):
    base = make_devkit(tmp_path)
    text, problem = BAD_XML[case]
    (base / "Annotations" / "000002.xml").write_text(text)
    with pytest.raises(BadSampleError, match=problem) as info:
        VOCDetection(tmp_path)
    assert "000002.xml" in str(info.value)


def test_missing_image_and_missing_xml(tmp_path):
    base = make_devkit(tmp_path / "a")
    (base / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(BadSampleError, match=r"000002\.jpg: image file not found"):
        VOCDetection(tmp_path / "a")
    base = make_devkit(tmp_path / "b")
    (base / "Annotations" / "000003.xml").unlink()
    with pytest.raises(BadSampleError, match=r"000003\.xml: annotation file not found"):
        VOCDetection(tmp_path / "b")


def test_corrupt_and_truncated_images_fail_at_load_naming_the_file(tmp_path):
    base = make_devkit(tmp_path, [("000001", (40, 30), []), ("000002", (40, 30), [])])
    (base / "JPEGImages" / "000001.jpg").write_bytes(b"this is not a jpeg")
    data = (base / "JPEGImages" / "000002.jpg").read_bytes()
    (base / "JPEGImages" / "000002.jpg").write_bytes(data[: len(data) // 2])
    dataset = VOCDetection(tmp_path)
    with pytest.raises(BadSampleError, match=r"000001\.jpg: cannot decode image"):
        dataset[0]
    with pytest.raises(BadSampleError, match=r"000002\.jpg: cannot decode image"):
        dataset[1]


def test_skip_bad_warns_once_per_item_and_counts(tmp_path, caplog):
    base = make_devkit(tmp_path)
    (base / "Annotations" / "000001.xml").write_text(BAD_XML["no size"][0])
    (base / "JPEGImages" / "000003.jpg").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="fcos_from_scratch.data"):
        dataset = VOCDetection(tmp_path, skip_bad=True)
    skipped_lines = [r for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(skipped_lines) == 1 and "000001.xml" in skipped_lines[0].getMessage()
    assert "1 skipped" in caplog.records[-1].getMessage()  # the one-line summary
    assert len(dataset) == 2 and dataset.report.num_images == 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fcos_from_scratch.data"):
        _, target = dataset[1]  # 000003 is corrupt: skipped, the next good item comes instead
        dataset[1]  # known bad now: no second warning
    assert target["image_id"] == 1
    assert len([r for r in caplog.records if "000003.jpg" in r.getMessage()]) == 1
    assert len(dataset.report.skipped) == 2 and "2 skipped" in dataset.report.summary()


def test_small_overhang_is_clipped_and_counted(tmp_path):
    # xmin = 0 (a common devkit typo) gives x1 = -1: within the 1 px tolerance -> clipped to 0.
    make_devkit(tmp_path, [("000001", (20, 20), [("dog", (0, 2, 21, 8), False)])])
    dataset = VOCDetection(tmp_path)
    assert dataset[0][1]["boxes"].tolist() == [[0, 1, 20, 8]]
    assert dataset.report.clipped_boxes == 1 and dataset.report.dropped_boxes == 0
