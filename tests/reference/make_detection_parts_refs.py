"""Freeze torchvision's shared detection parts: anchors, box coders, matcher, sampler, pooler.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    /work/refvenv/bin/python tests/reference/make_detection_parts_refs.py
    # writes tests/fixtures/detection_parts_refs.pt

Every input is generated here from one seeded generator and stored next to
torchvision's output, so the tests only load tensors. Sections:

* ``anchors``: ``AnchorGenerator`` cell anchors of four configurations (one size
  per level, RetinaNet-style three sizes per level, odd sizes and ratios whose
  half-widths round half to even, one level), ``grid_anchors`` with non-square
  strides, and ``forward`` on a padded batch whose strides need integer division.
* ``box_coder``: ``BoxCoder`` encode/decode (single and list forms), weights
  (1, 1, 1, 1) and (10, 10, 5, 5), class-specific codes (K = 3), codes beyond the
  clamp, float32 and float64, an empty batch. ``box_linear_coder``:
  ``BoxLinearCoder`` with and without size normalisation, with a batch dimension.
* ``matcher``: IoU matrices with duplicated anchors (ties), hand matrices with
  values exactly on the thresholds, four threshold settings, and the error
  messages for empty matrices.
* ``sampler``: ``BalancedPositiveNegativeSampler`` masks after
  ``torch.manual_seed``, for images with few positives, few negatives, none at all.
* ``pooler``: ``MultiScaleRoIAlign`` on a four-level pyramid plus an unused map,
  boxes on both sides of the level boundaries, float32 and float64, a single
  level, a non-default canonical scale; ``LevelMapper`` levels and inferred scales.
"""

import math
import os
import platform
from collections import OrderedDict

import torch
import torchvision
from torchvision.models.detection._utils import (
    BalancedPositiveNegativeSampler,
    BoxCoder,
    BoxLinearCoder,
    Matcher,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou
from torchvision.ops.poolers import LevelMapper, MultiScaleRoIAlign, _infer_scale

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "detection_parts_refs.pt")


def random_boxes(g, n, extent=200.0, min_size=2.0, dtype=torch.float64):
    """(n, 4) xyxy boxes with positive sizes inside about [0, extent]."""
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * extent
    wh = min_size + torch.rand(n, 2, generator=g, dtype=dtype) ** 2 * extent / 2
    return torch.cat([xy, xy + wh], dim=1)


# --------------------------------------------------------------------------- anchors

ANCHOR_CONFIGS = {
    "fpn": (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
    "three_sizes": (tuple((x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)) for x in (32, 64, 128)),
                    ((0.5, 1.0, 2.0),) * 3),
    "odd": (((17, 45.5), (23,)), ((0.3, 1.0, 3.7), (0.25, 4.0))),
    "one_level": (((128, 256, 512),), ((0.5, 1.0, 2.0),)),
}


def anchor_refs():
    cell = {name: AnchorGenerator(sizes, ratios).cell_anchors
            for name, (sizes, ratios) in ANCHOR_CONFIGS.items()}
    grid_sizes = [(3, 4), (2, 5)]
    strides = [(8, 8), (16, 12)]
    generator = AnchorGenerator(*ANCHOR_CONFIGS["odd"])
    grid = generator.grid_anchors(
        grid_sizes, [[torch.tensor(s) for s in pair] for pair in strides])
    forward = []
    for name, image_size, feature_sizes, dtype in [
        ("fpn", (100, 130), [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)], torch.float32),
        ("three_sizes", (64, 96), [(8, 12), (4, 6), (2, 3)], torch.float64),
    ]:
        images = ImageList(torch.zeros(2, 3, *image_size), [image_size, (image_size[0] - 5, 40)])
        feature_maps = [torch.zeros(2, 1, *size, dtype=dtype) for size in feature_sizes]
        out = AnchorGenerator(*ANCHOR_CONFIGS[name])(images, feature_maps)
        forward.append({"config": name, "image_size": image_size, "feature_sizes": feature_sizes,
                        "batch_size": 2, "dtype": str(dtype), "anchors": out})
    return {"configs": ANCHOR_CONFIGS, "cell_anchors": cell,
            "grid": {"config": "odd", "grid_sizes": grid_sizes, "strides": strides,
                     "anchors": grid},
            "forward": forward}


# --------------------------------------------------------------------------- box coders

def box_coder_refs(g):
    cases = []
    for dtype in (torch.float32, torch.float64):
        anchors = random_boxes(g, 20).to(dtype)
        gt = random_boxes(g, 20).to(dtype)
        codes = torch.randn(20, 12, generator=g, dtype=torch.float64).to(dtype) * 2
        codes[::5, 2] = 9.0  # beyond the clamp log(1000 / 16) ~ 4.14 for every weight
        codes[1::5, 7] = 25.0
        for weights, clip in [((1.0, 1.0, 1.0, 1.0), math.log(1000.0 / 16)),
                              ((10.0, 10.0, 5.0, 5.0), math.log(1000.0 / 16)),
                              ((10.0, 10.0, 5.0, 5.0), 2.0)]:
            coder = BoxCoder(weights, clip)
            split = [7, 0, 13]
            cases.append({
                "dtype": str(dtype), "weights": weights, "bbox_xform_clip": clip,
                "reference_boxes": gt, "proposals": anchors, "rel_codes": codes, "split": split,
                "encode_single": coder.encode_single(gt, anchors),
                "encode": list(coder.encode(list(gt.split(split)), list(anchors.split(split)))),
                "decode_single": coder.decode_single(codes, anchors),
                "decode": coder.decode(codes, list(anchors.split(split))),
            })
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    empty = {"decode": coder.decode(torch.zeros(0, 12), [torch.zeros(0, 4), torch.zeros(0, 4)]),
             "encode": list(coder.encode([torch.zeros(0, 4)], [torch.zeros(0, 4)]))}
    linear = []
    for normalize in (True, False):
        anchors = random_boxes(g, 30).reshape(2, 15, 4)
        gt = random_boxes(g, 30).reshape(2, 15, 4)
        codes = torch.randn(2, 15, 4, generator=g, dtype=torch.float64)
        for dtype in (torch.float32, torch.float64):
            coder = BoxLinearCoder(normalize)
            a, b, c = anchors.to(dtype), gt.to(dtype), codes.to(dtype)
            linear.append({"normalize_by_size": normalize, "dtype": str(dtype),
                           "reference_boxes": a, "proposals": b, "rel_codes": c,
                           "encode": coder.encode(a, b), "decode": coder.decode(c, a)})
    return {"cases": cases, "empty": empty}, linear


# --------------------------------------------------------------------------- matcher

def matcher_refs(g):
    gt = random_boxes(g, 5, extent=100.0, min_size=10.0)
    anchors = random_boxes(g, 30, extent=100.0, min_size=10.0)
    anchors = torch.cat([anchors, anchors[[0, 3, 3, 7]], gt[[1, 4]]])  # duplicates: ties
    matrices = {
        "iou": box_iou(gt, anchors).float(),
        "iou_float64": box_iou(gt, anchors),
        # Rows: GT; columns: predictions. Values exactly on 0.3 / 0.5 / 0.7, ties
        # across predictions (GT 0 and 2) and across GTs (prediction 4).
        "hand": torch.tensor([
            [0.10, 0.30, 0.10, 0.05, 0.20, 0.30, 0.00],
            [0.70, 0.29, 0.40, 0.50, 0.20, 0.00, 0.10],
            [0.00, 0.10, 0.45, 0.45, 0.20, 0.00, 0.69],
        ]),
        "one_gt": torch.tensor([[0.2, 0.8, 0.8, 0.1]]),
        "one_prediction": torch.tensor([[0.2], [0.6], [0.6]]),
    }
    settings = [(0.7, 0.3, True), (0.7, 0.3, False), (0.5, 0.4, True), (0.5, 0.5, False)]
    cases = []
    for name, matrix in matrices.items():
        for high, low, allow in settings:
            matches = Matcher(high, low, allow)(matrix.clone())
            cases.append({"matrix": name, "high_threshold": high, "low_threshold": low,
                          "allow_low_quality_matches": allow, "matches": matches})
    errors = {}
    for name, shape in [("no_gt", (0, 4)), ("no_predictions", (3, 0))]:
        try:
            Matcher(0.5, 0.4)(torch.zeros(shape))
        except ValueError as error:
            errors[name] = str(error)
    return {"matrices": matrices, "cases": cases, "errors": errors}


# --------------------------------------------------------------------------- sampler

def sampler_refs(g):
    def labels(n, p_pos, p_neg):
        u = torch.rand(n, generator=g)
        out = torch.full((n,), -1, dtype=torch.int64)
        out[u < p_pos + p_neg] = 0
        out[u < p_pos] = torch.randint(1, 4, (int((u < p_pos).sum()),), generator=g)
        return out

    matched = [labels(60, 0.2, 0.6), labels(40, 0.05, 0.9), labels(30, 0.8, 0.1),
               torch.zeros(0, dtype=torch.int64), labels(25, 0.0, 0.5), labels(80, 0.3, 0.3)]
    cases = []
    for batch, fraction, seed in [(16, 0.25, 0), (32, 0.5, 1), (8, 1.0, 2), (256, 0.5, 3)]:
        torch.manual_seed(seed)
        pos, neg = BalancedPositiveNegativeSampler(batch, fraction)(matched)
        cases.append({"batch_size_per_image": batch, "positive_fraction": fraction,
                      "seed": seed, "pos": pos, "neg": neg})
    return {"matched_idxs": matched, "cases": cases}


# --------------------------------------------------------------------------- pooler

LEVEL_BOX_SIDES = [  # square boxes: sqrt(wh) = side; boundaries at 112, 224, 448
    0.0, 1.0, 20.0, 111.9, 112.0, 112.1, 200.0, 223.99, 224.0, 224.01, 447.9, 448.0, 900.0,
]


def pooler_refs(g):
    image_shapes = [(250, 240), (256, 200)]  # largest (256, 240): scales 1/4 .. 1/32
    sizes = OrderedDict([("0", (64, 60)), ("1", (32, 30)), ("2", (16, 15)),
                         ("pool", (4, 4)), ("3", (8, 8))])
    features = OrderedDict(
        (name, torch.randn(2, 2, *size, generator=g, dtype=torch.float64))
        for name, size in sizes.items())
    centres = torch.rand(2, 10, 2, generator=g, dtype=torch.float64) * 200 + 20
    sides = torch.tensor([[6.0, 30.0, 111.0, 113.0, 160.0, 223.5, 224.5, 300.0, 20.0, 70.0],
                          [50.0, 112.0, 224.0, 90.0, 10.0, 400.0, 5.0, 250.0, 140.0, 40.0]],
                         dtype=torch.float64)
    aspect = 2 ** (torch.rand(2, 10, generator=g, dtype=torch.float64) * 2 - 1)  # h / w
    half = torch.stack([sides / aspect.sqrt(), sides * aspect.sqrt()], dim=-1) / 2
    boxes = [torch.cat([centres[i] - half[i], centres[i] + half[i]], dim=1) for i in range(2)]
    boxes[1] = boxes[1][:7]  # uneven images
    cases = []
    specs = [  # (featmap_names, output_size, sampling_ratio, canonical_scale, canonical_level)
        (["0", "1", "2", "3"], (3, 2), 2, 224, 4),
        (["0", "1", "2", "3"], 2, -1, 224, 4),
        (["1"], 3, 2, 224, 4),
        (["0", "1", "2", "3"], (2, 2), 1, 112, 3),
    ]
    for dtype in (torch.float32, torch.float64):
        for names, output_size, ratio, scale, level in specs:
            pooler = MultiScaleRoIAlign(names, output_size, ratio,
                                        canonical_scale=scale, canonical_level=level)
            out = pooler(OrderedDict((k, v.to(dtype)) for k, v in features.items()),
                         [b.to(dtype) for b in boxes], image_shapes)
            cases.append({"dtype": str(dtype), "featmap_names": names, "output_size": output_size,
                          "sampling_ratio": ratio, "canonical_scale": scale,
                          "canonical_level": level, "scales": pooler.scales, "output": out})
    side = torch.tensor(LEVEL_BOX_SIDES, dtype=torch.float64)
    level_boxes = torch.stack([torch.full_like(side, 10.0), torch.full_like(side, 5.0),
                               10.0 + side, 5.0 + side], dim=1)
    levels = {str(dtype): LevelMapper(2, 5)([level_boxes.to(dtype)])
              for dtype in (torch.float32, torch.float64)}
    scale_cases = [((64, 60), (256, 240)), ((13, 17), (100, 130)), ((7, 9), (100, 130)),
                   ((25, 25), (200, 200)), ((3, 3), (100, 100))]
    scales = [(f, i, _infer_scale(torch.zeros(1, 1, *f), list(i))) for f, i in scale_cases]
    return {"image_shapes": image_shapes, "features": features, "boxes": boxes, "cases": cases,
            "level_boxes": level_boxes, "levels": levels, "scales": scales}


def main():
    g = torch.Generator().manual_seed(20260601)
    box_coder, box_linear_coder = box_coder_refs(g)
    refs = {
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
            "script": "tests/reference/make_detection_parts_refs.py",
        },
        "anchors": anchor_refs(),
        "box_coder": box_coder,
        "box_linear_coder": box_linear_coder,
        "matcher": matcher_refs(g),
        "sampler": sampler_refs(g),
        "pooler": pooler_refs(g),
    }
    torch.save(refs, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
