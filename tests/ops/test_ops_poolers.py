"""MultiScaleRoIAlign and the FPN level mapper: frozen torchvision values, properties, edges.

The fixture is written by tests/reference/make_detection_parts_refs.py (torchvision 0.29).
"""

import math
import os
from collections import OrderedDict

import pytest
import torch

from fcos_from_scratch.ops import MultiScaleRoIAlign, map_levels, roi_align
from fcos_from_scratch.ops.poolers import infer_scale
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "detection_parts_refs.pt")
TOLERANCE = {"torch.float32": 1e-5, "torch.float64": 1e-12}


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)["pooler"]


def square_boxes(sides, dtype=torch.float64):
    """Squares with sqrt(w h) = side, top-left corner at (10, 5)."""
    side = torch.tensor(sides, dtype=dtype)
    return torch.stack([torch.full_like(side, 10.0), torch.full_like(side, 5.0),
                        10.0 + side, 5.0 + side], dim=1)


# ------------------------------------------------------------------ reference values

def test_pooler_equals_torchvision(refs):
    for case in refs["cases"]:
        dtype = getattr(torch, case["dtype"].split(".")[1])
        pooler = MultiScaleRoIAlign(case["featmap_names"], case["output_size"],
                                    case["sampling_ratio"],
                                    canonical_scale=case["canonical_scale"],
                                    canonical_level=case["canonical_level"])
        features = OrderedDict((k, v.to(dtype)) for k, v in refs["features"].items())
        out = pooler(features, [b.to(dtype) for b in refs["boxes"]], refs["image_shapes"])
        assert pooler.scales == case["scales"]
        assert out.dtype == dtype and out.shape == case["output"].shape
        torch.testing.assert_close(out, case["output"], rtol=0, atol=TOLERANCE[case["dtype"]])


def test_map_levels_equals_torchvision_on_level_boundaries(refs):
    # Sides 111.9 | 112 and 223.99 | 224 and 447.9 | 448 straddle P2|P3, P3|P4, P4|P5.
    for dtype_name, expected in refs["levels"].items():
        dtype = getattr(torch, dtype_name.split(".")[1])
        levels = map_levels(refs["level_boxes"].to(dtype), 2, 5)
        assert levels.dtype == torch.int64 and torch.equal(levels, expected)


def test_infer_scale_equals_torchvision(refs):
    for feature_size, image_size, expected in refs["scales"]:
        assert infer_scale(feature_size, image_size) == expected


def test_map_levels_by_hand():
    # k = floor(4 + log2(side / 224)): 56 -> 2, 111.9 -> 2 (log2 just under -1), 112 -> 3,
    # 224 -> 4, 448 -> 5, 1000 -> 6 clamped to 5; zero size -> -inf clamped to 2.
    levels = map_levels(square_boxes([56.0, 111.9, 112.0, 224.0, 448.0, 1000.0, 0.0]), 2, 5)
    assert (levels + 2).tolist() == [2, 2, 3, 4, 5, 5, 2]


# ------------------------------------------------------------------ properties

def test_each_roi_equals_roi_align_on_its_own_level(refs):
    features = OrderedDict((k, v) for k, v in refs["features"].items() if k != "pool")
    boxes = refs["boxes"]
    out = MultiScaleRoIAlign(list(features), 2, 2)(features, boxes, refs["image_shapes"])
    levels = map_levels(boxes, 2, 5)
    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
    maps = list(features.values())
    for k, (roi, level) in enumerate(zip(rois, levels.tolist())):
        expected = roi_align(maps[level], roi[None], 2, 0.25 / 2 ** level, 2)  # (1, C, 2, 2)
        torch.testing.assert_close(out[k:k + 1], expected, rtol=0, atol=0)


def test_batched_equals_per_image(refs):
    features = OrderedDict((k, v) for k, v in refs["features"].items() if k != "pool")
    pooler = MultiScaleRoIAlign(list(features), 3, 2)
    out = pooler(features, refs["boxes"], refs["image_shapes"])
    start = 0
    for i, boxes in enumerate(refs["boxes"]):
        single = OrderedDict((k, v[i:i + 1]) for k, v in features.items())
        alone = pooler(single, [boxes], refs["image_shapes"])  # same largest image size
        torch.testing.assert_close(out[start:start + len(boxes)], alone, rtol=0, atol=0)
        start += len(boxes)


def test_map_levels_is_monotonic_in_size():
    sides = torch.linspace(0, 1000, 401, dtype=torch.float64)
    levels = map_levels(square_boxes(sides.tolist()), 2, 5)
    assert (levels[1:] >= levels[:-1]).all() and levels.min() == 0 and levels.max() == 3


def test_map_levels_takes_a_list_and_custom_canonical_values():
    boxes = square_boxes([50.0, 100.0])
    assert torch.equal(map_levels([boxes[:1], boxes[1:]], 1, 6), map_levels(boxes, 1, 6))
    # s0 = 100 at k0 = 3: side 100 -> 3, side 50 -> 2.
    assert (map_levels(boxes, 1, 6, canonical_scale=100, canonical_level=3) + 1).tolist() == [2, 3]


# ------------------------------------------------------------------ edge cases

def test_no_boxes_gives_empty_output_that_backpropagates(refs):
    features = OrderedDict((k, v.clone().requires_grad_(True))
                           for k, v in refs["features"].items() if k != "pool")
    empty = [torch.zeros(0, 4, dtype=torch.float64)] * 2
    out = MultiScaleRoIAlign(list(features), (3, 2), 2)(features, empty, refs["image_shapes"])
    assert out.shape == (0, 2, 3, 2)
    out.sum().backward()
    assert all(f.grad is None or (f.grad == 0).all() for f in features.values())


def test_gradient_reaches_the_pooled_levels(refs):
    features = OrderedDict((k, v.clone().requires_grad_(True))
                           for k, v in refs["features"].items() if k != "pool")
    out = MultiScaleRoIAlign(list(features), 2, 2)(features, refs["boxes"], refs["image_shapes"])
    out.sum().backward()
    used = set(map_levels(refs["boxes"], 2, 5).tolist())
    for level, feature in enumerate(features.values()):
        assert (feature.grad.abs().sum() > 0) == (level in used)


def test_unused_maps_are_skipped_and_repr():
    x = OrderedDict([("a", torch.ones(1, 1, 8, 8)), ("b", torch.full((1, 1, 4, 4), 2.0))])
    pooler = MultiScaleRoIAlign(["b"], 1, 1)
    out = pooler(x, [torch.tensor([[0.0, 0.0, 16.0, 16.0]])], [(32, 32)])
    assert out.item() == 2.0 and pooler.scales == [0.125]
    assert repr(pooler) == "MultiScaleRoIAlign(featmap_names=['b'], output_size=(1, 1), sampling_ratio=1)"


@pytest.mark.parametrize("call, match", [
    (lambda: map_levels(torch.tensor([[0.0, 0.0, float("nan"), 4.0]]), 2, 5), "finite"),
    (lambda: map_levels(torch.zeros(2, 3), 2, 5), "boxes"),
    (lambda: map_levels(torch.zeros(2, 4), 5, 2), "k_min"),
    (lambda: map_levels([], 2, 5), "boxes is an empty list"),
    (lambda: MultiScaleRoIAlign(["0"], (1, 2, 3), 2), "output_size"),
    (lambda: MultiScaleRoIAlign(["x"], 2, 2)({"y": torch.ones(1, 1, 4, 4)},
                                             [torch.zeros(1, 4)], [(8, 8)]), "featmap_names"),
    (lambda: MultiScaleRoIAlign(["y"], 2, 2)({"y": torch.ones(1, 1, 4, 4)},
                                             [torch.zeros(1, 4)], []), "image_shapes"),
    (lambda: MultiScaleRoIAlign(["y"], 2, 2)({"y": torch.ones(1, 1, 4, 4)},
                                             torch.zeros(1, 4), [(8, 8)]), "boxes"),
    (lambda: MultiScaleRoIAlign(["a", "b"], 2, 2)(
        {"a": torch.ones(1, 1, 8, 8), "b": torch.ones(1, 1, 2, 2)},
        [torch.zeros(1, 4)], [(16, 16)]), "consecutive pyramid levels"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_scale_of_a_padded_map_is_a_power_of_two():
    # A 13-row map of a 100-row image: 13 / 100 = 0.13, log2 = -2.94 -> 2 ** -3.
    assert infer_scale((13, 17), (100, 130)) == 0.125
    assert math.log2(infer_scale((7, 9), (100, 130))) == -4


def test_an_inverted_box_is_empty_and_maps_to_the_finest_level():
    # docs/CONVENTIONS.md: x2 < x1 reads as the empty box at its first corner.
    levels = map_levels(torch.tensor([[0.0, 0.0, -1.0, 4.0], [0.0, 0.0, 0.0, 0.0]]), 2, 5)
    assert levels.tolist() == [0, 0]
