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
