"""Freeze torchvision's FCOS target matching and loss on fixed inputs.

Run in an environment with torchvision (never a dependency of the package or the
tests), from the repository root::

    python tests/reference/make_fcos_loss_refs.py   # writes tests/fixtures/fcos_loss_refs.pt

What is frozen: ``torchvision.models.detection.FCOS.compute_loss`` (matching of
points to boxes, then ``FCOSHead.compute_loss``) on random head outputs and
hand-placed ground truth for 3 images of 256 x 256 (P3..P7, N = 1364 points).

Where torchvision and our FCOS differ, and how the inputs make them agree:

* Point positions: torchvision's anchors are centred at ``i * s``; ours at
  ``(i + 0.5) * s``. We hand torchvision anchors ``[x - s/2, y - s/2, x + s/2,
  y + s/2]`` around *our* points, so its points (anchor centres) equal ours and its
  box coder (``BoxLinearCoder(normalize_by_size=True)``) divides by the stride as ours.
* Size ranges: torchvision keeps ``lo < max(l, t, r, b) < hi``, we keep
  ``lo <= max < hi``. Box coordinates are chosen so no distance equals 64, 128,
  256 or 512 exactly (checked below).
* Box loss: torchvision sums GIoU over positives / N_pos; the FCOS code (our
  default) weights by centerness targets / sum of them. The tests compare our
  ``box_weighting="none"`` with torchvision's value, and our default with the
  per-positive GIoU losses and centerness targets frozen here.
* Classification and centerness terms agree exactly (focal sum / N_pos, BCE / N_pos).
"""

import os
import platform

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fcos_loss_refs.pt")
IMAGE_SIZE = 256
STRIDES = (8, 16, 32, 64, 128)
NUM_CLASSES = 3
BOUNDS = (64.0, 128.0, 256.0, 512.0)

# Hand-placed boxes (xyxy pixels), labels in 0..2. Image 0: two nested boxes (a point
# inside both goes to the smaller); image 1: a small and a very large box; image 2:
# no boxes at all.
GT = [
    ([[20.3, 30.1, 90.7, 110.9], [40.2, 50.6, 70.4, 80.8], [130.1, 20.2, 250.9, 240.3]], [0, 2, 1]),
    ([[5.2, 5.7, 25.1, 31.3], [10.6, 40.4, 245.3, 250.2]], [1, 0]),
    ([], []),
]


def our_points():
    """(N, 2) points at (i + 0.5) * s, row-major per level, and (N,) strides."""
    points, strides = [], []
    for stride in STRIDES:
        size = IMAGE_SIZE // stride
        centres = (torch.arange(size, dtype=torch.float32) + 0.5) * stride
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        points.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2))
        strides.append(torch.full((size * size,), float(stride)))
    return torch.cat(points), torch.cat(strides), [(IMAGE_SIZE // s) ** 2 for s in STRIDES]


def check_no_boundary_ties(points, targets):
    for target in targets:
        boxes = target["boxes"]
        if len(boxes) == 0:
            continue
        x, y = points[:, 0, None], points[:, 1, None]
        dist = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], -1)
        worst = dist.max(-1).values
        for bound in BOUNDS:
            assert not torch.isclose(worst, torch.tensor(bound), atol=1e-3).any(), bound


def main():
    torch.manual_seed(0)
    points, strides, counts = our_points()
    num_points = len(points)
    anchors = torch.cat([points - strides[:, None] / 2, points + strides[:, None] / 2], dim=1)
    targets = [
        {"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(l, dtype=torch.int64)}
        for b, l in GT
    ]
    check_no_boundary_ties(points, targets)
    batch = len(targets)
    head_outputs = {
        "cls_logits": torch.randn(batch, num_points, NUM_CLASSES) * 2 - 2,
        "bbox_regression": torch.exp(torch.randn(batch, num_points, 4) * 0.5),
        "bbox_ctrness": torch.randn(batch, num_points, 1),
    }

    backbone = nn.Identity()
    backbone.out_channels = 32  # the head is built but never run
    model = FCOS(backbone, num_classes=NUM_CLASSES)
    captured = {}
    original = model.head.compute_loss

    def capture(targets_, outputs_, anchors_, matched_idxs):
        captured["matched_idxs"] = torch.stack(matched_idxs)
        return original(targets_, outputs_, anchors_, matched_idxs)

    model.head.compute_loss = capture
    losses = model.compute_loss(targets, head_outputs, [anchors] * batch, counts)

    # Per-positive GIoU losses and centerness targets, as torchvision computes them.
    matched = captured["matched_idxs"]
    positive = matched >= 0
    gt_boxes = torch.stack([
        t["boxes"][m.clamp(min=0)] if len(t["boxes"]) else torch.zeros(num_points, 4)
        for t, m in zip(targets, matched)
    ])
    pred_boxes = model.box_coder.decode(head_outputs["bbox_regression"], torch.stack([anchors] * batch))
    giou = torchvision.ops.generalized_box_iou_loss(pred_boxes[positive], gt_boxes[positive], reduction="none")
    reg = model.box_coder.encode(torch.stack([anchors] * batch), gt_boxes)
    lr, tb = reg[..., [0, 2]], reg[..., [1, 3]]
    ctr = torch.sqrt(lr.min(-1).values / lr.max(-1).values * tb.min(-1).values / tb.max(-1).values)

    fixture = {
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
                     "python": platform.python_version()},
        "image_size": IMAGE_SIZE,
        "strides": list(STRIDES),
        "num_classes": NUM_CLASSES,
        "boxes": [t["boxes"] for t in targets],
        "labels": [t["labels"] for t in targets],
        "cls_logits": head_outputs["cls_logits"],
        "bbox_regression": head_outputs["bbox_regression"],
        "bbox_ctrness": head_outputs["bbox_ctrness"].squeeze(-1),
        "matched_idxs": matched,
        "giou_loss_per_positive": giou,
        "centerness_per_positive": ctr[positive],
        "loss_classification": losses["classification"],
        "loss_bbox_regression": losses["bbox_regression"],
        "loss_bbox_ctrness": losses["bbox_ctrness"],
    }
    torch.save(fixture, OUT)
    print(f"wrote {OUT}: {int(positive.sum())} positives; losses "
          f"{ {k: round(float(v), 6) for k, v in losses.items()} }")


if __name__ == "__main__":
    main()
