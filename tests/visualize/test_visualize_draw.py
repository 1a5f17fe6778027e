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
