"""Transforms on ``(image, target)`` pairs that keep the boxes exactly right.

``image`` is a (3, H, W) float tensor; ``target["boxes"]`` are (M, 4) xyxy continuous
pixels. Every geometric transform maps box corners with the same map as the pixels
(pixel ``(col, row)`` has centre ``(col + 0.5, row + 0.5)``, ``docs/CONVENTIONS.md``),
so a box drawn around an object stays around it. Boxes that leave the image are
dropped with all their per-box fields; degenerate ones (< ``MIN_BOX_SIZE`` px wide or
high) are dropped and counted in ``transform.dropped``.

Randomness comes from Python's ``random`` module, which ``DataLoader`` seeds in each
worker. Photometric transforms (colour jitter, SVHN colour policy) are in
``color.py``.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..models.images import IMAGENET_MEAN, IMAGENET_STD  # one home for the statistics
from ..ops import clip_boxes_to_image
from .color import check_probability

PER_BOX_KEYS = ("boxes", "labels", "difficult", "iscrowd")
MIN_BOX_SIZE = 1.0  # px; smaller boxes after a crop or affine carry no object


def select_boxes(target: dict, keep: torch.Tensor) -> dict:
    """Index every per-box field of ``target`` with the (M,) mask or index ``keep``."""
    out = dict(target)
    for key in PER_BOX_KEYS:
        if key in out:
            out[key] = out[key][keep]
    return out


def _drop_small(target: dict, counter) -> dict:
    boxes = target["boxes"]
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIZE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIZE)
    counter.dropped += int((~keep).sum())
    return select_boxes(target, keep)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target


class Resize:
    """Resize by the shorter side with a cap on the longer side, or to a fixed size.

    ``Resize(800, 1333)``: scale ``s = min(800 / min(H, W), 1333 / max(H, W))``
    ([fcos-light]); a tuple ``min_size`` picks one value at random per image (multi-scale
    training). ``Resize(size=(h, w))``: exactly that size. Boxes scale by
    ``(W' / W, H' / H)``; bilinear interpolation with antialiasing.
    """

    def __init__(self, min_size: Union[int, Sequence[int]] = 800, max_size: int = 1333,
                 size: Optional[Tuple[int, int]] = None):
        self.min_sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if size is None and (not self.min_sizes or min(self.min_sizes) <= 0 or max_size <= 0):
            raise ValueError(f"min_size and max_size must be positive, got {min_size}, {max_size}")
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise ValueError(f"size must be a positive (H, W), got {size!r}")
        self.max_size = max_size
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        if self.size is not None:
            return self.size
        min_size = random.choice(self.min_sizes)
        scale = min(min_size / min(height, width), self.max_size / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, image, target):
        _, height, width = image.shape
        new_h, new_w = self.output_size(height, width)
        if (new_h, new_w) != (height, width):
            image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                                  align_corners=False, antialias=True)[0]  # (3, H', W')
            scale = torch.tensor([new_w / width, new_h / height] * 2)
            target = dict(target, boxes=target["boxes"] * scale)
        return image, target


def hflip(image: torch.Tensor, target: dict) -> Tuple[torch.Tensor, dict]:
    """Mirror left-right: ``x -> W - x``, so ``(x1, x2) -> (W - x2, W - x1)``."""
    width = image.shape[-1]
    boxes = target["boxes"]
    flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return image.flip(-1), dict(target, boxes=flipped)


class HorizontalFlip:
    """:func:`hflip` with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = check_probability(p)

    def __call__(self, image, target):
        return hflip(image, target) if random.random() < self.p else (image, target)


def crop(image: torch.Tensor, target: dict, top: int, left: int, height: int, width: int):
    """Cut ``image[:, top:top+height, left:left+width]``.

    A box survives when its centre lies inside the crop; survivors are shifted by
    ``(left, top)`` and clipped to the crop. A crop never adds boxes.
    """
    boxes = target["boxes"]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2) (x, y)
    inside = ((centre[:, 0] >= left) & (centre[:, 0] < left + width)
              & (centre[:, 1] >= top) & (centre[:, 1] < top + height))
    target = select_boxes(target, inside)
    shifted = target["boxes"] - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    target["boxes"] = clip_boxes_to_image(shifted, (height, width))
    return image[:, top:top + height, left:left + width], target


class RandomCrop:
    """Crop a random window whose sides are ``U(min_scale, 1)`` of the image's."""

    def __init__(self, min_scale: float = 0.5, p: float = 0.3):
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.min_scale = min_scale
        self.p = check_probability(p)
        self.dropped = 0

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        _, height, width = image.shape
        crop_h = max(1, round(height * random.uniform(self.min_scale, 1.0)))
        crop_w = max(1, round(width * random.uniform(self.min_scale, 1.0)))
        top, left = random.randint(0, height - crop_h), random.randint(0, width - crop_w)
        image, target = crop(image, target, top, left, crop_h, crop_w)
        return image, _drop_small(target, self)


def affine_matrix(angle: float, translate: Tuple[float, float], shear: Tuple[float, float],
                  centre: Tuple[float, float]) -> torch.Tensor:
    """The 3x3 map of pixel coordinates ``(x, y, 1)`` for a rotation, shear and shift.

    ``p' = T(translate) C R(angle) Sh(shear) C^-1 p`` with ``C`` the shift to the
    image centre. ``angle`` in degrees, counter-clockwise on screen (y points down,
    so the matrix is ``[[cos, sin], [-sin, cos]]``); ``shear = (sx, sy)`` in degrees
    (``x' = x + tan(sx) y``, ``y' = y + tan(sy) x``).
    """
    a = math.radians(angle)
    cx, cy = centre
    rotate = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0, 0, 1.0]],
                          dtype=torch.float64)
    shear_m = torch.tensor([[1.0, math.tan(math.radians(shear[0])), 0.0],
                            [math.tan(math.radians(shear[1])), 1.0, 0.0], [0, 0, 1.0]], dtype=torch.float64)
    to_centre = torch.tensor([[1.0, 0, -cx], [0, 1.0, -cy], [0, 0, 1.0]], dtype=torch.float64)
    back = torch.tensor([[1.0, 0, cx + translate[0]], [0, 1.0, cy + translate[1]], [0, 0, 1.0]],
                        dtype=torch.float64)
    return back @ rotate @ shear_m @ to_centre


def affine(image: torch.Tensor, target: dict, matrix: torch.Tensor, fill: float = 0.0):
    """Warp ``image`` by the 3x3 pixel map ``matrix``; boxes become the enclosing
    rectangle of their four mapped corners (as in [digits-lab]), clipped to the image; a box
    whose mapped centre leaves the image is dropped.
    """
    _, height, width = image.shape
    # grid_sample wants, for every output pixel, where to read in the input, in
    # [-1, 1] units (align_corners=False: -1 and 1 are the outer pixel edges).
    to_unit = torch.tensor([[2.0 / width, 0, -1.0], [0, 2.0 / height, -1.0], [0, 0, 1.0]], dtype=torch.float64)
    theta = (to_unit @ torch.linalg.inv(matrix) @ torch.linalg.inv(to_unit))[:2]  # (2, 3)
    grid = F.affine_grid(theta[None].to(image.dtype), [1, 3, height, width], align_corners=False)
    warped = F.grid_sample(image[None] - fill, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)[0] + fill  # (3, H, W)
    boxes = target["boxes"].to(torch.float64)
    x1, y1, x2, y2 = boxes.unbind(1)
    corners = torch.stack([torch.stack([x1, y1]), torch.stack([x2, y1]),
                           torch.stack([x1, y2]), torch.stack([x2, y2])])  # (4, 2, M)
    mapped = torch.einsum("ij,cjm->cim", matrix[:2, :2], corners) + matrix[:2, 2, None]  # (4, 2, M)
    lo, hi = mapped.amin(dim=0), mapped.amax(dim=0)  # (2, M)
    new_boxes = torch.stack([lo[0], lo[1], hi[0], hi[1]], dim=1).to(target["boxes"].dtype)  # (M, 4)
    centre = (new_boxes[:, :2] + new_boxes[:, 2:]) / 2
    inside = (centre[:, 0] >= 0) & (centre[:, 0] < width) & (centre[:, 1] >= 0) & (centre[:, 1] < height)
    target = select_boxes(dict(target, boxes=new_boxes), inside)
    target["boxes"] = clip_boxes_to_image(target["boxes"], (height, width))
    return warped, target


class RandomAffine:
    """Random rotation, translation and shear ([digits-lab]: +-10 deg, 10 %, +-2 deg)."""

    def __init__(self, degrees: float = 10.0, translate: float = 0.1, shear: float = 2.0,
                 p: float = 0.3, fill: float = 0.0):
        if degrees < 0 or shear < 0 or not 0.0 <= translate <= 1.0:
            raise ValueError(f"need degrees >= 0, shear >= 0, translate in [0, 1]; got "
                             f"{degrees}, {shear}, {translate}")
        self.degrees, self.translate, self.shear, self.fill = degrees, translate, shear, fill
        self.p = check_probability(p)
        self.dropped = 0

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        _, height, width = image.shape
        matrix = affine_matrix(
            random.uniform(-self.degrees, self.degrees),
            (random.uniform(-self.translate, self.translate) * width,
             random.uniform(-self.translate, self.translate) * height),
            (random.uniform(-self.shear, self.shear), random.uniform(-self.shear, self.shear)),
            (width / 2, height / 2),
        )
        image, target = affine(image, target, matrix, self.fill)
        return image, _drop_small(target, self)


class Normalize:
    """``(image - mean) / std`` per channel (ImageNet statistics by default)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 entries and std > 0, got {mean}, {std}")
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image, target):
        return (image - self.mean) / self.std, target


class AugmentSchedule:
    """Augmentations that switch off for the last ``off_last_epochs`` epochs ([digits-lab]).

    Args:
        augment: random transforms, run while augmentation is on.
        always: deterministic transforms run every time after them (resize, normalise).
        total_epochs: length of training; 0 means the switch never fires.
        off_last_epochs: ``E``; epochs ``>= total_epochs - E`` run ``always`` only.

    Call :meth:`set_epoch` (or ``dataset.set_epoch``) before each epoch. DataLoader
    workers hold a copy of the dataset made when the epoch's iterator starts, so keep
    ``persistent_workers=False`` (the default) for the switch to reach them.
    """

    def __init__(self, augment: Sequence[Callable], always: Sequence[Callable] = (),
                 total_epochs: int = 0, off_last_epochs: int = 0):
        if off_last_epochs < 0 or total_epochs < 0:
            raise ValueError(f"epochs must be >= 0, got total {total_epochs}, off_last {off_last_epochs}")
        self.augment, self.always = Compose(augment), Compose(always)
        self.total_epochs, self.off_last_epochs = total_epochs, off_last_epochs
        self.enabled = True

    def set_epoch(self, epoch: int) -> None:
        # total_epochs = 0 (unknown length) leaves augmentation on.
        last = self.total_epochs > 0 and epoch >= self.total_epochs - self.off_last_epochs
        self.enabled = not (self.off_last_epochs and last)

    def __call__(self, image, target):
        if self.enabled:
            image, target = self.augment(image, target)
        return self.always(image, target)
