"""The FCOS loss (models/detectors/fcos.py) against frozen torchvision values, plus edge cases."""

import importlib
import math
import os

import pytest
import torch

from fcos_from_scratch.models.detectors.fcos import FCOSConfig, assign_targets, fcos_loss, make_points
from fcos_from_scratch.models.images import pad_ground_truth
from conftest import FIXTURES

fcos_loss_module = importlib.import_module("fcos_from_scratch.models.detectors.fcos")


def loss_config(**options) -> FCOSConfig:
    """The loss reads only its own fields of the detector config."""
    return FCOSConfig(num_classes=1, **options)
FIXTURE = os.path.join(FIXTURES, "fcos_loss_refs.pt")


@pytest.fixture(scope="module")
def ref():
    """Frozen inputs/outputs of torchvision's FCOS.compute_loss, with our targets for them."""
    ref = torch.load(FIXTURE, weights_only=True)
    size = ref["image_size"]
    points = make_points([(size // s, size // s) for s in ref["strides"]], ref["strides"])
    targets = [{"boxes": b, "labels": l} for b, l in zip(ref["boxes"], ref["labels"])]
    ref["assigned"] = assign_targets(points, ref["strides"], *pad_ground_truth(targets))
    return ref


def run_loss(ref, **config):
    assigned = ref["assigned"]
    return fcos_loss(ref["cls_logits"], ref["bbox_regression"], ref["bbox_ctrness"],
                     assigned.labels, assigned.ltrb, assigned.centerness, loss_config(**config))


def test_matches_torchvision_with_unweighted_box_loss(ref):
    # torchvision: GIoU summed over positives / N_pos (our box_weighting="none").
    losses = run_loss(ref, box_weighting="none")
    assert torch.allclose(losses["loss_cls"], ref["loss_classification"], rtol=1e-5)
    assert torch.allclose(losses["loss_box"], ref["loss_bbox_regression"], rtol=1e-5)
    assert torch.allclose(losses["loss_ctr"], ref["loss_bbox_ctrness"], rtol=1e-5)


def test_centerness_weighted_box_loss_from_frozen_terms(ref):
    # FCOS code: sum_i c*_i GIoU-loss_i / sum_i c*_i, from torchvision's per-positive terms.
    giou, centerness = ref["giou_loss_per_positive"], ref["centerness_per_positive"]
    expected = (giou * centerness).sum() / centerness.sum()
    losses = run_loss(ref)
    assert torch.allclose(losses["loss_box"], expected, rtol=1e-5)
    assert not torch.allclose(losses["loss_box"], ref["loss_bbox_regression"], rtol=1e-3)
    # The other two terms do not depend on the box weighting.
    assert torch.allclose(losses["loss_cls"], ref["loss_classification"], rtol=1e-5)


def test_term_weights_scale_each_term(ref):
    base = run_loss(ref)
    weighted = run_loss(ref, cls_weight=0.5, box_weight=2.0, centerness_weight=3.0)
    for key, factor in (("loss_cls", 0.5), ("loss_box", 2.0), ("loss_ctr", 3.0)):
        assert torch.allclose(weighted[key], factor * base[key])


def test_no_positives_is_finite_and_backpropagates():
    generator = torch.Generator().manual_seed(0)
    cls_logits = torch.randn(2, 20, 3, generator=generator, requires_grad=True)
    box = torch.rand(2, 20, 4, generator=generator, requires_grad=True)
    ctr = torch.randn(2, 20, generator=generator, requires_grad=True)
    labels = torch.full((2, 20), -1)
    losses = fcos_loss(cls_logits, box, ctr, labels, torch.zeros(2, 20, 4), torch.zeros(2, 20),
                       loss_config())
    total = sum(losses.values())
    assert torch.isfinite(total)
    assert losses["loss_box"] == 0 and losses["loss_ctr"] == 0
    # With no positive the focal loss is normalised by 1 (not 0).
    p = torch.sigmoid(cls_logits.detach())
    expected = (0.75 * p ** 2 * -torch.log1p(-p)).sum()
    assert torch.allclose(losses["loss_cls"], expected, rtol=1e-5)
    total.backward()
    for tensor in (cls_logits, box, ctr):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert (box.grad == 0).all() and (ctr.grad == 0).all()


def test_single_positive_by_hand():
    # One point, one class. Prediction = target box, so GIoU loss = 0; centerness
    # target of ltrb (1, 1, 1, 3) = sqrt(1 * 1/3); BCE with logit 0 = log 2.
    cls_logits = torch.tensor([[[0.0]]])
    target_ltrb = torch.tensor([[[1.0, 1.0, 1.0, 3.0]]])
    losses = fcos_loss(cls_logits, target_ltrb.clone(), torch.zeros(1, 1), torch.tensor([[0]]),
                       target_ltrb, torch.tensor([[math.sqrt(1 / 3)]]), loss_config())
    assert losses["loss_box"].abs() < 1e-6
    assert torch.allclose(losses["loss_ctr"], torch.tensor(math.log(2.0)))
    # Focal loss of p = 0.5, target 1: 0.25 * 0.5^2 * log 2.
    assert torch.allclose(losses["loss_cls"], torch.tensor(0.25 * 0.25 * math.log(2.0)))


def test_normalisers_are_averaged_over_processes(ref, monkeypatch):
    # Under DDP the normalisers go through all_reduce_mean; pretend the other
    # processes had twice as many positives (and twice the centerness sum).
    base = run_loss(ref)
    monkeypatch.setattr(fcos_loss_module, "all_reduce_mean", lambda t: 2 * t)
    doubled = run_loss(ref)
    for key in base:
        assert torch.allclose(doubled[key], base[key] / 2)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="box_ltrb"):
        fcos_loss(torch.zeros(1, 4, 2), torch.zeros(1, 3, 4), torch.zeros(1, 4),
                  torch.zeros(1, 4, dtype=torch.int64), torch.zeros(1, 4, 4), torch.zeros(1, 4),
                  loss_config())
    with pytest.raises(ValueError, match="target_labels"):
        fcos_loss(torch.zeros(1, 4, 2), torch.zeros(1, 4, 4), torch.zeros(1, 4),
                  torch.zeros(4, dtype=torch.int64), torch.zeros(1, 4, 4), torch.zeros(1, 4),
                  loss_config())
    with pytest.raises(ValueError, match="box_weighting"):
        loss_config(box_weighting="area")
