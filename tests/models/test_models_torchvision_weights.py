"""``from_torchvision``: torchvision's FCOS weights in our FCOS, with the same detections.

Reference values come from ``tests/reference/make_fcos_torchvision_refs.py``
(torchvision 0.29), frozen in ``tests/fixtures/fcos_torchvision_refs.pt``: the
detections of ``fcos_resnet50_fpn`` (BatchNorm2d and FrozenBatchNorm2d backbone)
on two formula images. Weights are not stored: both sides fill torchvision's
state-dict layout with ``tests/reference/deterministic_weights.py``.
"""

import functools
import math
from pathlib import Path

import pytest
import torch

from fcos_from_scratch.models import TORCHVISION_MODELS, build_model, from_torchvision
from fcos_from_scratch.models.detectors.fcos import FCOSHead, make_points, select_candidates
from fcos_from_scratch.models.torchvision_weights import (
    FCOS_KEYS,
    FCOS_RESNET50_FPN,
    load_renamed_,
)
from conftest import TESTS, load_reference

HERE = TESTS
REFS = torch.load(HERE / "fixtures" / "fcos_torchvision_refs.pt", weights_only=True)
NAME = "fcos_resnet50_fpn"
TOLERANCE = 1e-4  # pixels for boxes, absolute for scores
# Boxes: 1e-4 px holds where the fixture was frozen; on another CPU the ResNet-50
# trunk's convolutions sum in another order (oneDNN picks kernels per CPU), and the
# FrozenBatchNorm2d model's boxes were measured 1.07e-4 px off on an AVX-512 AMD EPYC.
BOX_TOLERANCE = 5e-4


WEIGHTS = load_reference("deterministic_weights")


@functools.lru_cache(maxsize=1)
def _torchvision_state_dict():
    template = {key: (shape, getattr(torch, dtype))
                for key, shape, dtype in zip(REFS["keys"], REFS["shapes"], REFS["dtypes"])}
    return WEIGHTS.deterministic_state_dict(template, REFS["overrides"])


def state_dict(**edits):
    """A fresh copy of torchvision's filled state dict (shallow: tensors are shared)."""
    return dict(_torchvision_state_dict(), **edits)


def images():
    return [WEIGHTS.deterministic_image(h, w, i) for i, (h, w) in enumerate(REFS["image_sizes"])]


def test_fixture_records_versions_and_layout():
    assert REFS["versions"]["torchvision"].startswith("0.29")
    assert REFS["constructor"] == {"name": NAME, "num_classes": 20, "min_size": 200, "max_size": 1333}
    assert REFS["padded_size"] == (224, 256)  # 224 // 4 = 56: P6 anchors are not 64 px apart
    assert (REFS["label_counts"] > 0).sum() >= 5  # several classes detected, not one
    for case in REFS["cases"].values():
        assert min(case["margins"].values()) > 1e-5  # no decision within rounding of a tie


@pytest.mark.parametrize("case", ["frozen_bn", "batchnorm"])
def test_detections_match_torchvision(case):
    model = from_torchvision(NAME, state_dict(), frozen_bn=(case == "frozen_bn")).eval()
    head = []
    model.head.register_forward_hook(lambda _m, _i, out: head.extend(out))
    with torch.no_grad():
        detections = model(images())
    expected = REFS["cases"][case]
    # The head first: a mismatch here points at the weights, not the post-processing.
    torch.testing.assert_close(head[0], expected["head"]["cls_logits"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(head[1], expected["head"]["bbox_regression"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(head[2], expected["head"]["bbox_ctrness"][..., 0], atol=TOLERANCE, rtol=0)
    for ours, theirs in zip(detections, expected["detections"], strict=True):
        assert len(ours["boxes"]) == len(theirs["boxes"]) > 0
        assert torch.equal(ours["labels"], theirs["labels"])
        torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=BOX_TOLERANCE, rtol=0)
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=TOLERANCE, rtol=0)


def test_configuration_is_torchvisions_and_options_override():
    model = from_torchvision(NAME, state_dict(), score_thresh=0.05, nms_thresh=0.5)
    config = model.config
    assert (config.score_thresh, config.nms_thresh) == (0.05, 0.5)  # overridden
    assert config.num_classes == 20  # rows of head.classification_head.cls_logits.weight
    for key, value in FCOS_RESNET50_FPN.items():
        if key not in ("score_thresh", "nms_thresh"):
            assert getattr(config, key) == value, key
    assert "head.scales" not in model.state_dict()  # torchvision's head has no per-level scale
    # FrozenBatchNorm2d by default, as torchvision's pretrained builds; conv1 + layer1 frozen.
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not model.backbone.conv1.weight.requires_grad and model.backbone.layer2[0].conv1.weight.requires_grad


def test_frozen_and_legacy_state_dicts_load_into_either_norm():
    """FrozenBatchNorm2d files lack num_batches_tracked; pre-0.13 files lack the FPN's ``.0``."""
    frozen_file = {k: v for k, v in state_dict().items() if not k.endswith("num_batches_tracked")}
    legacy = {k.replace("inner_blocks.0.0.", "inner_blocks.0.").replace("layer_blocks.2.0.", "layer_blocks.2."): v
              for k, v in frozen_file.items()}
    model = from_torchvision(NAME, legacy, frozen_bn=False)  # BatchNorm2d model, frozen file
    expected = state_dict()
    assert torch.equal(model.backbone.layer3[2].bn2.running_var, expected["backbone.body.layer3.2.bn2.running_var"])
    assert torch.equal(model.fpn.lateral[0].weight, expected["backbone.fpn.inner_blocks.0.0.weight"])
    assert torch.equal(model.fpn.output[2].bias, expected["backbone.fpn.layer_blocks.2.0.bias"])


def test_strict_loading_names_every_bad_key_and_leaves_the_model_alone():
    model = from_torchvision(NAME, state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = state_dict()
    bad = dict(good)
    del bad["head.regression_head.bbox_ctrness.bias"]  # missing
    bad["head.regression_head.extra.weight"] = torch.zeros(1)  # unexpected
    bad["backbone.fpn.extra_blocks.p7.weight"] = torch.zeros(256, 256, 1, 1)  # wrong shape
    bad["backbone.body.fc.weight"] = good["backbone.body.conv1.weight"] + 1  # unexpected too
    with pytest.raises(ValueError) as error:
        load_renamed_(model, bad, FCOS_KEYS, NAME)
    message = str(error.value)
    assert f"torchvision's {NAME!r}" in message
    assert "missing keys (1): [head.regression_head.bbox_ctrness.bias]" in message
    assert "unexpected keys (2): [head.regression_head.extra.weight, backbone.body.fc.weight]" in message
    assert "backbone.fpn.extra_blocks.p7.weight: state dict (256, 256, 1, 1) vs model (256, 256, 3, 3)" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded


def test_unknown_name_option_and_class_count_are_errors():
    with pytest.raises(ValueError, match=r"unknown torchvision model 'fcos_resnet50'.*did you mean "
                                         r"'fcos_resnet50_fpn'.*supported: fcos_resnet50_fpn"):
        from_torchvision("fcos_resnet50", state_dict())
    with pytest.raises(ValueError, match=r"unknown FCOS option 'score_treshold'; did you mean 'score_thresh'"):
        from_torchvision(NAME, state_dict(), score_treshold=0.1)
    with pytest.raises(ValueError, match=r"num_classes=91 but the weights have 20 classes"):
        from_torchvision(NAME, state_dict(), num_classes=91)
    with pytest.raises(ValueError, match=r"no 'head.classification_head.cls_logits.weight'"):
        from_torchvision(NAME, {"backbone.body.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"state_dict must be a mapping of str keys to tensors"):
        from_torchvision(NAME, [("a", torch.zeros(1))])
    assert callable(TORCHVISION_MODELS[NAME])  # a registry later detectors extend


# ---------------------------------------------------------------------------
# The FCOS options torchvision needs, one at a time on small inputs
# ---------------------------------------------------------------------------

def test_point_offset_and_grid_spacing():
    # A 224 x 256 input: P6 is 4 x 4, P7 2 x 2 (each level halves, rounding up from P5's 7 x 8).
    sizes, strides = [(4, 4), (2, 2)], [64, 128]
    default = make_points(sizes, strides)
    assert default[0][:2].tolist() == [[32.0, 32.0], [96.0, 32.0]]  # (i + 0.5) * 64
    spacings = [(224 // 4, 256 // 4), (224 // 2, 256 // 2)]  # (56, 64), (112, 128)
    grid = make_points(sizes, strides, offset=0.0, spacings=spacings)
    assert grid[0][[0, 1, 4]].tolist() == [[0.0, 0.0], [64.0, 0.0], [0.0, 56.0]]  # (col * 64, row * 56)
    assert grid[1][-1].tolist() == [128.0, 112.0]
    model = build_model("fcos", num_classes=2, backbone="tiny", fpn_channels=8, head_convs=0,
                        point_spacing="grid")
    level_sizes = [(28, 32), (14, 16), (7, 8), (4, 4), (2, 2)]
    assert model.point_spacings((224, 256), level_sizes) == [
        (8, 8), (16, 16), (32, 32), (56, 64), (112, 128)]


def test_score_threshold_on_class_probability_or_on_score():
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    cls_logits = torch.tensor([[[logit(0.3)], [logit(0.1)]]])  # (1, 2, 1)
    ctr_logits = torch.tensor([[logit(0.1), logit(0.9)]])  # scores sqrt(0.03) = 0.173, sqrt(0.09) = 0.3
    points, box = [torch.tensor([[4.0, 4.0], [12.0, 4.0]])], torch.ones(1, 2, 4)
    kept = {}
    for mode in ("class", "score"):
        _, scores, _ = select_candidates(cls_logits, box, ctr_logits, points, [8], score_thresh=0.2,
                                         score_thresh_on=mode)
        kept[mode] = sorted(round(s, 3) for s in scores[0].tolist() if s >= 0)
    assert kept == {"class": [0.173], "score": [0.3]}  # class: 0.3 > 0.2; score: 0.3 > 0.2
    with pytest.raises(ValueError, match="score_thresh_on must be one of"):
        select_candidates(cls_logits, box, ctr_logits, points, [8], score_thresh_on="ctr")


def test_head_without_level_scales_has_no_parameter_and_same_outputs():
    torch.manual_seed(0)
    with_scales = FCOSHead(8, 3, 2, num_convs=1)
    without = FCOSHead(8, 3, 2, num_convs=1, level_scales=False)
    without.load_state_dict({k: v for k, v in with_scales.state_dict().items() if k != "scales"})
    assert "scales" not in without.state_dict() and "scales" not in dict(without.named_parameters())
    features = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    for ours, theirs in zip(without(features), with_scales(features)):
        assert torch.equal(ours, theirs)  # s_l = 1 exactly


def test_state_dict_may_be_a_file(tmp_path):
    path = tmp_path / "head_only.pth"
    torch.save({"head.classification_head.cls_logits.weight": torch.zeros(3, 256, 3, 3)}, path)
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): \[backbone.body.conv1.weight"):
        from_torchvision(NAME, str(path))  # read, 3 classes taken from it, then strictly checked
