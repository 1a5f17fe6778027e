"""``visualize/rpn.py``: the three RPN pictures are written and show the right counts."""

import pytest
import torch

from fcos_from_scratch.models import build_model
from fcos_from_scratch.visualize.rpn import rpn_pictures


def test_rpn_pictures_writes_three_pngs(tmp_path):
    torch.manual_seed(0)
    model = build_model("faster_rcnn", backbone="tiny", num_classes=3, fpn_channels=16, representation_size=32,
                        anchor_sizes=(16, 32, 64, 128, 256), rpn_pre_nms_top_n_test=50,
                        rpn_post_nms_top_n_test=20, box_batch_size_per_image=16)
    image = torch.rand(3, 96, 80)
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 60.0]]), "labels": torch.tensor([1])}
    paths = rpn_pictures(model, image, target, tmp_path)
    assert [p.name for p in paths] == ["anchors.png", "proposals.png", "rois.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert model.training  # the mode is restored


def test_rpn_pictures_rejects_a_batch(tmp_path):
    model = build_model("faster_rcnn", backbone="tiny", num_classes=3, fpn_channels=16, representation_size=32)
    with pytest.raises(ValueError, match="image must be"):
        rpn_pictures(model, torch.rand(1, 3, 32, 32), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}, tmp_path)
