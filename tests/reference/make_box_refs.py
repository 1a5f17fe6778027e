"""Freeze torchvision's box ops, IoU family, IoU losses and focal loss as reference values.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_box_refs.py      # writes tests/fixtures/box_refs.pt

The fixture records the library versions it was made with. Inputs avoid the cases
where torchvision returns NaN (zero union); those are pinned by hand in the tests.
"""

import os
import platform

import torch
import torchvision
from torchvision import ops

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "box_refs.pt")


def random_boxes(generator, n, dtype, scale=100.0, allow_flat=False):
    """(n, 4) xyxy boxes; with ``allow_flat`` some have zero width or height."""
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2 + 0.5
    if allow_flat:
        flat = torch.rand(n, 2, generator=generator) < 0.15
        flat[:, 1] &= ~flat[:, 0]  # never both: torchvision's CIoU is NaN at w = h = 0
        wh[flat] = 0.0
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def pairwise_case(generator, dtype):
    boxes1 = random_boxes(generator, 23, dtype, allow_flat=True)
    boxes2 = random_boxes(generator, 17, dtype)
    return {
        "boxes1": boxes1,
        "boxes2": boxes2,
        "box_iou": ops.box_iou(boxes1, boxes2),
        "generalized_box_iou": ops.generalized_box_iou(boxes1, boxes2),
        "distance_box_iou": ops.distance_box_iou(boxes1, boxes2),
        "complete_box_iou": ops.complete_box_iou(boxes1, boxes2),
        "box_area": ops.box_area(boxes1),
    }


def loss_case(generator, dtype):
    boxes1 = random_boxes(generator, 40, dtype, allow_flat=True)
    # Half of the targets overlap their prediction, half are elsewhere.
    boxes2 = random_boxes(generator, 40, dtype)
    boxes2[::2] = boxes1[::2] + torch.randn(20, 4, generator=generator, dtype=torch.float64).to(dtype) * 3
    boxes2[:, 2:] = torch.max(boxes2[:, 2:], boxes2[:, :2] + 0.5)
    case = {"boxes1": boxes1, "boxes2": boxes2}
    for name in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"):
        fn = getattr(ops, name)
        pred = boxes1.clone().requires_grad_(True)
        loss = fn(pred, boxes2, reduction="none")
        loss.sum().backward()
        case[name] = loss.detach()
        case[name + "_grad"] = pred.grad
        case[name + "_mean"] = fn(boxes1, boxes2, reduction="mean")
        case[name + "_sum"] = fn(boxes1, boxes2, reduction="sum")
    return case


def focal_case(generator, dtype):
    inputs = (torch.randn(64, 7, generator=generator, dtype=torch.float64) * 4).to(dtype)
    targets = (torch.rand(64, 7, generator=generator) < 0.3).to(dtype)
    soft = torch.rand(64, 7, generator=generator, dtype=torch.float64).to(dtype)
    case = {"inputs": inputs, "targets": targets, "soft_targets": soft}
    for alpha, gamma in ((0.25, 2.0), (-1.0, 0.0), (0.5, 1.5)):
        key = f"alpha={alpha},gamma={gamma}"
        x = inputs.clone().requires_grad_(True)
        loss = ops.sigmoid_focal_loss(x, targets, alpha=alpha, gamma=gamma, reduction="none")
        loss.sum().backward()
        case[key] = loss.detach()
        case[key + ",grad"] = x.grad
        case[key + ",soft"] = ops.sigmoid_focal_loss(inputs, soft, alpha=alpha, gamma=gamma)
        case[key + ",mean"] = ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction="mean")
    return case


def format_case(generator):
    boxes = random_boxes(generator, 30, torch.float64, allow_flat=True)
    case = {"boxes": boxes}
    for fmt in ("xywh", "cxcywh"):
        case["xyxy->" + fmt] = ops.box_convert(boxes, "xyxy", fmt)
    case["clip_120x90"] = ops.clip_boxes_to_image(boxes, (90, 120))  # size = (H, W)
    case["remove_small_5"] = ops.remove_small_boxes(boxes, 5.0)
    return case


def main():
    generator = torch.Generator().manual_seed(2026)
    fixture = {
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
        "pairwise_float32": pairwise_case(generator, torch.float32),
        "pairwise_float64": pairwise_case(generator, torch.float64),
        "loss_float32": loss_case(generator, torch.float32),
        "loss_float64": loss_case(generator, torch.float64),
        "focal_float32": focal_case(generator, torch.float32),
        "focal_float64": focal_case(generator, torch.float64),
        "formats": format_case(generator),
    }
    torch.save(fixture, OUT)
    print("wrote", os.path.abspath(OUT), fixture["versions"])


if __name__ == "__main__":
    main()
