"""``from_torchvision``: torchvision's Faster R-CNN v1 and v2 weights in our FasterRCNN.

Reference values come from ``tests/reference/make_faster_rcnn_torchvision_refs.py``
(torchvision 0.29), frozen in ``tests/fixtures/faster_rcnn_torchvision_refs.pt``:
per model (v1 and v2 with BatchNorm2d, v1 with FrozenBatchNorm2d as torchvision
builds it around pretrained weights), the RPN proposals, the detections and the
four train-mode losses on fixed targets; and, on fixed inputs, the stages alone:
``fastrcnn_loss``, the RPN's ``compute_loss``, ``filter_proposals`` and
``postprocess_detections``. Weights are not stored:
both sides fill torchvision's state-dict layout by formula
(``tests/reference/deterministic_weights.py``). The stage-level references
shared with other detectors (anchors, the level mapper, the pooler, box coder,
matcher, sampler) live in ``detection_parts_refs.pt`` and their own tests.
"""

import functools
import math

import pytest
import torch

from fcos_from_scratch.models import TORCHVISION_MODELS, from_torchvision
from fcos_from_scratch.models.detectors.faster_rcnn import ROI_BOX_WEIGHTS, faster_rcnn_loss, postprocess
from fcos_from_scratch.models.detectors.rpn import filter_proposals, rpn_loss
from fcos_from_scratch.models.sampling import BalancedPositiveNegativeSampler
from fcos_from_scratch.ops import BoxCoder
from conftest import FIXTURES, load_reference

REFS = torch.load(FIXTURES / "faster_rcnn_torchvision_refs.pt", weights_only=True)
WEIGHTS = load_reference("deterministic_weights")
NAMES = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2")
FROZEN = "fasterrcnn_resnet50_fpn_frozen"  # v1 with FrozenBatchNorm2d (torchvision with weights)
SCORE_TOLERANCE = 1e-4  # the issue's; measured 9e-7
LOSS_RTOL = 1e-6  # measured 1.3e-7 (same RoIs sampled, same order of sums up to float32 rounding)
# Pixels, the bound. from_torchvision pools with roi_align(summation="kernel"),
# which adds a bin's taps in the order of torchvision's kernel, so every stage is the
# same float32 bits as torchvision's: measured 0 for the boxes and scores of all three
# models, in one process with torchvision 0.29 (tests/reference/compare_faster_rcnn_stages.py).
# With the fused RoIAlign sum they were 1.07e-4 px apart (2 ulps of the pooled features,
# amplified 20-fold by this untrained head); torchvision's own float32 boxes are 2.9e-3 px
# from its float64 run, so only bit-identical arithmetic reaches 1e-4.
BOX_TOLERANCE = 1e-4
# The numbers above hold on a machine whose float32 arithmetic reproduces the one that
# froze the fixture (the RPN's proposals come out bit-identical). On another CPU the
# ResNet-50 trunk's convolutions sum in another order (oneDNN picks kernels per CPU)
# and this untrained net amplifies the difference; measured on an AVX-512 AMD EPYC:
# every proposal within 0.0074 px of its reference, boxes within 0.005 px, scores
# within 7.4e-5, losses within 2.8e-4 relative (a sampled RoI near a tie). There the
# tests check that looser agreement, which any real bug still breaks by far more.
OTHER_CPU_PROPOSAL_PX = 0.02
OTHER_CPU_BOX_PX = 0.02
OTHER_CPU_LOSS_RTOL = 1e-3


@functools.lru_cache(maxsize=3)
def _state_dict(name):
    case = REFS["models"][name]
    template = {key: (shape, getattr(torch, dtype))
                for key, shape, dtype in zip(case["keys"], case["shapes"], case["dtypes"])}
    return WEIGHTS.deterministic_state_dict(template, case["overrides"])


@functools.lru_cache(maxsize=3)
def _model(name):
    # The v1/v2 references were built with weights=None, i.e. nn.BatchNorm2d in the
    # trunk. A FrozenBatchNorm2d trunk computes the same function with other roundings,
    # which this untrained net amplifies to ~1e-2 px in the proposals; so those keep
    # BatchNorm2d, and FROZEN (our v1 default) is compared with torchvision's frozen v1.
    if name == FROZEN:
        return from_torchvision(NAMES[0], dict(_state_dict(name)), frozen_bn=True, trainable_layers=3)
    return from_torchvision(name, dict(_state_dict(name)), frozen_bn=False)


def images():
    return [WEIGHTS.deterministic_image(h, w, i) for i, (h, w) in enumerate(REFS["image_sizes"])]


@functools.lru_cache(maxsize=6)
def _eval_outputs(name):
    """(RPN proposals, detections) of model ``name`` in eval mode on the fixture's images."""
    model = _model(name).eval()
    proposals = []
    hook = model.rpn.register_forward_hook(lambda _m, _i, out: proposals.extend(out[0]))
    with torch.no_grad():
        detections = model(images())
    hook.remove()
    return proposals, detections


def reproduces_fixture_arithmetic(name=NAMES[0]):
    """True if this machine's proposals are bit-identical to the frozen ones (see above)."""
    proposals, _ = _eval_outputs(name)
    return all(torch.equal(ours, theirs) for ours, theirs in zip(proposals, REFS["models"][name]["proposals"]))


def test_fixture_records_versions_and_sizes():
    assert REFS["versions"]["torchvision"].startswith("0.29")
    assert [h % 32 or w % 32 for h, w in REFS["image_sizes"]] != [0, 0]  # not multiples of 32
    for name in NAMES + (FROZEN,):
        assert all(5 <= len(d["scores"]) < 100 for d in REFS["models"][name]["detections"])


def test_both_builders_are_registered():
    assert set(NAMES) <= set(TORCHVISION_MODELS)


@pytest.mark.parametrize("name", NAMES + (FROZEN,))
def test_proposals_and_detections_match_torchvision(name):
    proposals, detections = _eval_outputs(name)
    expected = REFS["models"][name]
    same = reproduces_fixture_arithmetic(name)
    for ours, theirs in zip(proposals, expected["proposals"], strict=True):
        assert ours.shape == theirs.shape
        if same:
            torch.testing.assert_close(ours, theirs, atol=0, rtol=0)  # bit-identical, ties' order too
        else:  # another CPU: every reference proposal has one of ours within a few thousandths of a pixel
            nearest = torch.cdist(theirs, ours, p=float("inf")).min(dim=1).values
            assert float(nearest.max()) < OTHER_CPU_PROPOSAL_PX, float(nearest.max())
    box_tolerance = BOX_TOLERANCE if same else OTHER_CPU_BOX_PX
    for ours, theirs in zip(detections, expected["detections"], strict=True):
        assert torch.equal(ours["labels"], theirs["labels"] - 1)  # torchvision's 0 is the background
        torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=box_tolerance, rtol=0)
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=SCORE_TOLERANCE, rtol=0)


def test_frozen_trunk_has_frozen_batchnorm():
    kinds = {type(m).__name__ for m in _model(FROZEN).backbone.modules()}
    assert "FrozenBatchNorm2d" in kinds and "BatchNorm2d" not in kinds


@pytest.mark.parametrize("name", NAMES + (FROZEN,))
def test_train_losses_match_torchvision(name):
    """RPN targets, both samplers (same randperm draws), both losses, end to end."""
    model = _model(name).train()
    for module in model.modules():  # as the reference: running statistics, not the batch's
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    targets = [{"boxes": torch.tensor(t["boxes"]), "labels": torch.tensor(t["labels"]) - 1}
               for t in REFS["targets"]]
    torch.manual_seed(REFS["seed"])
    for _ in targets:  # torchvision's train-mode transform draws a min_size per image first
        torch.empty(1).uniform_(0.0, 1.0)
    with torch.no_grad():
        losses = model(images(), targets)
    model.eval()
    expected = REFS["models"][name]["train_losses"]
    assert set(losses) == set(expected)
    rtol = LOSS_RTOL if reproduces_fixture_arithmetic(name) else OTHER_CPU_LOSS_RTOL
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value, atol=0, rtol=rtol, msg=key)


def test_fastrcnn_loss_on_fixed_inputs():
    case = REFS["fastrcnn_loss"]
    losses = faster_rcnn_loss(case["class_logits"], case["box_regression"], case["labels"],
                              case["regression_targets"])
    torch.testing.assert_close(losses["loss_classifier"], case["loss_classifier"], atol=0, rtol=LOSS_RTOL)
    torch.testing.assert_close(losses["loss_box_reg"], case["loss_box_reg"], atol=0, rtol=LOSS_RTOL)


def test_rpn_loss_on_fixed_inputs():
    """Same anchors drawn under the same seed, same sums: torchvision's compute_loss."""
    case = REFS["rpn_loss"]
    batch = len(case["labels"])
    torch.manual_seed(REFS["seed"])
    losses = rpn_loss(case["objectness"].reshape(batch, -1), case["deltas"].reshape(batch, -1, 4),
                      case["labels"], case["regression_targets"], BalancedPositiveNegativeSampler(256, 0.5))
    for key in ("loss_objectness", "loss_rpn_box_reg"):
        torch.testing.assert_close(losses[key], case[key], atol=0, rtol=LOSS_RTOL, msg=key)


@pytest.mark.parametrize("index", [0, 1])
def test_filter_proposals_on_fixed_inputs(index):
    """Case 1 has > 1000 candidates and many tied scores: torchvision's order of ties, too."""
    case = REFS["filter_proposals"][index]
    boxes, scores = filter_proposals(case["proposals"], case["objectness"], case["image_sizes"],
                                     case["num_anchors_per_level"], pre_nms_top_n=case["pre_nms_top_n"],
                                     post_nms_top_n=case["post_nms_top_n"], nms_thresh=0.7)
    for ours, theirs in zip(boxes, case["boxes"]):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    for ours, theirs in zip(scores, case["scores"]):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_postprocess_on_fixed_inputs():
    case = REFS["postprocess"]
    coder = BoxCoder(ROI_BOX_WEIGHTS, math.log(1000.0 / 16))
    boxes = coder.decode(case["box_regression"], case["proposals"])  # (R, K + 1, 4)
    detections = postprocess(case["class_logits"], boxes, [len(p) for p in case["proposals"]],
                             case["image_sizes"])
    for ours, boxes, scores, labels in zip(detections, case["boxes"], case["scores"], case["labels"]):
        assert torch.equal(ours["labels"], labels - 1)
        # Bit-identical where the fixture was frozen; another CPU's vectorised exp may
        # round the decoded boxes differently (measured: 3 of 400 values, 1.5e-5 px).
        torch.testing.assert_close(ours["boxes"], boxes, atol=4 * torch.finfo(boxes.dtype).eps *
                                   float(boxes.abs().max()), rtol=0)
        torch.testing.assert_close(ours["scores"], scores, atol=1e-6, rtol=0)


def test_class_count_comes_from_the_weights_and_is_checked():
    state = dict(_state_dict(NAMES[0]))
    assert _model(NAMES[0]).config.num_classes == REFS["num_classes"]  # rows - 1 background
    with pytest.raises(ValueError, match="num_classes=3 but the weights have 5 classes"):
        from_torchvision(NAMES[0], state, num_classes=3)


def test_v1_weights_do_not_fit_v2():
    with pytest.raises(ValueError, match="does not fit torchvision's 'fasterrcnn_resnet50_fpn_v2'"):
        from_torchvision(NAMES[1], dict(_state_dict(NAMES[0])))


def test_unknown_option_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean 'rpn_nms_thresh'"):
        from_torchvision(NAMES[0], dict(_state_dict(NAMES[0])), rpn_nms_thres=0.5)


def test_torchvision_models_pool_in_the_kernels_order():
    # the bit-identical RoIAlign sum is from_torchvision's default; fine-tuning can take the fused one
    for name in NAMES:
        assert _model(name).roi_pool.summation == "kernel"
    fused = from_torchvision(NAMES[0], dict(_state_dict(NAMES[0])), roi_align_summation="fused")
    assert fused.roi_pool.summation == "fused"
    with pytest.raises(ValueError, match="roi_align_summation must be one of"):
        from_torchvision(NAMES[0], dict(_state_dict(NAMES[0])), roi_align_summation="exact")
