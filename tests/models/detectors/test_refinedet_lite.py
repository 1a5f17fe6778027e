"""RefineDetLite (``models/detectors/refinedet_lite.py`` and ``refinedet_targets.py``)."""

import dataclasses

import pytest
import torch
from torch import nn

from fcos_from_scratch.config import RunConfig, TrainConfig
from fcos_from_scratch.engine.checkpoint import atomic_save, training_state
from fcos_from_scratch.engine.evaluate import load_model
from fcos_from_scratch.engine.optim import parameter_groups
from fcos_from_scratch.models import build_detector, build_model, detector_config
from fcos_from_scratch.models.detectors.refinedet_lite import (
    SSD_BOX_WEIGHTS,
    RefineDetLite,
    RefineDetLiteConfig,
    mined_classification_loss,
    refinedet_loss,
)
from fcos_from_scratch.models.detectors.refinedet_targets import (
    IGNORE_LABEL,
    AnchorTargets,
    arm_labels,
    filter_negative_anchors,
    match_anchors,
    negative_anchor_mask,
)
from fcos_from_scratch.models.matching import Matcher
from fcos_from_scratch.ops import BoxCoder

SMALL = dict(num_classes=3, width=8, extra_channels=(32, 32), head_channels=16)


def small_model(**changes):
    torch.manual_seed(0)
    return build_model("refinedet_lite", **{**SMALL, **changes})


class StandInTrunk(nn.Module):
    """Four strided convs standing in for Res2NetLite where only the heads and losses matter."""

    out_channels = (16, 16, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 4, 1), nn.ReLU())
        self.levels = nn.ModuleList(nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU()) for _ in range(3))

    def forward(self, x):
        features = [self.stem(x)]  # stride 16
        for level in self.levels:
            features.append(level(features[-1]))
        return features


def fast_model(**changes):
    torch.manual_seed(0)
    return RefineDetLite(RefineDetLiteConfig(**{**SMALL, **changes}), trunk=StandInTrunk())


def data():
    images = [torch.rand(3, 100, 120, generator=torch.Generator().manual_seed(0)),
              torch.rand(3, 90, 130, generator=torch.Generator().manual_seed(1))]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 20.0, 100.0, 80.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    return images, targets


# ------------------------------------------------------------------ config and shapes

def test_defaults_are_the_papers_basic_configuration():
    config = RefineDetLiteConfig(num_classes=80)
    assert (config.width, config.block, config.head, config.extra_channels) == (72, "res2", "light", (512, 512))
    assert config.aspect_ratios == (1.0, 2.0, 0.5) and config.fg_iou_thresh == 0.5
    assert (config.neg_pos_ratio, config.negative_filter_theta) == (3.0, 0.01)
    assert (config.loc_loss, config.cls_loss, config.nms_method, config.nms_thresh) == ("smooth_l1", "ce", "nms", 0.45)
    assert (config.soft_nms_sigma, config.soft_nms_iou_thresh, config.detections_per_img) == (0.5, 0.3, 100)
    assert (config.iou_guided_alpha, config.iou_guided_beta, config.class_weight_gamma) == (0.25, 0.9, 0.75)
    assert SSD_BOX_WEIGHTS == (10.0, 10.0, 5.0, 5.0)  # [ssd] variances 0.1, 0.2


@pytest.mark.parametrize("bad, match", [
    (dict(num_classes=0), "num_classes"), (dict(head="heavy"), "head"), (dict(block="res3"), "block"),
    (dict(loc_loss="l2"), "loc_loss"), (dict(cls_loss="focal"), "cls_loss"), (dict(nms_method="wbf"), "nms_method"),
    (dict(anchor_sizes=(32.0, 64.0)), "anchor_sizes"), (dict(negative_filter_theta=1.0), "negative_filter_theta"),
    (dict(class_weight_max=0.5), "class_weight_max"), (dict(class_counts=(1, 2)), "class_counts"),
    (dict(fg_iou_thresh=1.5), "fg_iou_thresh"), (dict(width=0), "width"),
    (dict(first_source_stage=0), "first_source_stage"), (dict(transfer_input="fpn"), "transfer_input"),
    (dict(first_source_stage=1), r"anchor_sizes needs one positive size per source level \(5\)"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        RefineDetLiteConfig(**{"num_classes": 3, **bad})


def test_transfer_blocks_can_read_the_sources():
    # "source": each Light transfer block fuses the trunk's source through a 1x1 lateral
    # (as [refinedet]'s TCB), not the ARM head's output; the outputs keep their shapes
    arm, source = small_model().eval(), small_model(transfer_input="source").eval()
    assert not arm.head.transfer_from_source and source.head.transfer_from_source
    widths = [block.lateral[0].in_channels for block in source.head.transfer]  # conv_bn_relu: conv first
    assert widths == list(source.backbone.out_channels)  # 8c, 16c and the extras
    assert all(isinstance(block.lateral, nn.Identity) for block in arm.head.transfer)
    images = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        a = arm.head(arm.backbone(arm.preprocess(images, [(96, 128)])[0]))
        b = source.head(source.backbone(source.preprocess(images, [(96, 128)])[0]))
    assert [t.shape for t in a] == [t.shape for t in b]
    assert not small_model(head="plain3x3", transfer_input="source").head.transfer_from_source  # plain: always the source


def test_refinedetlite72_shapes_at_320():
    # Res2NetLite72: sources 20x20x576, 10x10x1152, 5x5x512, 3x3x512; A = 3 anchors per cell.
    torch.manual_seed(0)
    model = RefineDetLite(RefineDetLiteConfig(num_classes=80)).eval()
    assert tuple(model.backbone.out_channels) == (576, 1152, 512, 512)
    batch, _ = model.preprocess(torch.zeros(1, 3, 320, 320))
    with torch.no_grad():
        sources = model.backbone(batch)
        arm_logits, arm_offsets, odm_logits, odm_offsets = model.head(sources)
    assert [tuple(s.shape[-2:]) for s in sources] == [(20, 20), (10, 10), (5, 5), (3, 3)]
    num_anchors = 3 * (400 + 100 + 25 + 9)  # 1602
    assert arm_logits.shape == (1, num_anchors, 2) and arm_offsets.shape == (1, num_anchors, 4)
    assert odm_logits.shape == (1, num_anchors, 81) and odm_offsets.shape == (1, num_anchors, 4)


def test_light_head_predicts_with_1x1_convs_and_the_baseline_with_3x3():
    light, plain = small_model(), small_model(head="plain3x3", block="res")
    assert all(p.cls.kernel_size == (1, 1) for p in list(light.head.arm) + list(light.head.odm))
    assert all(p.cls.kernel_size == (3, 3) for p in list(plain.head.arm) + list(plain.head.odm))
    assert type(plain.backbone.stage2[1]).__name__ == "ResBlock"
    assert type(light.backbone.stage2[1]).__name__ == "Res2Block"


def test_top_down_fusion_upsamples_to_the_finer_size_3_to_5():
    model = small_model().eval()
    sources = [torch.rand(1, c, s, s) for c, s in zip(model.backbone.out_channels, (20, 10, 5, 3))]
    with torch.no_grad():
        arm_logits, _, odm_logits, _ = model.head(sources)
    assert odm_logits.shape[1] == arm_logits.shape[1] == 3 * (400 + 100 + 25 + 9)


# ------------------------------------------------------------------ targets

def test_match_anchors_by_hand_threshold_and_best_anchor():
    # Anchor 0 = box 0 exactly (IoU 1, positive); anchor 1 overlaps box 1 with IoU
    # 100 / 400 = 0.25 but is box 1's best anchor -> positive for box 1; anchor 2 is
    # background; its best-overlap box (box 1, IoU 0) is still reported.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [100.0, 100.0, 110.0, 110.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 40.0, 40.0]])
    labels = torch.tensor([2, 0])
    targets = match_anchors(anchors, [boxes], [labels], Matcher(0.5, 0.5, best_prediction_per_gt=True))
    assert targets.labels.tolist() == [[3, 1, 0]]  # class + 1, background 0
    assert targets.boxes[0, :2].tolist() == boxes.tolist()
    assert torch.allclose(targets.ious, torch.tensor([[1.0, 0.25, 0.0]]))
    assert arm_labels(targets).tolist() == [[1, 1, 0]]


def test_match_anchors_without_boxes_and_with_degenerate_boxes():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    matcher = Matcher(0.5, 0.5, best_prediction_per_gt=True)
    targets = match_anchors(anchors, [torch.zeros(0, 4), torch.tensor([[5.0, 5.0, 5.0, 9.0]])],
                            [torch.zeros(0, dtype=torch.int64), torch.tensor([1])], matcher)
    assert targets.labels.tolist() == [[0, 0], [0, 0]]  # a zero-width box has no code: dropped
    with pytest.raises(ValueError, match="anchors"):
        match_anchors(torch.zeros(2, 3, 4), [torch.zeros(0, 4)], [torch.zeros(0)], matcher)


def test_negative_anchor_filtering_threshold():
    # softmax([0, x])[0] = 1 / (1 + e^x): x = -5 -> 0.9933 > 0.99 (filtered), x = -4 -> 0.982 (kept).
    logits = torch.tensor([[[0.0, -5.0], [0.0, -4.0], [0.0, 3.0]]])
    filtered = negative_anchor_mask(logits, theta=0.01)
    assert filtered.tolist() == [[True, False, False]]
    assert not negative_anchor_mask(logits, theta=0.0).any()
    assert filter_negative_anchors(torch.tensor([[2, 0, 1]]), filtered).tolist() == [[IGNORE_LABEL, 0, 1]]
    with pytest.raises(ValueError, match="arm_logits"):
        negative_anchor_mask(torch.zeros(1, 3, 4), 0.01)


def test_filtered_anchors_are_ignored_in_training_and_suppressed_at_inference():
    model = fast_model()
    images, targets = data()
    with torch.no_grad():
        for predictor in model.head.arm:  # every anchor: background with probability ~1
            predictor.cls.bias.view(-1, 2)[:, 0] = 20.0
    losses = model.train()(images, targets)
    assert losses["filtered_fraction"] == 1.0 and losses["odm_positives"] == 0
    assert losses["loss_odm_cls"] == 0 and losses["loss_odm_loc"] == 0
    with torch.no_grad():
        assert all(len(d["boxes"]) == 0 for d in model.eval()(images))
        for predictor in model.head.arm:
            predictor.cls.bias.view(-1, 2)[:, 0] = 0.0
        assert all(len(d["boxes"]) > 0 for d in model(images))


# ------------------------------------------------------------------ loss

def test_ohem_keeps_positives_and_three_hardest_negatives_by_hand():
    per_anchor = torch.tensor([[1.0, 0.1, 0.9, 0.8, 0.2, 0.7, 5.0]])
    labels = torch.tensor([[2, 0, 0, 0, 0, 0, IGNORE_LABEL]])
    # positive 1.0 + negatives 0.9 + 0.8 + 0.7; the ignored 5.0 never counts.
    assert mined_classification_loss(per_anchor, labels, 3.0).item() == pytest.approx(3.4)


def perfect_case(loc_loss, cls_loss="ce"):
    """One image, two anchors: anchor 0 is the box, the predicted offsets are 0."""
    config = RefineDetLiteConfig(num_classes=2, loc_loss=loc_loss, cls_loss=cls_loss)
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [50.0, 50.0, 60.0, 60.0]])
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    matcher = Matcher(0.5, 0.5, best_prediction_per_gt=True)
    targets = match_anchors(anchors, [box], [torch.tensor([1])], matcher)
    outputs = (torch.zeros(1, 2, 2, requires_grad=True), torch.zeros(1, 2, 4, requires_grad=True),
               torch.zeros(1, 2, 3, requires_grad=True), torch.zeros(1, 2, 4, requires_grad=True))
    return outputs, anchors, targets, config


@pytest.mark.parametrize("loc_loss", ["smooth_l1", "giou"])
def test_loss_by_hand_perfect_boxes_uniform_logits(loc_loss):
    outputs, anchors, targets, config = perfect_case(loc_loss)
    terms = refinedet_loss(outputs, anchors, targets, targets, anchors[None], BoxCoder(SSD_BOX_WEIGHTS), config)
    # Offsets 0 on an anchor equal to its box: no localisation loss. Uniform logits:
    # CE = log 2 (ARM) and log 3 (ODM) for the positive and for the one mined negative
    # (3:1 but only one negative exists), divided by 1 positive.
    assert terms["arm_loc"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["odm_loc"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["arm_cls"].item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item(), rel=1e-5)
    assert terms["odm_cls"].item() == pytest.approx(2 * torch.log(torch.tensor(3.0)).item(), rel=1e-5)
    sum(terms.values()).backward()
    assert all(o.grad is not None for o in outputs)


def test_iou_guided_soft_labels_at_iou_one_and_zero_equal_cross_entropy():
    # Positive with IoU 1 -> y_t = 1 and eta = 1; the negative overlaps no box -> y_0 = 1:
    # Eq. (2)-(4) reduce to the one-hot cross entropy.
    outputs, anchors, targets, config = perfect_case("smooth_l1")
    coder = BoxCoder(SSD_BOX_WEIGHTS)
    plain = refinedet_loss(outputs, anchors, targets, targets, anchors[None], coder, config)
    guided = refinedet_loss(outputs, anchors, targets, targets, anchors[None], coder,
                            dataclasses.replace(config, cls_loss="iou_guided"))
    assert guided["odm_cls"].item() == pytest.approx(plain["odm_cls"].item(), rel=1e-5)
    shifted = (outputs[0], outputs[1], outputs[2], outputs[3] + torch.tensor([5.0, 0.0, 0.0, 0.0]))
    moved = refinedet_loss(shifted, anchors, targets, targets, anchors[None], coder,
                           dataclasses.replace(config, cls_loss="iou_guided"))
    assert moved["odm_cls"].item() != pytest.approx(plain["odm_cls"].item(), rel=1e-3)  # IoU < 1: soft label


def test_class_weights_need_counts_and_come_from_eq5():
    images, targets = data()
    with pytest.raises(ValueError, match="class_counts"):
        fast_model(class_weight_max=10.0).train()(images, targets)
    model = fast_model(class_weight_max=10.0, class_counts=(100, 10, 1))
    # Eq. (5): the most frequent class 1, the rarest W = 10, background 1.
    assert model.class_weights[0] == 1 and model.class_weights[1] == pytest.approx(1.0)
    assert model.class_weights[3] == pytest.approx(10.0)
    assert torch.isfinite(sum(v for k, v in model.train()(images, targets).items() if k.startswith("loss")))


def test_learned_sigma_is_logged_and_not_weight_decayed():
    model = fast_model(learned_loss_weights=True).train()
    images, targets = data()
    outputs = model(images, targets)
    assert [k for k in outputs if k.startswith("loss")] == ["loss_weighted"]
    assert {f"sigma_{t}" for t in ("arm_loc", "arm_cls", "odm_loc", "odm_cls")} <= set(outputs)
    sigma_params = {id(p) for p in model.loss_weights.parameters()}
    groups = parameter_groups(model, weight_decay=5e-4)
    assert all(g["weight_decay"] == 0 for g in groups if any(id(p) in sigma_params for p in g["params"]))
    outputs["loss_weighted"].backward()
    assert all(p.grad is not None for p in model.loss_weights.parameters())


# ------------------------------------------------------------------ training and inference

def test_one_training_step_gives_four_finite_losses_and_learns():
    model = fast_model().train()
    images, targets = data()
    losses = model(images, targets)
    assert {k for k in losses if k.startswith("loss")} == {"loss_arm_loc", "loss_arm_cls", "loss_odm_loc",
                                                            "loss_odm_cls"}
    assert all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.Adam(model.parameters(), 5e-3)
    first = None
    for _ in range(30):
        total = sum(v for k, v in model(images, targets).items() if k.startswith("loss"))
        first = first if first is not None else total.item()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert total.item() < 0.7 * first


@pytest.mark.parametrize("nms_method", ["nms", "soft_nms"])
def test_eval_detections_format_in_the_original_frame(nms_method):
    model = small_model(nms_method=nms_method, detections_per_img=20).eval()
    images, _ = data()
    with torch.no_grad():
        detections = model(images)
        scaled = model(images, orig_sizes=[(200, 240), (90, 130)])
    for detection, image in zip(detections, images):
        assert set(detection) == {"boxes", "scores", "labels"}
        assert 0 < len(detection["boxes"]) <= 20 and detection["labels"].dtype == torch.int64
        assert detection["labels"].max() < 3 and (detection["scores"][:-1] >= detection["scores"][1:]).all()
        height, width = image.shape[-2:]
        assert (detection["boxes"][:, 2] <= width).all() and (detection["boxes"][:, 3] <= height).all()
    assert torch.allclose(scaled[0]["boxes"], detections[0]["boxes"] * 2)


def test_bad_targets_are_errors():
    model = small_model().train()
    images, targets = data()
    with pytest.raises(ValueError, match="one target per image"):
        model(images)
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        model(images[:1], [{"boxes": targets[0]["boxes"], "labels": torch.tensor([0, 3])}])
    with pytest.raises(ValueError, match="needs 'boxes'"):
        model(images[:1], [{"labels": torch.tensor([0])}])


def test_checkpoint_round_trip_through_the_registry(tmp_path):
    options = dict(SMALL, nms_method="soft_nms")
    config = detector_config("refinedet_lite", **options)
    model = build_detector("refinedet_lite", config)
    model.train()(*data())  # moves the BatchNorm statistics away from their initial values
    run = RunConfig(TrainConfig(model="refinedet_lite", out=str(tmp_path)), config)
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    atomic_save(training_state(model, optimizer, None, epoch=1, step=1, config=run.to_dict()), tmp_path / "last.pt")
    loaded, loaded_config, _ = load_model(tmp_path / "last.pt")
    assert isinstance(loaded, RefineDetLite) and loaded_config.model == config
    images, _ = data()
    with torch.no_grad():
        expected, got = model.eval()(images), loaded(images)
    for a, b in zip(expected, got):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_ignored_iou_band_and_two_sizes_per_level():
    # Anchor 1 has IoU 100 / 225 = 0.44 with the box: background with the paper's 0.5,
    # ignored with a [0.4, 0.5) band; anchor 0 (IoU 1) stays positive.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 15.0, 15.0], [50.0, 50.0, 60.0, 60.0]])
    boxes, labels = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [torch.tensor([1])]
    paper = match_anchors(anchors, boxes, labels, Matcher(0.5, 0.5, best_prediction_per_gt=True))
    band = match_anchors(anchors, boxes, labels, Matcher(0.5, 0.4, best_prediction_per_gt=True))
    assert paper.labels.tolist() == [[2, 0, 0]] and band.labels.tolist() == [[2, IGNORE_LABEL, 0]]
    model = fast_model(anchor_scales=(1.0, 1.5), bg_iou_thresh=0.4)
    assert model.head.arm[0].cls.out_channels == 6 * 2  # 3 ratios x 2 sizes, 2 logits
    losses = model.train()(*data())
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_trainer_fills_class_counts_from_the_training_split():
    from fcos_from_scratch.engine.builders import class_box_counts, fill_class_counts

    class Split(torch.utils.data.Dataset):
        records = [{"target": {"labels": torch.tensor([0, 0, 2])}}, {"target": {"labels": torch.tensor([1, 0])}}]

    model = fast_model(class_weight_max=10.0)
    run = RunConfig(TrainConfig(model="refinedet_lite"), model.config)
    assert class_box_counts(Split(), 3) == (3, 1, 1)
    filled = fill_class_counts(run, model, Split())
    assert filled.model.class_counts == model.config.class_counts == (3, 1, 1)
    assert model.class_weights.tolist() == pytest.approx([1.0, 1.0, 10.0, 10.0])
    assert torch.isfinite(model.train()(*data())["loss_odm_cls"])
    plain = RunConfig(TrainConfig(model="refinedet_lite"), fast_model().config)
    assert fill_class_counts(plain, fast_model(), Split()) is plain  # no class weights: untouched
