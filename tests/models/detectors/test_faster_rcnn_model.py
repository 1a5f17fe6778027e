"""Faster R-CNN (``models/detectors/faster_rcnn.py``): RoI targets, loss, inference, the model."""

import pytest
import torch
import torch.nn.functional as F

from fcos_from_scratch.models import build_model
from fcos_from_scratch.models.detectors.faster_rcnn import (
    FasterRCNNConfig,
    ResidualBlock,
    assign_targets,
    faster_rcnn_loss,
    postprocess,
)
from fcos_from_scratch.models.matching import Matcher
from fcos_from_scratch.models.sampling import BalancedPositiveNegativeSampler
from fcos_from_scratch.ops.poolers import map_levels

SMALL = dict(backbone="tiny", num_classes=3, fpn_channels=16, representation_size=32,
             anchor_sizes=(16, 32, 64, 128, 256), rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
             rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=30, box_batch_size_per_image=32)


def small_model(**changes):
    torch.manual_seed(0)
    return build_model("faster_rcnn", **{**SMALL, **changes})


def data():
    images = [torch.rand(3, 100, 120, generator=torch.Generator().manual_seed(0)),
              torch.rand(3, 90, 130, generator=torch.Generator().manual_seed(1))]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 20.0, 90.0, 80.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    return images, targets


def test_defaults_are_torchvisions():
    config = FasterRCNNConfig(num_classes=90)
    assert config.anchor_sizes == (32, 64, 128, 256, 512) and config.aspect_ratios == (0.5, 1.0, 2.0)
    assert (config.rpn_pre_nms_top_n_train, config.rpn_pre_nms_top_n_test) == (2000, 1000)
    assert (config.rpn_fg_iou_thresh, config.rpn_bg_iou_thresh, config.rpn_nms_thresh) == (0.7, 0.3, 0.7)
    assert (config.rpn_batch_size_per_image, config.rpn_positive_fraction) == (256, 0.5)
    assert (config.box_batch_size_per_image, config.box_positive_fraction) == (512, 0.25)
    assert (config.score_thresh, config.nms_thresh, config.detections_per_img) == (0.05, 0.5, 100)


@pytest.mark.parametrize("bad, match", [
    (dict(num_classes=0), "num_classes"), (dict(box_head="3fc"), "box_head"),
    (dict(anchor_sizes=(32, 64)), "anchor_sizes"), (dict(rpn_fg_iou_thresh=1.5), "rpn_fg_iou_thresh"),
    (dict(box_bg_iou_thresh=0.6), "box_bg_iou_thresh"),
    (dict(trunk_features=("C2", "C4")), "trunk_features"), (dict(trunk_features=("C4", "C3")), "trunk_features"),
    (dict(trunk_features=("C3", "C4", "C5")), "anchor_sizes needs one size per level P3..P6"),
    (dict(rpn_levels=("P3", "P4")), "rpn_levels must be consecutive levels .* ending at P6"),
    (dict(rpn_levels=("P3", "P5", "P6")), "rpn_levels"),
    (dict(rpn_levels=("P3", "P4", "P5", "P6")), "anchor_sizes needs one size per level P3..P6"),
    (dict(roi_canonical_scale=0.0), "roi_canonical_scale"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        FasterRCNNConfig(**{"num_classes": 3, **bad})


def test_training_step_gives_four_finite_losses_and_learns():
    model = small_model().train()
    images, targets = data()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    first = None
    for _ in range(25):
        total = sum(model(images[:1], targets[:1]).values())
        first = first if first is not None else total.item()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert total.item() < 0.6 * first


def test_eval_detections_format():
    model = small_model().eval()
    images, _ = data()
    with torch.no_grad():
        detections = model(images)
    for detection, image in zip(detections, images):
        assert len(detection["boxes"]) <= 100 and detection["labels"].dtype == torch.int64
        assert ((detection["labels"] >= 0) & (detection["labels"] < 3)).all()
        assert (detection["boxes"][:, 2] <= image.shape[2]).all() and (detection["scores"] > 0.05).all()
        assert (detection["scores"][:-1] >= detection["scores"][1:]).all() or len(detection["scores"]) < 2


def test_bad_labels_and_missing_targets_are_errors():
    model = small_model().train()
    images, targets = data()
    with pytest.raises(ValueError, match=r"labels must be in 0..2"):
        model(images[:1], [{"boxes": targets[0]["boxes"], "labels": torch.tensor([0, 3])}])
    with pytest.raises(ValueError, match="one target per image"):
        model(images)


def test_assign_targets_appends_ground_truth_and_labels_by_class_plus_one():
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 4.0]])]
    gt = [torch.tensor([[0.0, 0.0, 10.0, 9.0]])]
    rois, labels, matched = assign_targets(proposals, gt, [torch.tensor([4])], Matcher(0.5, 0.5, False),
                                           BalancedPositiveNegativeSampler(512, 0.25))
    assert len(rois[0]) == 4  # three proposals + the appended ground-truth box, index order
    assert torch.equal(rois[0][3], gt[0][0])
    assert labels[0].tolist() == [5, 0, 0, 5]  # IoU 0.9 -> class 4 + 1; 0 and 0.44 -> background
    assert torch.equal(matched[0], gt[0].expand(4, 4))


def test_loss_by_hand_and_without_positives():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], requires_grad=True)
    deltas = torch.zeros(2, 12, requires_grad=True)
    targets = [torch.tensor([[9.0, 9, 9, 9], [0.05, 0.0, 0.0, 2.0]])]
    losses = faster_rcnn_loss(logits, deltas, [torch.tensor([0, 1])], targets)
    assert torch.allclose(losses["loss_classifier"], F.cross_entropy(logits, torch.tensor([0, 1])))
    # positive RoI 1 (class 1): 0.5 * 0.05^2 * 9 + (2 - 1/18), over 2 sampled RoIs
    assert torch.allclose(losses["loss_box_reg"], torch.tensor((0.01125 + 2 - 1 / 18) / 2))
    losses = faster_rcnn_loss(logits, deltas, [torch.tensor([0, 0])], targets)
    assert losses["loss_box_reg"] == 0
    sum(losses.values()).backward()


def test_postprocess_thresholds_small_boxes_and_classwise_nms():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.55, 0.35], [0.97, 0.02, 0.01]]))
    boxes = torch.tensor([[[0.0, 0, 1, 1], [0.0, 0, 10, 10], [0.0, 0, 10, 10]],
                          [[0.0, 0, 1, 1], [1.0, 0, 11, 10], [20.0, 20, 20.005, 30]],
                          [[0.0, 0, 1, 1], [0.0, 0, 5, 5], [0.0, 0, 5, 5]]])
    (detection,) = postprocess(logits, boxes, [3], [(40, 40)])
    # class 1 (label 0): 0.6 suppresses 0.55 (IoU 0.82); class 2 (label 1): 0.3 kept, the
    # 0.005-wide box removed; RoI 3 scores 0.02 and 0.01 are under 0.05.
    assert detection["labels"].tolist() == [0, 1]
    assert torch.allclose(detection["scores"], torch.tensor([0.6, 0.3]))


def test_residual_fpn_starts_as_the_plain_fpn():
    block = ResidualBlock(8).eval()
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(block(x), x)
    plain, residual = small_model().eval(), small_model(residual_fpn=True).eval()
    missing = residual.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("residual.") for key in missing)
    images, _ = data()
    with torch.no_grad():
        a, b = plain(images), residual(images)
    for x, y in zip(a, b):
        assert torch.equal(x["labels"], y["labels"]) and torch.allclose(x["boxes"], y["boxes"])


def test_v2_parts_build_and_run():
    model = small_model(fpn_norm="bn", rpn_conv_depth=2, box_head="4conv1fc").eval()
    assert len(model.rpn.head.conv) == 2 and isinstance(model.box_head[4], torch.nn.Flatten)
    with torch.no_grad():
        assert len(model(data()[0])) == 2


def test_pyramid_from_c3_drops_the_stride_4_level_and_pools_from_p3_to_p5():
    model = small_model(trunk_features=("C3", "C4", "C5"), anchor_sizes=(16, 32, 64, 128)).train()
    images, targets = data()
    _, _, levels = model.pyramid(images)
    assert [level.shape[-1] for level in levels] == [20, 10, 5, 3]  # 130 px padded to 160: strides 8..64
    assert model.roi_pool.featmap_names == ["0", "1", "2"]  # P3..P5; the max-pooled P6 only proposes
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    assert model(images)[0]["boxes"].shape[-1] == 4


def test_rpn_can_skip_p2_while_rois_are_pooled_from_it():
    """``rpn_levels``: anchors only on P3..P6, RoIs still pooled from P2..P5 by [fpn] Eq. (1)."""
    model = small_model(rpn_levels=("P3", "P4", "P5", "P6"), anchor_sizes=(16, 32, 64, 128),
                        roi_canonical_scale=64.0).train()
    images, targets = data()
    batch, _, levels = model.pyramid(images)
    assert len(levels) == 5 and model.roi_pool.featmap_names == ["0", "1", "2", "3"]  # P2..P5 pool
    *_, counts = model.rpn.predict(tuple(batch.shape[-2:]), levels[model.rpn_first_level:])
    expected = [level.shape[-2] * level.shape[-1] * 3 for level in levels[1:]]  # 3 aspect ratios per cell
    assert list(counts) == expected  # no anchor on P2
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    # s0 = 64, k0 = 4: a 16 px RoI maps to floor(4 + log2(16 / 64)) = 2, a 64 px one to 4
    rois = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 64.0, 64.0]])
    assert (map_levels(rois, 2, 5, canonical_scale=64.0) + 2).tolist() == [2, 4]
    assert model.roi_pool.canonical_scale == 64.0
    model.eval()
    assert model(images)[0]["boxes"].shape[-1] == 4
