"""Grid points and AnchorGenerator: frozen torchvision values, properties, edge cases.

The fixture is written by tests/reference/make_detection_parts_refs.py (torchvision 0.29).
"""

import os

import pytest
import torch

from fcos_from_scratch.models.anchors import AnchorGenerator, grid_points, per_level_values
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "detection_parts_refs.pt")


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)["anchors"]


# ------------------------------------------------------------------ reference values

def test_cell_anchors_equal_torchvision(refs):
    for name, (sizes, ratios) in refs["configs"].items():
        ours = AnchorGenerator(sizes, ratios).cell_anchors
        assert len(ours) == len(refs["cell_anchors"][name])
        for a, b in zip(ours, refs["cell_anchors"][name]):
            assert a.dtype == b.dtype and torch.equal(a, b), name


def test_grid_anchors_equal_torchvision(refs):
    case = refs["grid"]
    generator = AnchorGenerator(*refs["configs"][case["config"]])
    ours = generator.grid_anchors(case["grid_sizes"], case["strides"])
    tensor_strides = [[torch.tensor(s) for s in pair] for pair in case["strides"]]
    for a, b, c in zip(ours, generator.grid_anchors(case["grid_sizes"], tensor_strides),
                       case["anchors"]):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_forward_equals_torchvision(refs):
    for case in refs["forward"]:
        dtype = getattr(torch, case["dtype"].split(".")[1])
        ours = AnchorGenerator(*refs["configs"][case["config"]])(
            case["image_size"], case["feature_sizes"], case["batch_size"], dtype=dtype)
        assert len(ours) == len(case["anchors"]) == case["batch_size"]
        for a, b in zip(ours, case["anchors"]):
            assert a.dtype == dtype and torch.equal(a, b)


def test_cell_anchor_by_hand():
    # Size 32, ratio 2 (h / w): w = 32 / sqrt(2) = 22.63, h = 45.25 -> halves 11.31, 22.63
    # round to 11, 23. Size 17, ratio 1: half 8.5 rounds half to even -> 8.
    (anchors,) = AnchorGenerator(((32, 17),), ((2.0, 1.0),)).cell_anchors
    assert anchors.tolist() == [[-11, -23, 11, 23], [-6, -12, 6, 12],
                                [-16, -16, 16, 16], [-8, -8, 8, 8]]


# ------------------------------------------------------------------ grid points

def test_grid_points_at_cell_centres_by_hand():
    # Stride 8, offset 0.5: columns at 4, 12, 20; rows at 4, 12.
    (points,) = grid_points([(2, 3)], [8], 0.5)
    assert points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_grid_points_order_and_values_match_a_loop():
    (points,) = grid_points([(3, 4)], [(8, 6)], 0.25, dtype=torch.float64)
    expected = [[(col + 0.25) * 6, (row + 0.25) * 8] for row in range(3) for col in range(4)]
    assert points.tolist() == expected


def test_anchors_are_cell_anchors_centred_on_zero_offset_points():
    generator = AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),))
    (anchors,) = generator.grid_anchors([(3, 5)], [4])
    (points,) = grid_points([(3, 5)], [4])
    A = generator.num_anchors_per_location()[0]
    anchors = anchors.reshape(15, A, 4)  # (HW, A, 4): location-major, then cell anchor
    shifts = torch.cat([points, points], dim=1)  # (HW, 4) = (x, y, x, y)
    assert torch.equal(anchors, shifts[:, None, :] + generator.cell_anchors[0][None])
    centres = (anchors[..., :2] + anchors[..., 2:]) / 2  # (HW, A, 2); cell anchors are symmetric
    assert torch.equal(centres, points[:, None, :].expand(-1, A, -1))


# ------------------------------------------------------------------ properties

def test_anchor_area_and_ratio_before_rounding():
    # Unrounded: w * h = S ** 2 and h / w = r; rounding moves each side by < 1 pixel.
    sizes, ratios = (40.0, 100.0), (0.25, 0.5, 1.0, 3.0)
    anchors = AnchorGenerator.generate_anchors(sizes, ratios, dtype=torch.float64)
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    expected_w = torch.tensor([s / r ** 0.5 for r in ratios for s in sizes], dtype=torch.float64)
    expected_h = torch.tensor([s * r ** 0.5 for r in ratios for s in sizes], dtype=torch.float64)
    assert ((widths - expected_w).abs() <= 1).all() and ((heights - expected_h).abs() <= 1).all()


def test_num_anchors_per_location_and_counts():
    generator = AnchorGenerator(((32, 40), (64,)), ((0.5, 1.0, 2.0), (1.0,)))
    assert generator.num_anchors_per_location() == [6, 1]
    anchors = generator((64, 64), [(8, 8), (4, 4)], batch_size=3)
    assert len(anchors) == 3 and all(a.shape == (8 * 8 * 6 + 4 * 4, 4) for a in anchors)
    anchors[0].zero_()  # the images do not share storage
    assert anchors[1].abs().sum() > 0


def test_flat_shorthands_as_torchvision():
    generator = AnchorGenerator((32, 64), (0.5, 1.0))
    assert generator.sizes == ((32,), (64,))
    assert generator.aspect_ratios == ((0.5, 1.0), (0.5, 1.0))


def test_forward_stride_is_integer_division():
    # 100 // 13 = 7: the anchors of level 0 step by 7 pixels.
    generator = AnchorGenerator(((8,),), ((1.0,),))
    (anchors,) = generator((100, 130), [(13, 17)])
    assert anchors[1, 0] - anchors[0, 0] == 130 // 17
    assert anchors[17, 1] - anchors[0, 1] == 100 // 13


def test_forward_dtype_and_device():
    (anchors,) = AnchorGenerator(((8,),), ((1.0,),))((16, 16), [(2, 2)], dtype=torch.float64)
    assert anchors.dtype == torch.float64 and anchors.device.type == "cpu"


# ------------------------------------------------------------------ edge cases

def test_empty_batch_and_empty_grid():
    generator = AnchorGenerator(((8,),), ((1.0,),))
    assert generator((16, 16), [(2, 2)], batch_size=0) == []
    (anchors,) = generator.grid_anchors([(0, 3)], [4])
    assert anchors.shape == (0, 4)
    assert [p.shape for p in grid_points([(0, 0)], [8])] == [(0, 2)]


@pytest.mark.parametrize("call, match", [
    (lambda: AnchorGenerator(((32,), (64,)), ((1.0,),) * 3), "sizes has 2 levels"),
    (lambda: AnchorGenerator(((32, -1),), ((1.0,),)), r"sizes\[0\]"),
    (lambda: AnchorGenerator(((32,),), ((0.0,),)), r"aspect_ratios\[0\]"),
    (lambda: AnchorGenerator(((32,),), ((1.0,),))((16, 16), [(2, 2), (1, 1)]), "one entry per level"),
    (lambda: AnchorGenerator(((32,),), ((1.0,),))((16, 16), [(32, 2)]), r"feature_sizes\[0\]"),
    (lambda: AnchorGenerator(((32,),), ((1.0,),))((16,), [(2, 2)]), "image_size"),
    (lambda: grid_points([(2, 2)], [8, 16]), "strides has 2"),
    (lambda: grid_points([(2, 2)], [(8, 8, 8)]), r"strides\[0\]"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_per_level_values_repeats_each_value_for_its_cells():
    like = torch.zeros((), dtype=torch.float64)
    values = per_level_values([8, 16], [3, 2], like)
    assert values.dtype == torch.float64 and values.tolist() == [8, 8, 8, 16, 16]
    assert per_level_values([], [], like).shape == (0,)
    with pytest.raises(ValueError, match="levels"):
        per_level_values([8], [1, 2], like)


# ------------------------------------------------------------------ SSD-style anchors

def test_ssd_anchors_by_hand():
    from fcos_from_scratch.models.anchors import ssd_anchors

    # A 2x3 map of a 60x90 image: steps 30 px both ways, centres (15 + 30 col, 15 + 30 row).
    # Size 20, ratio 1: 20x20; ratio 4 (h / w): w = 20 / 2 = 10, h = 40.
    anchors = ssd_anchors((60, 90), [(2, 3)], [20.0], (1.0, 4.0))
    assert anchors.shape == (2 * 3 * 2, 4)
    assert anchors[0].tolist() == [5.0, 5.0, 25.0, 25.0]  # cell (0, 0), ratio 1
    assert anchors[1].tolist() == [10.0, -5.0, 20.0, 35.0]  # cell (0, 0), ratio 4
    assert anchors[2].tolist() == [35.0, 5.0, 55.0, 25.0]  # cell (0, 1): row-major, then ratio
    assert anchors[6].tolist() == [5.0, 35.0, 25.0, 55.0]  # cell (1, 0)


def test_ssd_anchors_steps_are_not_rounded_and_area_is_size_squared():
    from fcos_from_scratch.models.anchors import ssd_anchors

    # 320 px with a 3x3 map: step 106.67, centres 53.3, 160, 266.7 -- not a /128 grid.
    anchors = ssd_anchors((320, 320), [(20, 20), (10, 10), (5, 5), (3, 3)], [32, 64, 128, 256])
    assert anchors.shape == (3 * (400 + 100 + 25 + 9), 4)
    last = anchors[-3:]  # cell (2, 2) of the 3x3 level
    centre = (last[:, :2] + last[:, 2:]) / 2
    assert torch.allclose(centre, torch.full((3, 2), 320 * 2.5 / 3))
    area = (last[:, 2] - last[:, 0]) * (last[:, 3] - last[:, 1])
    assert torch.allclose(area, torch.full((3,), 256.0 ** 2))
    tall = last[1]  # ratio 2 = h / w
    assert (tall[3] - tall[1]) / (tall[2] - tall[0]) == pytest.approx(2.0)


def test_ssd_anchors_bad_input():
    from fcos_from_scratch.models.anchors import ssd_anchors

    with pytest.raises(ValueError, match="one anchor size per level"):
        ssd_anchors((64, 64), [(4, 4), (2, 2)], [16.0])
    with pytest.raises(ValueError, match="aspect_ratios"):
        ssd_anchors((64, 64), [(4, 4)], [16.0], (1.0, -2.0))
    with pytest.raises(ValueError, match="feature_sizes"):
        ssd_anchors((64, 64), [(0, 4)], [16.0])


def test_ssd_anchors_several_sizes_per_level_ratio_major():
    from fcos_from_scratch.models.anchors import ssd_anchors

    # One 1x1 level of a 40x40 image (centre 20, 20); sizes 10 and 20, ratios 1 and 4:
    # ratio 1: 10x10, 20x20; ratio 4 (h / w): 5x20, 10x40 -- ratio first, then size.
    anchors = ssd_anchors((40, 40), [(1, 1)], [(10.0, 20.0)], (1.0, 4.0))
    assert anchors.tolist() == [[15.0, 15.0, 25.0, 25.0], [10.0, 10.0, 30.0, 30.0],
                                [17.5, 10.0, 22.5, 30.0], [15.0, 0.0, 25.0, 40.0]]
