"""``from_torchvision``: torchvision's Faster R-CNN v1 and v2 weights in our FasterRCNN.

Reference values come from ``tests/reference/make_faster_rcnn_torchvision_refs.py``
(torchvision 0.29), frozen in ``tests/fixtures/faster_rcnn_torchvision_refs.pt``:
per model, the RPN proposals, the detections, and the four train-mode losses on
fixed targets; plus ``fastrcnn_loss`` on fixed inputs. Weights are not stored:
both sides fill torchvision's state-dict layout by formula
(``tests/reference/deterministic_weights.py``). The stage-level references
shared with other detectors (anchors, the level mapper, the pooler, box coder,
matcher, sampler) live in ``detection_parts_refs.pt`` and their own tests.
"""

import functools

import pytest
import torch

from fcos_from_scratch.models import TORCHVISION_MODELS, from_torchvision
from fcos_from_scratch.models.detectors.faster_rcnn import faster_rcnn_loss
from conftest import FIXTURES, load_reference

REFS = torch.load(FIXTURES / "faster_rcnn_torchvision_refs.pt", weights_only=True)
WEIGHTS = load_reference("deterministic_weights")
NAMES = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2")
TOLERANCE = 1e-4  # absolute, for scores and losses
BOX_TOLERANCE = 2e-4  # pixels: measured 1.1e-4 (about 7 float32 ulps at 200 px, through ResNet-50)


@functools.lru_cache(maxsize=2)
def _state_dict(name):
    case = REFS["models"][name]
    template = {key: (shape, getattr(torch, dtype))
                for key, shape, dtype in zip(case["keys"], case["shapes"], case["dtypes"])}
    return WEIGHTS.deterministic_state_dict(template, case["overrides"])


@functools.lru_cache(maxsize=2)
def _model(name):
    # The reference was built with weights=None, i.e. nn.BatchNorm2d in the trunk. A
    # FrozenBatchNorm2d trunk (our default for v1, torchvision's whenever it loads
    # weights) computes the same function with other roundings, which this untrained
    # net amplifies to ~1e-2 px in the proposals; so the trunk here keeps BatchNorm2d.
    return from_torchvision(name, dict(_state_dict(name)), frozen_bn=False)


def rows_sorted(boxes):
    """Boxes in lexicographic row order: proposals with float-equal scores may swap places."""
    for column in range(3, -1, -1):
        boxes = boxes[torch.sort(boxes[:, column], stable=True).indices]
    return boxes


def images():
    return [WEIGHTS.deterministic_image(h, w, i) for i, (h, w) in enumerate(REFS["image_sizes"])]


def test_fixture_records_versions_and_sizes():
    assert REFS["versions"]["torchvision"].startswith("0.29")
    assert [h % 32 or w % 32 for h, w in REFS["image_sizes"]] != [0, 0]  # not multiples of 32
    for name in NAMES:
        assert all(5 <= len(d["scores"]) < 100 for d in REFS["models"][name]["detections"])


def test_both_builders_are_registered():
    assert set(NAMES) <= set(TORCHVISION_MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_proposals_and_detections_match_torchvision(name):
    model = _model(name).eval()
    proposals = []
    hook = model.rpn.register_forward_hook(lambda _m, _i, out: proposals.extend(out[0]))
    with torch.no_grad():
        detections = model(images())
    hook.remove()
    expected = REFS["models"][name]
    for ours, theirs in zip(proposals, expected["proposals"]):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(rows_sorted(ours), rows_sorted(theirs), atol=BOX_TOLERANCE, rtol=0)
    for ours, theirs in zip(detections, expected["detections"]):
        assert torch.equal(ours["labels"], theirs["labels"] - 1)  # torchvision's 0 is the background
        torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=BOX_TOLERANCE, rtol=0)
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", NAMES)
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
    for key, value in expected.items():
        # The three losses of fixed samples agree to 1e-7; loss_classifier to 8e-4
        # relative on v1 (a near-tied proposal at the 2000 cap is the suspect: not pinned down).
        rtol = 1e-3 if key == "loss_classifier" else 1e-5
        torch.testing.assert_close(losses[key], value, atol=TOLERANCE, rtol=rtol, msg=key)


def test_fastrcnn_loss_on_fixed_inputs():
    case = REFS["fastrcnn_loss"]
    losses = faster_rcnn_loss(case["class_logits"], case["box_regression"], case["labels"],
                              case["regression_targets"])
    torch.testing.assert_close(losses["loss_classifier"], case["loss_classifier"])
    torch.testing.assert_close(losses["loss_box_reg"], case["loss_box_reg"])


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
