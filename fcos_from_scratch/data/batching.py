"""Batching images of different sizes: pad to a common multiple of 32, keep true sizes.

FPN levels P3..P7 have strides 8..128; padding H and W to a multiple of 32 (as
[fcos-light] did) makes every level's feature map line up with the one below it.
Padding is added at the bottom and right, so box coordinates do not change, and
each image's true ``(H, W)`` is kept in ``image_sizes`` so the model can ignore the
padding (no points on it, boxes clipped to the true size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

SIZE_DIVISIBLE = 32  # [fcos-light]: "width and height are multiples of 32"


@dataclass
class DetectionBatch:
    """A padded batch.

    Attributes:
        images: (B, 3, H_pad, W_pad) float, zero-padded at the bottom and right.
        image_sizes: B true sizes ``(H, W)`` before padding.
        targets: B target dicts, unchanged (see ``data/common.py``).
    """

    images: torch.Tensor
    image_sizes: List[Tuple[int, int]]
    targets: List[dict]

    def to(self, device, non_blocking: bool = False) -> "DetectionBatch":
        """Move images and every tensor in the targets to ``device``."""
        targets = [
            {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
             for k, v in target.items()}
            for target in self.targets
        ]
        return DetectionBatch(self.images.to(device, non_blocking=non_blocking), self.image_sizes, targets)

    def __len__(self) -> int:
        return len(self.image_sizes)


def pad_images(images: Sequence[torch.Tensor], size_divisible: int = SIZE_DIVISIBLE,
               pad_value: float = 0.0) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """Stack (3, H_i, W_i) images into one (B, 3, H_pad, W_pad) tensor.

    ``H_pad = ceil(max_i H_i / size_divisible) * size_divisible`` (same for W).

    Returns:
        ``(batch, image_sizes)`` with ``image_sizes[i] = (H_i, W_i)``.
    """
    if len(images) == 0:
        raise ValueError("images must not be empty")
    if size_divisible <= 0:
        raise ValueError(f"size_divisible must be positive, got {size_divisible}")
    for i, image in enumerate(images):
        if image.dim() != 3 or image.shape[0] != images[0].shape[0]:
            raise ValueError(f"images[{i}] must be (C, H, W) with C = {images[0].shape[0]}, "
                             f"got {tuple(image.shape)}")
    sizes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
    max_h = math.ceil(max(h for h, _ in sizes) / size_divisible) * size_divisible
    max_w = math.ceil(max(w for _, w in sizes) / size_divisible) * size_divisible
    batch = images[0].new_full((len(images), images[0].shape[0], max_h, max_w), pad_value)  # (B, C, H, W)
    for slot, image, (h, w) in zip(batch, images, sizes):
        slot[:, :h, :w].copy_(image)
    return batch, sizes


def collate_detection(batch: Sequence[Tuple[torch.Tensor, dict]],
                      size_divisible: int = SIZE_DIVISIBLE) -> DetectionBatch:
    """``DataLoader(..., collate_fn=collate_detection)``: list of items -> DetectionBatch."""
    images, targets = zip(*batch)
    padded, sizes = pad_images(images, size_divisible)
    return DetectionBatch(padded, sizes, list(targets))


class GroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of images of similar size, so a padded batch wastes little compute.

    A random batch of images 128-320 px tall and wide is almost always padded to
    320 x 320, so the convolutions see ~1.6x the pixels of its images. This
    sampler takes ``window`` batches' worth of indices from ``sampler`` at a time
    (in the sampler's random order), sorts them by their size rounded up to
    ``size_divisible`` (height, then width), cuts them into batches and yields
    those batches in a random order. Like torchvision's ``GroupedBatchSampler``
    (aspect-ratio groups) but by size; the batches' contents still change every
    epoch because the sampler's order does.

    Deterministic: the order depends only on the sampler's order and on
    ``(seed, epoch)``; call :meth:`set_epoch` before each epoch (it forwards the
    epoch to ``sampler``).

    Args:
        sampler: yields dataset indices (e.g. a ``DistributedSampler``).
        sizes: (H, W) of every dataset image, indexed like the dataset.
        batch_size: images per batch; the last batch of a window may be smaller.
        window: batches sorted together (larger = less padding, less mixing).
        seed: seeds the order of the batches.
        size_divisible: the padding granularity of the batches.
    """

    def __init__(self, sampler, sizes: Sequence[Tuple[int, int]], batch_size: int, window: int,
                 seed: int = 0, size_divisible: int = SIZE_DIVISIBLE) -> None:
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be >= 1, got {batch_size} and {window}")
        self.sampler, self.batch_size, self.window, self.seed = sampler, batch_size, window, seed
        self.keys = [(math.ceil(h / size_divisible), math.ceil(w / size_divisible)) for h, w in sizes]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        order = list(self.sampler)
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        span = self.batch_size * self.window
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.keys[i])  # stable sort
            batches = [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
            for b in torch.randperm(len(batches), generator=generator).tolist():
                yield batches[b]

    def __len__(self) -> int:
        count, span = len(self.sampler), self.batch_size * self.window
        full, rest = divmod(count, span)
        return full * self.window + math.ceil(rest / self.batch_size)
