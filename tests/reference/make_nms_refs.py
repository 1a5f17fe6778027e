"""Freeze torchvision's ``nms`` and ``batched_nms`` outputs as reference values.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_nms_refs.py      # writes tests/fixtures/nms_refs.pt

The fixture records the library versions it was made with. Scores are distinct
(a random permutation), so the kept indices are unique whatever the tie rule.

The box generators below are also used by ``tests/ops/test_ops_nms.py`` and by the
benchmark (``benchmarks/bench_ops_nms.py``); torchvision is imported only when
this file is run.
"""

import os
import platform

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "nms_refs.pt")
IMAGE_SIZE = 1000.0  # boxes lie in a 1000 x 1000 image


def distinct_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) float32 scores in (0, 1], all different."""
    return (torch.randperm(n, generator=generator).float() + 1) / n


def uniform_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) xyxy boxes, corners uniform over the image, sides 16 to 100 pixels."""
    top_left = torch.rand(n, 2, generator=generator) * (IMAGE_SIZE - 100)
    size = torch.rand(n, 2, generator=generator) * 84 + 16
    return torch.cat([top_left, top_left + size], dim=1)


def clustered_boxes(n: int, generator: torch.Generator, num_objects: int = 20) -> torch.Tensor:
    """(n, 4) boxes jittered around a few objects: many overlaps, much suppression.

    Each box is one of ``num_objects`` random objects (sides 50 to 300 pixels) with
    every coordinate moved by a Gaussian of 10% of the object's size.
    """
    top_left = torch.rand(num_objects, 2, generator=generator) * (IMAGE_SIZE - 300)
    size = torch.rand(num_objects, 2, generator=generator) * 250 + 50
    objects = torch.cat([top_left, top_left + size], dim=1)  # (O, 4)
    which = torch.randint(0, num_objects, (n,), generator=generator)  # (n,)
    jitter = torch.randn(n, 4, generator=generator) * 0.1 * size[which].repeat(1, 2)
    boxes = objects[which] + jitter  # (n, 4)
    corners_min = torch.minimum(boxes[:, :2], boxes[:, 2:])
    corners_max = torch.maximum(boxes[:, :2], boxes[:, 2:])
    return torch.cat([corners_min, corners_max], dim=1)


def reference_cases():
    """(name, boxes, scores, idxs, iou_threshold) inputs to freeze."""
    generator = torch.Generator().manual_seed(2024)
    cases = []
    for n, threshold in [(50, 0.5), (300, 0.3), (1000, 0.5), (2000, 0.7)]:
        for kind, make in [("uniform", uniform_boxes), ("clustered", clustered_boxes)]:
            boxes = make(n, generator)
            scores = distinct_scores(n, generator)
            idxs = torch.randint(0, 5, (n,), generator=generator)
            cases.append((f"{kind}_{n}_float32", boxes, scores, idxs, threshold))
    # Integer corners: many IoUs are simple fractions, some exactly at a threshold.
    boxes = clustered_boxes(400, generator).round()
    for threshold in (0.0, 0.3, 0.5, 1.0):
        cases.append((f"integer_400_t{threshold}", boxes, distinct_scores(400, generator),
                      torch.randint(0, 3, (400,), generator=generator), threshold))
    boxes = clustered_boxes(500, generator).double()
    cases.append(("clustered_500_float64", boxes, distinct_scores(500, generator).double(),
                  torch.randint(0, 4, (500,), generator=generator), 0.5))
    return cases


def main():
    import torchvision
    from torchvision import ops

    frozen = []
    for name, boxes, scores, idxs, threshold in reference_cases():
        frozen.append({
            "name": name,
            "boxes": boxes,
            "scores": scores,
            "idxs": idxs,
            "iou_threshold": threshold,
            "nms": ops.nms(boxes, scores, threshold),
            "batched_nms": ops.batched_nms(boxes, scores, idxs, threshold),
        })
    torch.save({
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
        "cases": frozen,
    }, OUT)
    print(f"wrote {len(frozen)} cases to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
