"""Box-aware transforms, colour ops and batching (fcos_from_scratch/data/transforms.py,
color.py, batching.py): reference values, properties and edge cases."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from fcos_from_scratch.data import color
from fcos_from_scratch.data.batching import collate_detection, pad_images
from fcos_from_scratch.data.transforms import (
    AugmentSchedule, HorizontalFlip, Normalize, RandomAffine, RandomCrop, Resize,
    affine, affine_matrix, crop, hflip,
)


def make_target(boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.arange(len(boxes)) if labels is None else torch.tensor(labels)
    return {"boxes": boxes, "labels": labels.long(), "difficult": torch.zeros(len(boxes), dtype=torch.bool),
            "image_id": 7, "orig_size": (0, 0)}


def box_image(height, width, boxes):
    """A black image with each box painted white (box pixels = those whose centre is inside)."""
    image = torch.zeros(3, height, width)
    for x1, y1, x2, y2 in boxes:
        image[:, int(y1):int(y2), int(x1):int(x2)] = 1.0
    return image


# --- flip -------------------------------------------------------------------

def test_hflip_reference_values():
    # W = 10: x -> 10 - x, so (1, 2, 4, 5) -> (10 - 4, 2, 10 - 1, 5) = (6, 2, 9, 5).
    _, target = hflip(torch.zeros(3, 6, 10), make_target([[1, 2, 4, 5]]))
    assert target["boxes"].tolist() == [[6, 2, 9, 5]]


def test_hflip_moves_pixels_and_boxes_together():
    image = box_image(6, 10, [[1, 2, 4, 5]])
    flipped, target = hflip(image, make_target([[1, 2, 4, 5]]))
    assert torch.equal(flipped, box_image(6, 10, target["boxes"].tolist()))


def test_hflip_twice_is_identity():
    image = torch.rand(3, 7, 11)
    target = make_target([[0.5, 1.25, 3.0, 6.0], [2, 0, 11, 7]])
    image2, target2 = hflip(*hflip(image, target))
    assert torch.equal(image2, image)
    assert torch.allclose(target2["boxes"], target["boxes"])
    assert torch.equal(target2["labels"], target["labels"])


def test_hflip_probability_zero_and_one():
    image, target = torch.rand(3, 4, 5), make_target([[0, 0, 1, 1]])
    assert HorizontalFlip(p=0.0)(image, target)[1]["boxes"].tolist() == [[0, 0, 1, 1]]
    assert HorizontalFlip(p=1.0)(image, target)[1]["boxes"].tolist() == [[4, 0, 5, 1]]
    with pytest.raises(ValueError, match="probability"):
        HorizontalFlip(p=1.5)


# --- resize -----------------------------------------------------------------

def test_resize_shorter_side_with_cap_reference():
    # (H, W) = (100, 200): 800 / 100 = 8 would make W = 1600 > 1333, so the cap wins:
    # s = 1333 / 200 = 6.665 -> (H, W) = (round(666.5), 1333) = (666, 1333) (round half even).
    image, target = Resize(800, 1333)(torch.rand(3, 100, 200), make_target([[10, 20, 30, 40]]))
    assert image.shape == (3, 666, 1333)
    expected = torch.tensor([[10 * 1333 / 200, 20 * 666 / 100, 30 * 1333 / 200, 40 * 666 / 100]])
    assert torch.allclose(target["boxes"], expected)


def test_resize_shorter_side_without_cap_and_fixed_size():
    image, target = Resize(64, 1333)(torch.rand(3, 32, 40), make_target([[0, 0, 40, 32]]))
    assert image.shape == (3, 64, 80)
    assert target["boxes"].tolist() == [[0, 0, 80, 64]]  # the whole image stays the whole image
    image, target = Resize(size=(50, 20))(torch.rand(3, 25, 40), make_target([[4, 5, 8, 10]]))
    assert image.shape == (3, 50, 20)
    assert torch.allclose(target["boxes"], torch.tensor([[2.0, 10.0, 4.0, 20.0]]))


def test_resize_keeps_box_on_the_same_pixels():
    image = box_image(20, 30, [[6, 5, 12, 10]])
    out, target = Resize(size=(40, 60))(image, make_target([[6, 5, 12, 10]]))
    assert target["boxes"].tolist() == [[12, 10, 24, 20]]
    # The painted block's centre of mass (pixel centres at +0.5) is the box centre:
    # a half-pixel misalignment between image and box maths would shift it.
    mass = out[0]
    rows, cols = torch.meshgrid(torch.arange(40) + 0.5, torch.arange(60) + 0.5, indexing="ij")
    centre = ((mass * cols).sum() / mass.sum(), (mass * rows).sum() / mass.sum())
    assert centre[0].item() == pytest.approx(18.0, abs=1e-4) and centre[1].item() == pytest.approx(15.0, abs=1e-4)
    assert mass[10:20, 12:24].min() > 0.5  # bilinear edge pixels are 0.75 (corners 0.75^2)


def test_resize_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        Resize(0, 100)
    with pytest.raises(ValueError, match="size"):
        Resize(size=(10,))


# --- crop -------------------------------------------------------------------

def test_crop_reference_keeps_boxes_by_centre_and_clips():
    target = make_target([[0, 0, 4, 4],     # centre (2, 2): outside the crop -> dropped
                          [3, 3, 9, 9],     # centre (6, 6): inside -> shifted and clipped
                          [5, 5, 7, 7]], [0, 1, 2])
    image, out = crop(torch.rand(3, 10, 10), target, top=4, left=4, height=4, width=5)
    assert image.shape == (3, 4, 5)
    # (3, 3, 9, 9) - (4, 4) = (-1, -1, 5, 5) -> clipped to W = 5, H = 4: (0, 0, 5, 4).
    assert out["boxes"].tolist() == [[0, 0, 5, 4], [1, 1, 3, 3]]
    assert out["labels"].tolist() == [1, 2]
    assert out["difficult"].tolist() == [False, False]


def test_random_crop_never_adds_boxes_and_keeps_them_inside():
    random.seed(0)
    transform = RandomCrop(min_scale=0.3, p=1.0)
    for _ in range(50):
        boxes = torch.rand(6, 2) * 40
        boxes = torch.cat([boxes, boxes + torch.rand(6, 2) * 20 + 0.5], dim=1)
        image, out = transform(torch.rand(3, 60, 60), make_target(boxes.tolist()))
        height, width = image.shape[1:]
        assert len(out["boxes"]) <= 6 and len(out["labels"]) == len(out["boxes"])
        assert (out["boxes"] >= 0).all() and (out["boxes"][:, 2] <= width).all() and (out["boxes"][:, 3] <= height).all()
        assert ((out["boxes"][:, 2:] - out["boxes"][:, :2]) >= 1.0).all()  # degenerate ones dropped


def test_crop_drops_and_counts_degenerate_boxes():
    random.seed(1)
    transform = RandomCrop(min_scale=1.0, p=1.0)  # full-size crop: nothing moves
    _, out = transform(torch.rand(3, 10, 10), make_target([[2, 2, 2.5, 8], [1, 1, 5, 5]]))
    assert out["boxes"].tolist() == [[1, 1, 5, 5]]
    assert transform.dropped == 1


# --- affine -----------------------------------------------------------------

def test_zero_affine_is_identity():
    image = torch.rand(3, 9, 13)
    target = make_target([[1, 2, 5, 7], [0, 0, 13, 9]])
    matrix = affine_matrix(0.0, (0.0, 0.0), (0.0, 0.0), (6.5, 4.5))
    out, out_target = affine(image, target, matrix)
    assert torch.allclose(out, image, atol=1e-5)
    assert torch.allclose(out_target["boxes"], target["boxes"], atol=1e-5)


def test_affine_integer_translation_reference():
    image = box_image(10, 12, [[2, 3, 5, 6]])
    matrix = affine_matrix(0.0, (3.0, 2.0), (0.0, 0.0), (6.0, 5.0))
    out, target = affine(image, make_target([[2, 3, 5, 6]]), matrix)
    assert torch.allclose(target["boxes"], torch.tensor([[5.0, 5.0, 8.0, 8.0]]), atol=1e-5)
    assert torch.allclose(out, box_image(10, 12, [[5, 5, 8, 8]]), atol=1e-5)


def test_affine_rotation_90_reference():
    # Square 10 x 10, centre (5, 5), 90 deg counter-clockwise on screen: (x, y) -> (y, 10 - x).
    # Box (1, 2, 4, 3): corners map to x in {2, 3}, y in {10 - 1, 10 - 4} -> (2, 6, 3, 9).
    image = box_image(10, 10, [[1, 2, 4, 3]])
    matrix = affine_matrix(90.0, (0.0, 0.0), (0.0, 0.0), (5.0, 5.0))
    out, target = affine(image, make_target([[1, 2, 4, 3]]), matrix)
    assert torch.allclose(target["boxes"], torch.tensor([[2.0, 6.0, 3.0, 9.0]]), atol=1e-5)
    assert torch.allclose(out, box_image(10, 10, [[2, 6, 3, 9]]), atol=1e-4)


def test_affine_box_encloses_the_warped_object():
    random.seed(3)
    transform = RandomAffine(degrees=10, translate=0.1, shear=2, p=1.0)
    for _ in range(20):
        image = box_image(40, 50, [[12, 10, 30, 25]])
        out, target = transform(image, make_target([[12, 10, 30, 25]]))
        assert len(target["boxes"]) == 1
        x1, y1, x2, y2 = target["boxes"][0].tolist()
        assert 0 <= x1 < x2 <= 50 and 0 <= y1 < y2 <= 40
        mass = out[0]
        inside = mass[math.floor(y1):math.ceil(y2), math.floor(x1):math.ceil(x2)].sum()
        assert inside >= mass.sum() - 1e-3  # no object pixel outside its box
        # the enclosing rectangle of a rotated rectangle is at most ~1.35x larger per side
        assert (x2 - x1) < 18 * 1.4 and (y2 - y1) < 15 * 1.6


def test_affine_drops_boxes_whose_centre_leaves_the_image():
    matrix = affine_matrix(0.0, (8.0, 0.0), (0.0, 0.0), (5.0, 5.0))
    _, target = affine(torch.rand(3, 10, 10), make_target([[0, 0, 2, 2], [6, 6, 9, 9]], [0, 1]), matrix)
    assert target["labels"].tolist() == [0]
    assert target["boxes"].tolist() == [[8, 0, 10, 2]]


def test_transforms_accept_images_without_boxes():
    random.seed(0)
    empty = make_target([])
    for transform in (HorizontalFlip(1.0), RandomCrop(p=1.0), RandomAffine(p=1.0), Resize(32, 64),
                      color.ColorJitter(p=1.0), color.SVHNColorPolicy(p=1.0)):
        image, target = transform(torch.rand(3, 20, 24), empty)
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
        assert torch.isfinite(image).all()


# --- colour: reference values from Pillow -------------------------------------

@pytest.fixture(scope="module")
def pil_pair():
    rng = np.random.default_rng(0)
    array = (rng.random((20, 30, 3)) ** 2 * 255).astype(np.uint8)
    return Image.fromarray(array), torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def as_tensor(pil):
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("ours, theirs, tolerance", [
    (color.equalize, ImageOps.equalize, 1e-6),                 # same integer algorithm: exact
    (color.invert, ImageOps.invert, 1e-6),
    (lambda t: color.solarize(t, 128 / 255), lambda p: ImageOps.solarize(p, 128), 1e-6),
    (color.autocontrast, ImageOps.autocontrast, 1.0 / 255),     # Pillow rounds to uint8
    (lambda t: color.adjust_contrast(t, 1.3), lambda p: ImageEnhance.Contrast(p).enhance(1.3), 1.0 / 255),
    (lambda t: color.adjust_brightness(t, 1.3), lambda p: ImageEnhance.Brightness(p).enhance(1.3), 1.0 / 255),
    (lambda t: color.adjust_saturation(t, 0.5), lambda p: ImageEnhance.Color(p).enhance(0.5), 1.0 / 255),
])
def test_colour_ops_match_pillow(pil_pair, ours, theirs, tolerance):
    pil, tensor = pil_pair
    assert (ours(tensor) - as_tensor(theirs(pil))).abs().max() <= tolerance + 1e-6


def test_hue_shift_round_trip_and_full_turn(pil_pair):
    _, tensor = pil_pair
    assert torch.allclose(color.adjust_hue(color.adjust_hue(tensor, 0.3), -0.3), tensor, atol=1e-5)
    assert torch.allclose(color.adjust_hue(tensor, 0.0), tensor, atol=1e-5)
    # pure red shifted by a third of a turn is pure green
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert torch.allclose(color.adjust_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1), atol=1e-5)


def test_photometric_transforms_leave_target_alone_and_stay_in_range(pil_pair):
    random.seed(0)
    _, tensor = pil_pair
    target = make_target([[1, 2, 3, 4]])
    for transform in (color.ColorJitter(p=1.0), color.SVHNColorPolicy(p=1.0)):
        for _ in range(30):
            image, out = transform(tensor, target)
            assert out is target
            assert image.shape == tensor.shape and image.min() >= 0 and image.max() <= 1


def test_svhn_colour_policy_has_only_colour_ops():
    names = {op for sub in color.SVHN_COLOR_POLICY for op, _, _ in sub}
    assert names <= {"Invert", "Equalize", "Solarize", "AutoContrast", "Contrast"}
    assert len(color.SVHN_COLOR_POLICY) == 23  # 25 sub-policies minus the 2 purely geometric ones
    with pytest.raises(ValueError, match="unknown colour op"):
        color.apply_color_op(torch.rand(3, 2, 2), "ShearX", 3)


def test_colour_jitter_rejects_bad_strengths():
    with pytest.raises(ValueError, match="hue"):
        color.ColorJitter(hue=0.7)


# --- normalise, schedule --------------------------------------------------------

def test_normalize_reference():
    image = torch.full((3, 2, 2), 0.5)
    out, _ = Normalize(mean=(0.5, 0.25, 0.0), std=(1.0, 0.5, 0.25))(image, {})
    assert out[:, 0, 0].tolist() == [0.0, 0.5, 2.0]


class Recorder:
    def __init__(self):
        self.calls = 0

    def __call__(self, image, target):
        self.calls += 1
        return image, target


def test_augmentation_switches_off_for_last_epochs():
    augment, always = Recorder(), Recorder()
    schedule = AugmentSchedule([augment], [always], total_epochs=10, off_last_epochs=3)
    for epoch in range(10):
        schedule.set_epoch(epoch)
        schedule(torch.zeros(3, 1, 1), {})
    assert augment.calls == 7 and always.calls == 10
    unknown_length = AugmentSchedule([augment], off_last_epochs=3)  # total_epochs = 0: never switches
    unknown_length.set_epoch(100)
    assert unknown_length.enabled
    with pytest.raises(ValueError, match="epochs"):
        AugmentSchedule([], off_last_epochs=-1)


# --- batching ---------------------------------------------------------------------

def test_padding_keeps_true_sizes_and_pixels():
    images = [torch.rand(3, 33, 50), torch.rand(3, 20, 70)]
    batch = collate_detection([(images[0], make_target([[1, 1, 2, 2]])), (images[1], make_target([]))])
    assert batch.images.shape == (2, 3, 64, 96)  # max H 33 -> 64, max W 70 -> 96
    assert batch.image_sizes == [(33, 50), (20, 70)]
    assert torch.equal(batch.images[0, :, :33, :50], images[0])
    assert batch.images[0, :, 33:].abs().sum() == 0 and batch.images[1, :, :, 70:].abs().sum() == 0
    assert batch.targets[0]["boxes"].tolist() == [[1, 1, 2, 2]]
    assert len(batch) == 2 and batch.to("cpu").images.shape == batch.images.shape


def test_padding_edge_cases():
    padded, sizes = pad_images([torch.rand(3, 32, 64)])
    assert padded.shape == (1, 3, 32, 64) and sizes == [(32, 64)]  # already a multiple: no padding
    with pytest.raises(ValueError, match="empty"):
        pad_images([])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        pad_images([torch.rand(3, 4, 4), torch.rand(1, 4, 4)])
