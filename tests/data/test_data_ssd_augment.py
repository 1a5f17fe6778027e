"""SSD augmentation ([ssd]) and the fixed square input of [refinedetlite], with the config fields."""

import random

import pytest
import torch

from fcos_from_scratch.config import TrainConfig
from fcos_from_scratch.data import build_transforms
from fcos_from_scratch.data.ssd_augment import (
    SSD_MIN_IOUS,
    Expand,
    MinIoURandomCrop,
    PhotometricDistort,
    ssd_augmentation,
)
from fcos_from_scratch.data.transforms import HorizontalFlip
from fcos_from_scratch.engine.loop import targets_in_original_frame
from fcos_from_scratch.models.images import IMAGENET_MEAN
from fcos_from_scratch.ops import box_iou


def _sample(height=120, width=160):
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    target = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 70.0], [60.0, 30.0, 150.0, 110.0],
                                     [100.0, 5.0, 104.0, 9.0]]),
              "labels": torch.tensor([3, 7, 1]), "image_id": 5, "orig_size": (height, width)}
    return image, target


def test_ssd_pipeline_boxes_stay_inside_and_labels_follow():
    transform = build_transforms("voc", train=True, augmentation="ssd", input_size=64)
    random.seed(0)
    for _ in range(60):
        image, target = transform(*_sample())
        assert image.shape == (3, 64, 64)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        boxes = target["boxes"]
        assert boxes.shape[0] == target["labels"].shape[0]
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(target["labels"].tolist()) <= {3, 7, 1}


def test_ssd_is_deterministic_given_the_seed():
    transform = build_transforms("voc", train=True, augmentation="ssd", input_size=64)
    runs = []
    for _ in range(2):
        random.seed(123)
        runs.append([transform(*_sample()) for _ in range(5)])
    for (a_img, a_t), (b_img, b_t) in zip(*runs):
        assert torch.equal(a_img, b_img) and torch.equal(a_t["boxes"], b_t["boxes"])
    random.seed(124)
    other = [transform(*_sample()) for _ in range(5)]
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(runs[0], other))


def test_min_iou_crop_keeps_the_overlap_and_drops_outside_boxes():
    image, target = _sample(200, 200)
    for min_iou in (0.1, 0.3, 0.5):
        crop = MinIoURandomCrop(min_ious=(min_iou,), max_trials=200)
        random.seed(1)
        for _ in range(20):
            out_image, out = crop(image, target)
            if out_image.shape == image.shape:
                continue  # no patch found: the image is kept unchanged
            # the patch, in original coordinates, overlaps some object by >= min_iou: the
            # kept boxes were shifted by the patch's (left, top); find it from the pixels.
            _, h, w = out_image.shape
            found = [(t, l) for t in range(0, 201 - h) for l in range(0, 201 - w)
                     if torch.equal(image[:, t:t + h, l:l + w], out_image)]
            top, left = found[0]
            patch = torch.tensor([[left, top, left + w, top + h]], dtype=torch.float32)
            assert float(box_iou(patch, target["boxes"]).max()) >= min_iou - 1e-6
            # survivors are exactly the boxes whose centre is inside the patch
            centre = (target["boxes"][:, :2] + target["boxes"][:, 2:]) / 2
            inside = ((centre[:, 0] >= left) & (centre[:, 0] < left + w)
                      & (centre[:, 1] >= top) & (centre[:, 1] < top + h))
            assert out["labels"].tolist() == target["labels"][inside].tolist()
            break
        else:
            pytest.fail(f"no crop at min IoU {min_iou}")


def test_crop_drops_degenerate_boxes_with_their_labels():
    # A 4×4 box clipped by the patch edge to under 1 px is dropped and counted.
    image = torch.zeros(3, 100, 100)
    target = {"boxes": torch.tensor([[0.0, 0.0, 60.0, 60.0], [58.5, 10.0, 62.5, 14.0]]),
              "labels": torch.tensor([4, 9])}
    crop = MinIoURandomCrop(min_ious=(0.0,), min_scale=1.0)  # patch = whole image ...
    crop.sample_patch = lambda h, w: (0, 0, 100, 59)  # ... forced: cut at x = 59
    _, out = crop(image, target)
    # box 2's centre x = 60.5 >= 59: gone with its label; box 1 clipped to x2 = 59
    assert out["labels"].tolist() == [4] and out["boxes"].tolist() == [[0.0, 0.0, 59.0, 60.0]]
    target = {"boxes": torch.tensor([[0.0, 0.0, 60.0, 60.0], [58.2, 10.0, 59.6, 14.0]]),
              "labels": torch.tensor([4, 9])}
    _, out = crop(image, target)  # centre 58.9 inside, clipped to 58.2..59: 0.8 px wide
    assert out["labels"].tolist() == [4] and crop.dropped == 1


def test_crop_of_an_image_without_boxes_is_the_identity():
    image = torch.rand(3, 30, 40)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    out_image, out = MinIoURandomCrop()(image, empty)
    assert out_image is image and out["boxes"].shape == (0, 4)


def test_expand_fills_with_the_mean_and_shifts_boxes():
    image, target = _sample(40, 50)
    random.seed(3)
    out_image, out = Expand(max_ratio=3.0, p=1.0)(image, target)
    _, h, w = out_image.shape
    assert h >= 40 and w >= 50 and (h, w) != (40, 50)
    shift = out["boxes"][0] - target["boxes"][0]
    left, top = int(shift[0]), int(shift[1])
    assert torch.equal(out_image[:, top:top + 40, left:left + 50], image)  # the image moved by the shift
    torch.testing.assert_close(out["boxes"] - target["boxes"], shift.expand(3, 4))
    corner = out_image[:, 0, 0] if (top, left) != (0, 0) else out_image[:, -1, -1]
    torch.testing.assert_close(corner, torch.tensor(IMAGENET_MEAN))


def test_photometric_distortion_keeps_geometry_and_range():
    image, target = _sample()
    random.seed(0)
    for _ in range(10):
        out_image, out = PhotometricDistort()(image, target)
        assert out_image.shape == image.shape and out is target
        assert 0.0 <= float(out_image.min()) and float(out_image.max()) <= 1.0


def test_digits_are_never_flipped():
    assert not any(isinstance(step, HorizontalFlip) for step in ssd_augmentation(False).transforms)
    assert any(isinstance(step, HorizontalFlip) for step in ssd_augmentation(True).transforms)
    for name, flips in [("digits", False), ("digits_imbalanced", False), ("voc", True), ("coco", True)]:
        schedule = build_transforms(name, train=True, augmentation="ssd", input_size=320)
        (pipeline,) = schedule.augment.transforms
        assert any(isinstance(s, HorizontalFlip) for s in pipeline.transforms) == flips, name
    assert SSD_MIN_IOUS == (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)


def test_input_size_resizes_eval_images_and_maps_back_to_the_original_frame():
    transform = build_transforms("digits", train=False, input_size=320)
    image, target = _sample(120, 160)
    out_image, out = transform(image, target)
    assert out_image.shape == (3, 320, 320)
    # x scales by 320 / 160 = 2, y by 320 / 120 = 8/3: box 1 (10, 20, 50, 70) -> (20, 53.33, 100, 186.67)
    torch.testing.assert_close(out["boxes"][0], torch.tensor([20.0, 160 / 3, 100.0, 560 / 3]))
    # the evaluator's inverse (image_size -> orig_size) restores the boxes on disk
    back = targets_in_original_frame([dict(out, image_size=(320, 320))])[0]
    torch.testing.assert_close(back["boxes"], target["boxes"])
    default = build_transforms("digits", train=False)(image, target)[0]
    assert default.shape == image.shape  # input_size = 0: the dataset's own size


@pytest.mark.parametrize("kwargs, message", [
    (dict(augmentation="ssd"), "needs input_size"),
    (dict(augmentation="mosaic", input_size=320), "augmentation must be one of"),
    (dict(input_size=-1), "input_size must be an int >= 0"),
    (dict(input_size=320, min_size=512), "both resize"),
])
def test_build_transforms_rejects_bad_combinations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_transforms("voc", train=True, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(augmentation="ssd"), "needs input_size > 0"),
    (dict(augmentation="SSD", input_size=320), "augmentation must be one of"),
    (dict(input_size=-320), "input_size must be >= 0"),
    (dict(input_size=320, min_size=512), "set one of them"),
    (dict(dataset="digits_balanced"), "dataset must be one of"),
])
def test_train_config_validates_the_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_train_config_accepts_the_refinedetlite_data_settings():
    config = TrainConfig(dataset="digits_imbalanced", augmentation="ssd", input_size=320)
    assert (config.dataset, config.augmentation, config.input_size) == ("digits_imbalanced", "ssd", 320)
    assert TrainConfig().augmentation == "default" and TrainConfig().input_size == 0
