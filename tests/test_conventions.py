"""The conventions of docs/CONVENTIONS.md, pinned.

Each test states one convention in executable form, so changing a convention
means changing a test on purpose.
"""

import torch

from fcos_from_scratch.ops import box_area, box_convert, box_iou, clip_boxes_to_image


def test_boxes_are_continuous_without_plus_one():
    # A box covering pixel columns 0..9 and rows 0..4 is (0, 0, 10, 5): width 10, height 5.
    box = torch.tensor([[0.0, 0.0, 10.0, 5.0]])
    assert box_area(box).item() == 50.0  # not (10 + 1) * (5 + 1)
    assert box_convert(box, "xyxy", "xywh").tolist() == [[0.0, 0.0, 10.0, 5.0]]


def test_adjacent_pixels_do_not_overlap():
    # Pixel (col 0) = [0, 1) and pixel (col 1) = [1, 2): they share an edge, not an area.
    left = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    right = torch.tensor([[1.0, 0.0, 2.0, 1.0]])
    assert box_iou(left, right).item() == 0.0


def test_sizes_are_height_then_width():
    # size = (H, W): a 100-row, 200-column image's right edge is x = 200, bottom y = 100.
    clipped = clip_boxes_to_image(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), (100, 200))
    assert clipped.tolist() == [[0.0, 0.0, 200.0, 100.0]]


def test_dtype_is_kept_for_float32_and_float64():
    for dtype in (torch.float32, torch.float64):
        boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=dtype)
        assert box_iou(boxes, boxes).dtype == dtype
        assert box_convert(boxes, "xyxy", "cxcywh").dtype == dtype


def test_degenerate_boxes_give_zero_iou_not_nan():
    point = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    assert box_iou(point, point).item() == 0.0
