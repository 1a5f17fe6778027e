"""The anchor-refinement picture of RefineDetLite (``visualize/refinedet.py``)."""

import pytest
import torch

from fcos_from_scratch.models import build_model
from fcos_from_scratch.visualize.refinedet import refinement_picture


def test_refinement_picture_writes_a_png_and_keeps_the_mode(tmp_path):
    torch.manual_seed(0)
    model = build_model("refinedet_lite", num_classes=3, width=8, extra_channels=(32, 32), head_channels=16)
    model.train()
    image = torch.rand(3, 96, 128)
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 60.0]]), "labels": torch.tensor([1])}
    path = refinement_picture(model, image, target, tmp_path / "pictures" / "refinement.png", top=5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert model.training  # restored after drawing in eval mode
    with pytest.raises(ValueError, match="image"):
        refinement_picture(model, torch.rand(96, 128), target, tmp_path / "x.png")
    with pytest.raises(ValueError, match="top"):
        refinement_picture(model, image, None, tmp_path / "x.png", top=0)
