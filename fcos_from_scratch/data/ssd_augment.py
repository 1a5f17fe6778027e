"""SSD's data augmentation ([ssd] Sec. 2.2 and Sec. 3.6) and a fixed square input.

[refinedetlite] Sec. 5.1 "strictly follow[s] SSD" for augmentation and trains at a
fixed 320×320 input, like [refinedet]. Per training image, in this order:

1. **photometric distortion** (:class:`PhotometricDistort`): random brightness,
   contrast, saturation and hue, each with probability 1/2, and a random channel
   order ("lighting noise"), as the SSD code does;
2. **zoom out** (:class:`Expand`, [ssd] Sec. 3.6 "data augmentation for small
   objects"): with probability 1/2, place the image at a random spot of a canvas
   ``ratio`` ∈ U(1, 4) times larger, filled with the mean pixel;
3. **min-IoU random crop** (:class:`MinIoURandomCrop`, [ssd] Sec. 2.2): pick one of
   {keep the image, min IoU 0.1, 0.3, 0.5, 0.7, 0.9, any patch} at random; sample a
   patch with sides in [0.3, 1] of the image and aspect ratio h/w in [1/2, 2] whose
   IoU with at least one ground-truth box reaches the minimum (the original Caffe
   SSD's rule; mmdetection asks it of every box); keep the boxes whose centre lies
   in the patch, clipped to it; 50 tries, then the image is kept;
4. **horizontal flip** with probability 1/2, only where the dataset allows it (not
   for digits: a mirrored digit is not a digit);
5. **resize** to ``input_size`` × ``input_size`` (aspect ratio not kept, as SSD).

Boxes move with the pixels by the same maps as ``transforms.py``; boxes narrower or
lower than ``MIN_BOX_SIZE`` after a crop are dropped with their labels and counted
in ``dropped``. Randomness comes from Python's ``random`` module, like every
transform here (``DataLoader`` seeds it per worker; ``random.seed`` makes a run
repeatable).

Evaluation images get step 5 only, a pure resize, so detections map back to the
original image exactly (``engine.loop.targets_in_original_frame`` and each
detector's post-processing scale by (W / input_size, H / input_size)).
"""

from __future__ import annotations

import random
from typing import Optional, Sequence, Tuple

import torch

from ..models.images import IMAGENET_MEAN
from ..ops import box_iou
from .color import adjust_contrast, adjust_hue, adjust_saturation, check_probability
from .transforms import Compose, HorizontalFlip, Resize, _drop_small, crop

__all__ = ["PhotometricDistort", "Expand", "MinIoURandomCrop", "SSD_MIN_IOUS", "ssd_augmentation",
           "fixed_size_resize"]

# [ssd] Sec. 2.2: None = keep the whole image, a number = the patch's minimum IoU with
# an object, 0.0 = any patch ("randomly sample a patch").
SSD_MIN_IOUS: Tuple[Optional[float], ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)


class PhotometricDistort:
    """SSD's photometric distortion on a (3, H, W) image in [0, 1]; boxes untouched.

    Each step with probability 1/2: brightness + U(−32, 32)/255, contrast × U(1/2, 3/2)
    (before or after the colour steps, at random), saturation × U(1/2, 3/2), hue
    ± U(0, 18)° and a random permutation of the channels. Values stay in [0, 1].
    """

    def __init__(self, brightness: float = 32 / 255, contrast: Tuple[float, float] = (0.5, 1.5),
                 saturation: Tuple[float, float] = (0.5, 1.5), hue_degrees: float = 18.0,
                 swap_channels: bool = True):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.hue, self.swap_channels = hue_degrees / 360.0, swap_channels

    def __call__(self, image: torch.Tensor, target: dict):
        if random.random() < 0.5:
            image = (image + random.uniform(-self.brightness, self.brightness)).clamp(0.0, 1.0)
        contrast_first = random.random() < 0.5
        if contrast_first and random.random() < 0.5:
            image = adjust_contrast(image, random.uniform(*self.contrast))
        if random.random() < 0.5:
            image = adjust_saturation(image, random.uniform(*self.saturation))
        if random.random() < 0.5:
            image = adjust_hue(image, random.uniform(-self.hue, self.hue))
        if not contrast_first and random.random() < 0.5:
            image = adjust_contrast(image, random.uniform(*self.contrast))
        if self.swap_channels and random.random() < 0.5:
            order = list(range(3))
            random.shuffle(order)
            image = image[order]
        return image, target


class Expand:
    """Zoom out ([ssd] Sec. 3.6): the image on a canvas ``ratio`` × larger, mean-filled.

    Args:
        max_ratio: ratio ~ U(1, max_ratio) per side ([ssd]: 4).
        fill: the canvas colour, (3,) in [0, 1]: the mean pixel the network
            subtracts (ImageNet's, SSD's (104, 117, 123) BGR / 255).
        p: probability ([ssd]: 1/2).
    """

    def __init__(self, max_ratio: float = 4.0, fill: Sequence[float] = IMAGENET_MEAN, p: float = 0.5):
        if not max_ratio >= 1.0:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio!r}")
        if len(fill) != 3:
            raise ValueError(f"fill must have 3 channel values, got {fill!r}")
        self.max_ratio, self.fill, self.p = max_ratio, tuple(fill), check_probability(p)

    def __call__(self, image: torch.Tensor, target: dict):
        if random.random() >= self.p or self.max_ratio == 1.0:
            return image, target
        _, height, width = image.shape
        ratio = random.uniform(1.0, self.max_ratio)
        new_h, new_w = int(height * ratio), int(width * ratio)
        top, left = random.randint(0, new_h - height), random.randint(0, new_w - width)
        canvas = torch.tensor(self.fill, dtype=image.dtype).view(3, 1, 1).repeat(1, new_h, new_w)
        canvas[:, top:top + height, left:left + width] = image  # (3, H', W')
        shift = torch.tensor([left, top, left, top], dtype=target["boxes"].dtype)
        return canvas, dict(target, boxes=target["boxes"] + shift)


class MinIoURandomCrop:
    """[ssd] Sec. 2.2 patch sampling (see the module docstring).

    Args:
        min_ious: the choices, drawn uniformly (:data:`SSD_MIN_IOUS`).
        min_scale: the patch's sides are U(min_scale, 1) of the image's ([ssd]: 0.3).
        max_aspect: patch h / w in [1 / max_aspect, max_aspect] ([ssd]: 2).
        max_trials: tries per image before keeping it as it is.

    Attributes:
        dropped: boxes removed for being under ``MIN_BOX_SIZE`` after a crop.
    """

    def __init__(self, min_ious: Sequence[Optional[float]] = SSD_MIN_IOUS, min_scale: float = 0.3,
                 max_aspect: float = 2.0, max_trials: int = 50):
        if not min_ious or any(v is not None and not 0.0 <= v <= 1.0 for v in min_ious):
            raise ValueError(f"min_ious must be a non-empty list of None or numbers in [0, 1], got {min_ious!r}")
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale!r}")
        self.min_ious, self.min_scale, self.max_aspect = tuple(min_ious), min_scale, max_aspect
        self.max_trials = max_trials
        self.dropped = 0

    def sample_patch(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """A random (top, left, h, w) within the aspect-ratio limits (or the whole image)."""
        for _ in range(self.max_trials):
            patch_w = random.uniform(self.min_scale * width, width)
            patch_h = random.uniform(self.min_scale * height, height)
            if 1.0 / self.max_aspect <= patch_h / patch_w <= self.max_aspect:
                patch_h, patch_w = max(1, int(patch_h)), max(1, int(patch_w))
                return random.randint(0, height - patch_h), random.randint(0, width - patch_w), patch_h, patch_w
        return 0, 0, height, width

    def __call__(self, image: torch.Tensor, target: dict):
        boxes = target["boxes"]
        if boxes.numel() == 0:  # nothing to keep an overlap with
            return image, target
        _, height, width = image.shape
        min_iou = random.choice(self.min_ious)
        if min_iou is None:
            return image, target
        for _ in range(self.max_trials):
            top, left, patch_h, patch_w = self.sample_patch(height, width)
            patch = torch.tensor([[left, top, left + patch_w, top + patch_h]], dtype=boxes.dtype)
            if float(box_iou(patch, boxes).max()) < min_iou:
                continue  # no object overlaps the patch enough
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2) (x, y)
            inside = ((centre[:, 0] >= left) & (centre[:, 0] < left + patch_w)
                      & (centre[:, 1] >= top) & (centre[:, 1] < top + patch_h))
            if not bool(inside.any()):
                continue  # the patch would hold no object
            image, target = crop(image, target, top, left, patch_h, patch_w)
            return image, _drop_small(target, self)
        return image, target


def fixed_size_resize(input_size: int) -> Resize:
    """Resize every image to ``input_size`` × ``input_size`` (boxes scaled by W' / W, H' / H)."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    return Resize(size=(input_size, input_size))


def ssd_augmentation(allow_flip: bool, fill: Sequence[float] = IMAGENET_MEAN,
                     max_expand: float = 4.0) -> Compose:
    """Steps 1-4 of the module docstring (the resize is added by the caller).

    Args:
        allow_flip: whether a mirrored image is still a valid sample of the dataset.
        fill: the zoom-out canvas colour (the mean pixel).
        max_expand: the zoom-out's largest ratio ([ssd]: 4).
    """
    steps = [PhotometricDistort(), Expand(max_expand, fill), MinIoURandomCrop()]
    if allow_flip:
        steps.append(HorizontalFlip(p=0.5))
    return Compose(steps)
