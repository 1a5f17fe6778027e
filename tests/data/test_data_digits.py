"""The generated digits dataset (fcos_from_scratch/data/digits.py): determinism,
annotation correctness, the on-disk cache and the item contract. Tiny splits only."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import ImageFont

from fcos_from_scratch.data import DIGIT_CLASSES, DigitsConfig, DigitsDetection, build_dataset
from fcos_from_scratch.data import digits as digits_module
from fcos_from_scratch.data.digits import ensure_split, generate_image, read_number

TINY = DigitsConfig(num_train=6, num_val=2, num_test=3, min_side=96, max_side=160)


def test_pillow_has_a_scalable_builtin_font():
    font = ImageFont.load_default(size=40)
    left, top, right, bottom = font.getbbox("8")
    assert 20 <= bottom - top <= 40  # a real outline font, not the fixed 11 px bitmap


def test_generation_is_deterministic_and_seed_dependent():
    a_image, a_boxes, a_labels = generate_image(0, "train", 3, TINY)
    b_image, b_boxes, b_labels = generate_image(0, "train", 3, TINY)
    assert np.array_equal(np.asarray(a_image), np.asarray(b_image))
    assert a_boxes == b_boxes and a_labels == b_labels
    c_image, _, _ = generate_image(1, "train", 3, TINY)
    d_image, _, _ = generate_image(0, "val", 3, TINY)
    assert np.asarray(c_image).shape != np.asarray(a_image).shape or not np.array_equal(np.asarray(c_image), np.asarray(a_image))
    assert np.asarray(d_image).shape != np.asarray(a_image).shape or not np.array_equal(np.asarray(d_image), np.asarray(a_image))


def test_boxes_are_inside_disjoint_and_sized_as_configured():
    config = DigitsConfig()
    heights, count = [], 0
    for index in range(40):
        image, boxes, labels = generate_image(5, "train", index, config)
        width, height = image.size
        assert config.min_side <= min(width, height) and max(width, height) <= config.max_side
        assert 1 <= len(boxes) and all(0 <= label <= 9 for label in labels)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            for other in boxes[i + 1:]:  # no two digits overlap
                assert x2 <= other[0] or other[2] <= x1 or y2 <= other[1] or other[3] <= y1
            heights.append(y2 - y1)
        count += len(boxes)
    assert min(heights) < 20 and max(heights) > 60  # sizes span several pyramid levels
    assert count > 60


def test_box_is_the_ink_of_the_digit():
    # Draw one glyph on a flat canvas and compare its box with the ink's extent.
    glyph = digits_module.render_glyph("7", 50, 2, (255, 255, 255, 255), (0, 0, 255, 255))
    alpha = np.asarray(glyph.getchannel("A"))
    rows, cols = np.nonzero(alpha)
    assert rows.min() == 0 and cols.min() == 0  # tight: ink touches every edge
    assert rows.max() == glyph.height - 1 and cols.max() == glyph.width - 1


def test_read_number_sorts_left_to_right():
    boxes = [[50, 0, 60, 10], [0, 5, 10, 15], [20, 0, 30, 10]]
    assert read_number(boxes, [3, 1, 2]) == "123"
    assert read_number([], []) == ""


def test_dataset_contract_and_digit_string(tmp_path):
    dataset = DigitsDetection(tmp_path, "train", TINY)
    assert len(dataset) == 6 and dataset.class_names == DIGIT_CLASSES and dataset.num_classes == 10
    image, target = dataset[0]
    height, width = target["orig_size"]
    assert image.shape == (3, height, width) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["image_id"] == 1
    _, boxes, labels = generate_image(TINY.seed, "train", 0, TINY)
    assert torch.allclose(target["boxes"], torch.tensor(boxes))  # the json round-trips exactly
    assert dataset.digit_string(0) == read_number(boxes, labels)
    gt = dataset.coco_gt()
    assert len(gt["images"]) == 6 and gt["categories"][0] == {"id": 1, "name": "0"}
    assert dataset.label_to_category_id(0) == 1


def test_cache_is_reused_and_regenerated_when_stale(tmp_path, monkeypatch):
    folder = ensure_split(tmp_path, "val", TINY)
    ann = folder / "annotations.json"
    stamp = ann.stat().st_mtime_ns
    assert ensure_split(tmp_path, "val", TINY) == folder and ann.stat().st_mtime_ns == stamp  # reused

    (folder / "images" / "000001.jpg").unlink()  # incomplete -> rebuilt
    ensure_split(tmp_path, "val", TINY)
    assert (folder / "images" / "000001.jpg").is_file()

    ann.write_text("{truncated")  # a torn json -> rebuilt
    ensure_split(tmp_path, "val", TINY)
    assert json.loads(ann.read_text())["info"]["generator_version"] == digits_module.GENERATOR_VERSION

    monkeypatch.setattr(digits_module, "GENERATOR_VERSION", digits_module.GENERATOR_VERSION + 1)
    ensure_split(tmp_path, "val", TINY)  # another generator version -> rebuilt
    assert json.loads(ann.read_text())["info"]["generator_version"] == digits_module.GENERATOR_VERSION

    bigger = DigitsConfig(num_train=6, num_val=3, num_test=3, min_side=96, max_side=160)
    ensure_split(tmp_path, "val", bigger)  # another config -> rebuilt
    assert len(json.loads(ann.read_text())["images"]) == 3
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary folders are gone


def test_other_splits_sizes_do_not_invalidate_a_split(tmp_path):
    folder = ensure_split(tmp_path, "test", TINY)
    stamp = (folder / "annotations.json").stat().st_mtime_ns
    ensure_split(tmp_path, "test", DigitsConfig(num_train=99, num_val=2, num_test=3, min_side=96, max_side=160))
    assert (folder / "annotations.json").stat().st_mtime_ns == stamp


def test_build_dataset_digits_with_default_transforms(tmp_path):
    train = build_dataset("digits", "train", root=tmp_path, config=TINY, epochs=4, no_aug_epochs=1)
    assert train.transforms.enabled
    train.set_epoch(3)
    assert not train.transforms.enabled
    image, target = train[1]
    assert image.shape[0] == 3 and target["boxes"].shape[1] == 4
    test = build_dataset("digits", "test", root=tmp_path, config=TINY, min_size=64, max_size=100)
    image, _ = test[0]
    assert min(image.shape[1:]) == 64 or max(image.shape[1:]) == 100


def test_bad_config_and_split():
    with pytest.raises(ValueError, match="split"):
        digits_module.check_split("training")
    with pytest.raises(ValueError, match="min_side"):
        DigitsConfig(min_side=10)
    with pytest.raises(ValueError, match="digit_height"):
        DigitsConfig(digit_height=(50, 20))
    with pytest.raises(ValueError, match="num_val"):
        DigitsConfig(num_val=-1)


def test_dataloader_batches_and_pickles(tmp_path):
    import pickle

    from fcos_from_scratch.data import collate_detection

    dataset = build_dataset("digits", "train", root=tmp_path, config=TINY)
    clone = pickle.loads(pickle.dumps(dataset))  # what spawn-started workers receive
    assert torch.equal(clone[2][1]["labels"], dataset.records[2]["target"]["labels"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate_detection)
    batch = next(iter(loader))
    assert batch.images.shape[0] == 3 and batch.images.shape[2] % 32 == 0 and batch.images.shape[3] % 32 == 0
    for image_size, target in zip(batch.image_sizes, batch.targets):
        height, width = image_size
        assert (target["boxes"][:, 2] <= width).all() and (target["boxes"][:, 3] <= height).all()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the split is drawn by 2 processes only on >= 2 cores")
def test_drawing_processes_leave_signals_to_the_parent(tmp_path):
    """The trainer's SIGTERM handler raises KeyboardInterrupt; forked drawing workers
    used to inherit it, so closing the pool (SIGTERM) printed a traceback per worker
    into every fresh run's log. Generate a split big enough for the pool under such
    a handler: nothing may reach stderr."""
    script = (
        "import signal, sys\n"
        "def interrupt(signum, frame):\n"
        "    raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, interrupt)\n"
        "from fcos_from_scratch.data.digits import DigitsConfig, ensure_split\n"
        "cfg = DigitsConfig(num_train=6, num_val=200, num_test=3, min_side=64, max_side=96)\n"
        "ensure_split(sys.argv[1], 'val', cfg)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                            text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr, result.stderr
    assert len(json.loads((tmp_path / "digits" / "val" / "annotations.json").read_text())["images"]) == 200
