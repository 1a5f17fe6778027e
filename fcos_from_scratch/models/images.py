"""Batched detector inputs: images normalised and padded, ground truth padded.

Every detector here takes a list of images of different sizes (or one padded
tensor) and a list of per-image targets; its first step turns them into
rectangular tensors. Both are shared by all detectors:

* :class:`ImagePreprocessor` normalises with the ImageNet mean and std (as
  torchvision's detection transform does), pads bottom/right to a multiple of
  ``size_divisible`` and sets the padding to 0 *after* normalising, so a list and
  the same images pre-padded into a tensor give the same network input.
* :func:`pad_ground_truth` stacks the per-image boxes and labels into (B, M_max)
  tensors with a validity mask, so target assignment runs on the whole batch at
  once with no Python loop over images.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # [torchvision] ImageNet statistics, RGB in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)


def stack_images(images) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """A (B, 3, H, W) tensor (lists are zero-padded bottom/right) and the B sizes (H, W)."""
    if torch.is_tensor(images) and images.dim() == 4 and images.shape[1] == 3:
        return images, [tuple(images.shape[-2:])] * len(images)
    if not isinstance(images, (list, tuple)) or not images or any(
            not torch.is_tensor(i) or i.dim() != 3 or i.shape[0] != 3 for i in images):
        got = tuple(images.shape) if torch.is_tensor(images) else [
            tuple(i.shape) if torch.is_tensor(i) else type(i).__name__ for i in images]
        raise ValueError(f"images must be a (B, 3, H, W) tensor or a list of (3, H, W) tensors, got {got}")
    sizes = [tuple(image.shape[-2:]) for image in images]
    batch = images[0].new_zeros(len(images), 3, *map(max, zip(*sizes)))  # (B, 3, H, W)
    for tensor, image in zip(batch, images):
        tensor[:, : image.shape[1], : image.shape[2]] = image
    return batch, sizes


def inside_mask(batch: torch.Tensor, sizes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 inside each image's true (H_b, W_b) and 0 in the padding."""
    rows = torch.arange(batch.shape[-2], device=batch.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(batch.shape[-1], device=batch.device)[None, None, :]  # (1, 1, W)
    true = torch.tensor(sizes, device=batch.device)  # (B, 2)
    inside = (rows < true[:, 0, None, None]) & (cols < true[:, 1, None, None])  # (B, H, W)
    return inside[:, None].to(batch.dtype)


class ImagePreprocessor(nn.Module):
    """Normalise, pad to a multiple of ``size_divisible``, zero the padding.

    Args:
        mean, std: per-channel statistics of RGB images in [0, 1].
        size_divisible: pad height and width up to a multiple of this (32 = the
            stride of C5, so every pyramid level has whole cells).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 size_divisible: int = 32) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"image mean and std need 3 values, got {tuple(mean)} and {tuple(std)}")
        if size_divisible < 1:
            raise ValueError(f"size_divisible must be >= 1, got {size_divisible}")
        self.size_divisible = size_divisible
        # Not persistent: they are configuration, not weights (checkpoints stay the same).
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images, image_sizes: Optional[Sequence[Tuple[int, int]]] = None
                ) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Prepare a batch for the network.

        Args:
            images: (B, 3, H, W) tensor or list of (3, H_b, W_b) tensors in [0, 1].
            image_sizes: B (H, W) true sizes inside a padded tensor (default: full).

        Returns:
            (B, 3, H', W') network input and the B unpadded sizes (H, W).
        """
        batch, sizes = stack_images(images)
        if image_sizes is not None:
            sizes = [tuple(int(v) for v in size) for size in image_sizes]
            if len(sizes) != len(batch):
                raise ValueError(f"image_sizes has {len(sizes)} entries for {len(batch)} images")
        height, width = batch.shape[-2:]
        if any(h > height or w > width or h < 1 or w < 1 for h, w in sizes):
            raise ValueError(f"image_sizes must lie within the batch's (H, W) = {(height, width)}, "
                             f"got {sizes}")
        batch = (batch - self.mean.to(batch.dtype)) / self.std.to(batch.dtype)
        pad_h, pad_w = -height % self.size_divisible, -width % self.size_divisible
        if pad_h or pad_w:
            batch = F.pad(batch, (0, pad_w, 0, pad_h))  # (B, 3, H', W')
        if any(size != (height, width) for size in sizes):
            batch = batch * inside_mask(batch, sizes)  # padding = 0 after normalising
        return batch, sizes


def sizes_from_targets(targets: Optional[Sequence[Dict]], key: str):
    """``[t[key] for t in targets]`` if every target has ``key``, else None."""
    if targets is not None and len(targets) and all(key in t for t in targets):
        return [t[key] for t in targets]
    return None


def pad_ground_truth(targets: Sequence[Dict[str, torch.Tensor]], device=None):
    """Stack per-image ``boxes``/``labels`` into padded (B, M_max) tensors.

    Args:
        targets: B dicts with ``boxes`` (M_b, 4) xyxy pixels and ``labels`` (M_b,)
            int in 0..K-1.

    Returns:
        boxes (B, M, 4) float32, labels (B, M) int64, valid (B, M) bool, with
        M = max(1, max_b M_b); padded rows are zero boxes with ``valid = False``.
    """
    batch = len(targets)
    for index, target in enumerate(targets):
        for key in ("boxes", "labels"):
            if key not in target:
                raise ValueError(f"targets[{index}] has no {key!r} (keys: {sorted(target)})")
        boxes, labels = target["boxes"], target["labels"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{index}]['boxes'] must be (M, 4), got {tuple(boxes.shape)}")
        if labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"targets[{index}]['labels'] must be ({boxes.shape[0]},), got {tuple(labels.shape)}"
            )
    device = device if device is not None else (targets[0]["boxes"].device if targets else None)
    max_boxes = max([1] + [len(t["boxes"]) for t in targets])
    boxes = torch.zeros(batch, max_boxes, 4, dtype=torch.float32, device=device)
    labels = torch.zeros(batch, max_boxes, dtype=torch.int64, device=device)
    valid = torch.zeros(batch, max_boxes, dtype=torch.bool, device=device)
    for index, target in enumerate(targets):  # a copy per image; the maths after it is batched
        count = len(target["boxes"])
        boxes[index, :count] = target["boxes"].to(device=device, dtype=torch.float32)
        labels[index, :count] = target["labels"].to(device=device, dtype=torch.int64)
        valid[index, :count] = True
    return boxes, labels, valid


def check_labels(labels: torch.Tensor, valid: torch.Tensor, num_classes: int) -> None:
    """Raise if a valid ground-truth label lies outside 0..K-1."""
    labels = labels[valid]
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"target labels must be in 0..{num_classes - 1}, "
                         f"got {labels.unique().tolist()}")


def ground_truth_lists(targets: Sequence[Dict[str, torch.Tensor]], device, num_classes: int
                       ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Each image's ground truth as float boxes (M_b, 4) and int64 labels (M_b,), checked.

    The unpadded counterpart of :func:`pad_ground_truth`, for detectors that match
    anchors or proposals image by image (Faster R-CNN, RefineDetLite).

    Raises:
        ValueError: naming ``targets[i]`` when it lacks ``boxes``/``labels``, when their
            shapes disagree, or when a label lies outside 0..K-1.
    """
    boxes, labels = [], []
    for index, target in enumerate(targets):
        if "boxes" not in target or "labels" not in target:
            raise ValueError(f"targets[{index}] needs 'boxes' and 'labels', got keys {sorted(target)}")
        box, label = target["boxes"].to(device, torch.float32), target["labels"].to(device, torch.int64)
        if box.dim() != 2 or box.shape[-1] != 4 or label.shape != box.shape[:1]:
            raise ValueError(f"targets[{index}]: boxes must be (M, 4) and labels (M,), got "
                             f"{tuple(box.shape)} and {tuple(label.shape)}")
        check_labels(label, torch.ones_like(label, dtype=torch.bool), num_classes)
        boxes.append(box)
        labels.append(label)
    return boxes, labels
