"""visualize/draw.py: the one box-drawing routine and its pixel rule."""

import numpy as np
import pytest
import torch

from fcos_from_scratch.visualize.draw import PALETTE, draw_boxes, to_pil


def test_outline_covers_exactly_the_boxes_pixels():
    # Box [2, 3) x ... : x1 = 2, x2 = 6 covers columns 2..5, so the outline's right edge
    # is column 5 and column 6 stays untouched (the rule of docs/CONVENTIONS.md).
    image = torch.zeros(3, 12, 12)
    out = np.asarray(draw_boxes(image, torch.tensor([[2.0, 3.0, 6.0, 8.0]]), width=1))
    painted = out.sum(axis=-1) > 0  # (H, W)
    rows, cols = np.nonzero(painted)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (2, 5, 3, 7)
    assert tuple(out[3, 2]) == PALETTE[0]


def test_captions_are_drawn_on_a_filled_label_and_low_scores_skipped():
    image = torch.ones(3, 60, 80)
    boxes = torch.tensor([[10.0, 30.0, 40.0, 50.0], [50.0, 30.0, 70.0, 50.0]])
    out = np.asarray(draw_boxes(image, boxes, torch.tensor([1, 2]), torch.tensor([0.9, 0.1]),
                                ["a", "b", "c"], score_threshold=0.5))
    above = out[14:30, 10:40]  # the caption sits above the first box
    assert (above == PALETTE[1]).all(axis=-1).sum() > 20  # its filled label
    assert (out[30:50, 50:70] == 255).all()  # the second box is below the threshold


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same length"):
        draw_boxes(torch.zeros(3, 4, 4), torch.zeros(2, 4), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_pil(torch.zeros(4, 4))


def test_captions_of_coincident_boxes_do_not_overlap_and_stay_inside():
    # Two detections of the same object: both captions must stay readable, the best
    # one in the usual place above the box, the other moved down past it.
    image = torch.ones(3, 60, 80)
    boxes = torch.tensor([[60.0, 20.0, 80.0, 50.0], [60.0, 20.0, 80.0, 50.0]])
    out = np.asarray(draw_boxes(image, boxes, torch.tensor([1, 3]), torch.tensor([0.9, 0.8]),
                                ["a", "b", "c", "d"]))
    rows_1 = np.nonzero((out == PALETTE[1]).all(axis=-1).any(axis=1))[0]
    rows_3 = np.nonzero((out == PALETTE[3]).all(axis=-1).any(axis=1))[0]
    label_rows_1 = [r for r in rows_1 if r < 20]  # the best caption: above the box
    assert label_rows_1 and max(label_rows_1) < 20
    filled_3 = (out == PALETTE[3]).all(axis=-1).sum(axis=1)  # (H,) label pixels per row
    assert filled_3[20:].max() > 20  # the second caption's label sits below the first, visible
