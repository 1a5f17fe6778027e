"""Box formats, areas, clipping and the IoU family.

Three kinds of tests: values frozen from torchvision 0.29 (tests/reference/make_box_refs.py),
hand-computed tables with their arithmetic, properties and edge cases.
"""

import math
import os

import pytest
import torch

from fcos_from_scratch.ops import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "box_refs.pt")
PAIRWISE = {
    "box_iou": box_iou,
    "generalized_box_iou": generalized_box_iou,
    "distance_box_iou": distance_box_iou,
    "complete_box_iou": complete_box_iou,
}


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)


def random_boxes(n, seed=0, dtype=torch.float32, scale=50.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 2
    return torch.cat([xy, xy + wh], 1).to(dtype)


# --------------------------------------------------------------------- references

def test_fixture_records_versions(refs):
    assert refs["versions"]["torchvision"].startswith("0.29")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_pairwise_matches_torchvision(refs, name, dtype):
    case = refs[f"pairwise_{dtype}"]
    ours = PAIRWISE[name](case["boxes1"], case["boxes2"])
    assert ours.dtype == case[name].dtype
    tol = 1e-6 if dtype == "float32" else 1e-12
    torch.testing.assert_close(ours, case[name], rtol=0, atol=tol)
    if name == "box_iou":  # same arithmetic in the same order: bit-identical
        assert torch.equal(ours, case[name])


def test_area_and_formats_match_torchvision(refs):
    torch.testing.assert_close(box_area(refs["pairwise_float32"]["boxes1"]), refs["pairwise_float32"]["box_area"])
    case = refs["formats"]
    for fmt in ("xywh", "cxcywh"):
        torch.testing.assert_close(box_convert(case["boxes"], "xyxy", fmt), case["xyxy->" + fmt])
    torch.testing.assert_close(clip_boxes_to_image(case["boxes"], (90, 120)), case["clip_120x90"])
    assert torch.equal(remove_small_boxes(case["boxes"], 5.0), case["remove_small_5"])


# --------------------------------------------------------------------- hand-computed

def test_hand_computed_table():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0],   # overlaps a in the unit square [1,2]x[1,2]
                      [2.0, 0.0, 4.0, 2.0],   # touches a along x = 2
                      [0.0, 0.0, 2.0, 2.0]])  # identical
    # IoU: inter 1, union 4 + 4 - 1 = 7 -> 1/7;  touching -> 0;  identical -> 1.
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))
    # GIoU: enclosing of a, b0 is [0,3]^2 = 9 -> 1/7 - (9 - 7)/9 = 1/7 - 2/9;
    # a, b1 enclosing [0,4]x[0,2] = 8, union 8 -> 0 - 0/8 = 0.
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, 0.0, 1.0]]))
    # DIoU: centres (1,1) and (2,2): rho^2 = 2; c^2 = 3^2 + 3^2 = 18 -> 1/7 - 2/18.
    # a, b1: centres (1,1), (3,1): rho^2 = 4; c^2 = 16 + 4 = 20 -> 0 - 4/20.
    expected = torch.tensor([[1 / 7 - 2 / 18, -4 / 20, 1.0]])
    torch.testing.assert_close(distance_box_iou(a, b), expected, atol=1e-6, rtol=0)
    # CIoU: every box here is square, so v = 0 and CIoU = DIoU.
    torch.testing.assert_close(complete_box_iou(a, b), expected, atol=1e-6, rtol=0)


def test_hand_computed_ciou_aspect_term():
    # a is 2x2 (arctan(1) = pi/4), b is 4x2 placed on a's left edge (arctan(2)).
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
    iou = 4 / 8  # inter 4, union 4 + 8 - 4
    rho2, c2 = 1.0 ** 2, 4.0 ** 2 + 2.0 ** 2  # centres (1,1), (2,1)
    v = 4 / math.pi ** 2 * (math.atan(2.0) - math.pi / 4) ** 2
    alpha = v / (1 - iou + v + 1e-7)
    expected = iou - rho2 / (c2 + 1e-7) - alpha * v
    assert complete_box_iou(a, b).item() == pytest.approx(expected, abs=1e-12)


def test_box_convert_hand_table():
    xyxy = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    # width 30 - 10 = 20, height 60 - 20 = 40, centre (20, 40); no +1 anywhere.
    assert box_convert(xyxy, "xyxy", "xywh").tolist() == [[10.0, 20.0, 20.0, 40.0]]
    assert box_convert(xyxy, "xyxy", "cxcywh").tolist() == [[20.0, 40.0, 20.0, 40.0]]
    assert box_area(xyxy).tolist() == [800.0]


def test_clip_uses_height_width_order():
    boxes = torch.tensor([[-5.0, -5.0, 500.0, 500.0]])
    # size = (H, W) = (100, 200): x is clamped to [0, 200], y to [0, 100].
    assert clip_boxes_to_image(boxes, (100, 200)).tolist() == [[0.0, 0.0, 200.0, 100.0]]


def test_remove_small_boxes_is_inclusive():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.9, 5.0], [0.0, 0.0, 5.0, 5.0]])
    keep = remove_small_boxes(boxes, 2.0)
    assert keep.tolist() == [0, 2] and keep.dtype == torch.int64


# --------------------------------------------------------------------- properties

@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_symmetry(name):
    a, b = random_boxes(9, seed=1), random_boxes(7, seed=2)
    torch.testing.assert_close(PAIRWISE[name](a, b), PAIRWISE[name](b, a).T)


def test_bounds():
    a, b = random_boxes(40, seed=3), random_boxes(30, seed=4)
    iou, giou = box_iou(a, b), generalized_box_iou(a, b)
    assert (iou >= 0).all() and (iou <= 1).all()
    assert (giou >= -1).all() and (giou <= iou + 1e-6).all()
    diou = distance_box_iou(a, b)
    assert (diou >= -1).all() and (diou <= iou + 1e-6).all()
    assert (complete_box_iou(a, b) <= diou + 1e-6).all()


def _iou_loop(a, b):
    """Plain Python IoU of two boxes given as lists."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_vectorised_equals_loop():
    a, b = random_boxes(12, seed=5, dtype=torch.float64), random_boxes(8, seed=6, dtype=torch.float64)
    expected = torch.tensor([[_iou_loop(x, y) for y in b.tolist()] for x in a.tolist()], dtype=torch.float64)
    torch.testing.assert_close(box_iou(a, b), expected)


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_convert_round_trip(fmt):
    boxes = random_boxes(20, seed=7, dtype=torch.float64)
    torch.testing.assert_close(box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy"), boxes)
    assert box_convert(boxes, "xyxy", "xyxy") is not boxes  # a copy, like torchvision


def test_translation_and_scale_invariance():
    a, b = random_boxes(6, seed=8, dtype=torch.float64), random_boxes(5, seed=9, dtype=torch.float64)
    for name, fn in PAIRWISE.items():
        moved = fn(a * 3 + 11, b * 3 + 11)
        torch.testing.assert_close(moved, fn(a, b), msg=name, atol=1e-6, rtol=0)


# --------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("name", sorted(PAIRWISE))
@pytest.mark.parametrize("n,m", [(0, 3), (3, 0), (0, 0)])
def test_empty_inputs(name, n, m):
    a = random_boxes(n).requires_grad_(True)
    out = PAIRWISE[name](a, random_boxes(m))
    assert out.shape == (n, m)
    out.sum().backward()  # empty inputs still backpropagate
    assert a.grad.shape == (n, 4)


@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_zero_area_boxes_are_finite(name):
    # torchvision returns NaN for the first pair (union 0); we return IoU 0.
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 3.0]], requires_grad=True)
    other = torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 4.0, 4.0]])
    out = PAIRWISE[name](point, other)
    assert torch.isfinite(out).all()
    assert out[0, 0].item() == 0.0  # two identical points: no overlap, no penalty
    out.sum().backward()
    assert torch.isfinite(point.grad).all()


def test_zero_area_iou_against_nonempty_is_zero():
    line = torch.tensor([[1.0, 0.0, 1.0, 10.0]])
    assert box_iou(line, torch.tensor([[0.0, 0.0, 2.0, 10.0]])).item() == 0.0


@pytest.mark.parametrize("name", sorted(PAIRWISE))
def test_float64_and_huge_coordinates(name):
    a = random_boxes(5, seed=10, dtype=torch.float64) * 1e6
    out = PAIRWISE[name](a, a)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.diagonal(), torch.ones(5, dtype=torch.float64))
    # float32 at 1e6 pixels: areas ~1e12 are still representable, IoU of a box with itself is 1.
    out32 = PAIRWISE[name](a.float(), a.float())
    torch.testing.assert_close(out32.diagonal(), torch.ones(5), atol=1e-5, rtol=0)


def test_integer_and_half_inputs_are_upcast():
    a = torch.tensor([[0, 0, 2, 2]])
    b = torch.tensor([[1, 1, 3, 3]])
    assert box_iou(a, b).dtype == torch.float32
    assert box_area(a).dtype == torch.int64
    big = torch.tensor([[0.0, 0.0, 300.0, 300.0]], dtype=torch.float16)
    # 300 * 300 = 90000 overflows float16 (max 65504); we compute in float32.
    assert box_area(big).item() == 90000.0
    assert box_iou(big, big).item() == 1.0


# --------------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [torch.zeros(4), torch.zeros(3, 5), torch.zeros(2, 3, 4)])
def test_bad_shapes_name_the_argument(bad):
    with pytest.raises(ValueError, match=r"boxes1 must have shape \(N, 4\)"):
        box_iou(bad, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="boxes2"):
        generalized_box_iou(torch.zeros(1, 4), bad)


def test_bad_formats_and_sizes():
    with pytest.raises(ValueError, match="in_fmt must be one of"):
        box_convert(torch.zeros(1, 4), "xyhw", "xyxy")
    with pytest.raises(ValueError, match="out_fmt"):
        box_convert(torch.zeros(1, 4), "xyxy", "yxyx")
    with pytest.raises(ValueError, match="size must be"):
        clip_boxes_to_image(torch.zeros(1, 4), (1, 2, 3))
    with pytest.raises(ValueError, match="boxes must be a torch.Tensor"):
        box_area([[0, 0, 1, 1]])


@pytest.mark.parametrize("name", ["box_iou", "generalized_box_iou", "distance_box_iou"])
def test_gradcheck(name):
    # The IoU family updates intermediates in place; autograd must still be exact.
    # (CIoU is left out on purpose: its alpha is a constant for autograd by
    # definition, so finite differences and autograd disagree by design.)
    a = random_boxes(4, seed=11, dtype=torch.float64).requires_grad_(True)
    b = random_boxes(3, seed=12, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(PAIRWISE[name], (a, b))


# ------------------------------------------------------------------ element-wise IoU

def test_elementwise_box_iou_is_the_diagonal_and_by_hand():
    from fcos_from_scratch.ops import elementwise_box_iou

    # [0,0,2,2] vs [1,1,3,3]: inter 1, union 4 + 4 - 1 = 7; identical boxes: 1; empty pair: 0.
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(elementwise_box_iou(a, b), torch.tensor([1 / 7, 1.0, 0.0]))
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=generator) * 50
    boxes1 = torch.cat([xy, xy + torch.rand(30, 2, generator=generator) * 30], dim=1)
    boxes2 = boxes1 + torch.randn(30, 4, generator=generator) * 3
    assert torch.allclose(elementwise_box_iou(boxes1, boxes2), box_iou(boxes1, boxes2).diagonal())
    assert elementwise_box_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)
    with pytest.raises(ValueError, match="same shape"):
        elementwise_box_iou(torch.zeros(2, 4), torch.zeros(3, 4))
