"""A tiny detector and dataset that follow the project's call convention, for engine tests.

They are small enough that a whole ``fit`` run takes well under a second, yet draw
on every source of randomness the engine must control: shuffled data order
(sampler), random augmentation (global torch RNG in ``__getitem__``), dropout, and
an optimiser with state (AdamW moments).

Convention (same as the real FCOS): train mode ``model(images, targets)`` returns a
dict of scalar losses; eval mode ``model(images)`` returns one dict per image with
``boxes`` (xyxy), ``scores`` and ``labels``.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn
from torch.utils.data import Dataset

IMAGE_SIZE = 16  # (H, W) = (16, 16)
NUM_CLASSES = 3


class TinyDetector(nn.Module):
    """conv -> GroupNorm -> ReLU -> global pool -> dropout -> (class logits, one box).

    Each image predicts a single box (normalised cxcywh through a sigmoid) and a
    class; losses are per-image means, so averaging them over equal-sized
    per-process batches gives the global-batch mean (what DDP needs).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.drop = nn.Dropout(dropout)
        self.cls = nn.Linear(8, num_classes)
        self.box = nn.Linear(8, 4)
        self.scale = nn.Parameter(torch.ones(()))  # a scalar, like FCOS's per-level scales

    def _forward(self, images: torch.Tensor):
        x = torch.relu(self.norm(self.conv(images)))  # (B, 8, H, W)
        x = self.drop(x.mean(dim=(2, 3)))  # (B, 8)
        boxes = torch.sigmoid(self.box(x) * self.scale) * IMAGE_SIZE  # (B, 4) cxcywh
        cx, cy, w, h = boxes.unbind(-1)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)  # (B, 4)
        return self.cls(x), xyxy

    def forward(self, images, targets=None):
        if isinstance(images, (list, tuple)):
            images = torch.stack(list(images))
        logits, boxes = self._forward(images)  # (B, K), (B, 4)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in train mode")
            labels = torch.stack([t["labels"][0] for t in targets])  # (B,)
            gt = torch.stack([t["boxes"][0] for t in targets])  # (B, 4)
            return {
                "loss_cls": nn.functional.cross_entropy(logits, labels),
                "loss_reg": (boxes - gt).abs().mean() / IMAGE_SIZE,
            }
        scores, labels = logits.softmax(-1).max(-1)  # (B,), (B,)
        return [{"boxes": b[None], "scores": s[None], "labels": l[None]}
                for b, s, l in zip(boxes, scores, labels)]


class TinyBoxes(Dataset):
    """``n`` seeded images with one bright square each; label = which third it lies in.

    With ``augment=True`` a random horizontal flip (drawn from the global torch RNG,
    as real transforms do) is applied and the box flipped with it.
    """

    def __init__(self, n: int = 12, seed: int = 0, augment: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 0.2
        self.boxes, self.labels = [], []
        for i in range(n):
            x1, y1 = (int(v) for v in torch.randint(0, IMAGE_SIZE - 5, (2,), generator=g))
            self.images[i, :, y1:y1 + 5, x1:x1 + 5] = 1.0
            self.boxes.append(torch.tensor([[x1, y1, x1 + 5, y1 + 5]], dtype=torch.float32))
            self.labels.append(torch.tensor([min(3 * (x1 + 2) // IMAGE_SIZE, NUM_CLASSES - 1)]))
        self.augment = augment
        self.classes = ("left", "middle", "right")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, boxes = self.images[index].clone(), self.boxes[index].clone()
        if self.augment and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([IMAGE_SIZE - boxes[:, 2], boxes[:, 1],
                                 IMAGE_SIZE - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": self.labels[index].clone(), "image_id": index}


def collate(batch):
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


class MeanIoUEvaluator:
    """Stand-in for DetectionEvaluator: reports the mean IoU of the single boxes as ``AP``."""

    def __init__(self) -> None:
        self.ious: List[float] = []

    def update(self, preds: List[Dict], targets: List[Dict]) -> None:
        for p, t in zip(preds, targets):
            a, b = p["boxes"][0], t["boxes"][0]
            lt, rb = torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])
            inter = (rb - lt).clamp(min=0).prod()
            union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
            self.ious.append(float(inter / union))

    def compute(self) -> Dict[str, float]:
        return {"AP": sum(self.ious) / max(len(self.ious), 1)}
