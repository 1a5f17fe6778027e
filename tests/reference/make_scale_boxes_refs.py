"""Freeze torchvision's ``resize_boxes`` as reference values for ``scale_boxes``.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_scale_boxes_refs.py   # writes tests/fixtures/scale_boxes_refs.pt

``torchvision.models.detection.transform.resize_boxes(boxes, original_size, new_size)``
takes sizes as (H, W), like ``scale_boxes(boxes, from_size, to_size)``. The sizes are
chosen so that most ratios are not exact in float32 (800 / 333, 1201 / 500), which is
where a ratio computed in float64 would differ in the last bits. Boxes come in
float32, float64, float16 and int64 (the result dtype follows PyTorch's promotion).
The fixture records the library versions.
"""

import os
import platform

import torch
import torchvision
from torchvision.models.detection.transform import resize_boxes

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "scale_boxes_refs.pt")

SIZE_PAIRS = [  # (from_size, to_size), both (H, W)
    ((480, 640), (800, 1066)),
    ((333, 500), (800, 1201)),
    ((1000, 750), (512, 384)),
    ((7, 3), (13, 11)),
    ((800, 1201), (333, 500)),
]


def random_boxes(generator, n, scale):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2
    return torch.cat([xy, xy + wh], dim=1)  # (n, 4) float64


def main():
    generator = torch.Generator().manual_seed(2026)
    cases = []
    for from_size, to_size in SIZE_PAIRS:
        scale = float(max(from_size))
        boxes = random_boxes(generator, 12, scale)
        for dtype in (torch.float32, torch.float64, torch.float16, torch.int64):
            typed = boxes.round() if dtype == torch.int64 else boxes
            typed = typed.to(dtype)
            cases.append({
                "boxes": typed,
                "from_size": from_size,
                "to_size": to_size,
                "expected": resize_boxes(typed, list(from_size), list(to_size)),
            })
    fixture = {
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
        "cases": cases,
    }
    torch.save(fixture, OUT)
    print("wrote", os.path.abspath(OUT), fixture["versions"], len(cases), "cases")


if __name__ == "__main__":
    main()
