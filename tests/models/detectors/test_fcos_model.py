"""The FCOS detector (models/fcos.py, fcos_inference.py) and build_model's call convention."""

import math

import pytest
import torch

from fcos_from_scratch.models import build_model
from fcos_from_scratch.models.detectors.fcos import select_candidates
from fcos_from_scratch.ops import box_iou

SMALL = dict(backbone="tiny", fpn_channels=16, head_convs=1, num_levels=3,
             sizes_of_interest=(0, 32, 64, math.inf))


def small_model(num_classes=2, **overrides):
    torch.manual_seed(0)
    return build_model("fcos", num_classes=num_classes, **{**SMALL, **overrides})


def rectangles(count, size=64, seed=0):
    """Noise images with a red (class 0) and a blue (class 1) filled rectangle each."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.3, 1.0]])
    images, targets = [], []
    for _ in range(count):
        image = torch.rand(3, size, size, generator=generator) * 0.3
        boxes = []
        for label in (0, 1):
            w, h = torch.randint(12, 30, (2,), generator=generator).tolist()
            x = int(torch.randint(0, size - w, (1,), generator=generator))
            y = int(torch.randint(0, size - h, (1,), generator=generator))
            image[:, y:y + h, x:x + w] = colours[label][:, None, None]
            boxes.append([x, y, x + w, y + h])
        images.append(image)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([0, 1])})
    return torch.stack(images), targets


def confident(model):
    """Make every point predict class probability 0.5 so inference has candidates."""
    with torch.no_grad():
        model.head.cls_logits.bias.zero_()
    return model.eval()


# --- build_model -----------------------------------------------------------------

def test_build_model_rejects_unknown_names_with_suggestions():
    with pytest.raises(ValueError, match="did you mean 'fcos'"):
        build_model("fcso", num_classes=3)
    with pytest.raises(ValueError, match="did you mean 'fpn_channels'"):
        build_model("fcos", num_classes=3, backbone="tiny", fpn_chanels=32)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("fcos", backbone="tiny")
    with pytest.raises(ValueError, match="tiny"):
        build_model("fcos", num_classes=3, backbone="tiny", frozen_bn=True)


def test_build_model_with_resnet18():
    model = build_model("fcos", backbone="resnet18", num_classes=5, fpn_channels=32, head_convs=1)
    assert model.fpn.out_channels == 32 and model.head.num_classes == 5
    assert len(model.fpn(list(model.backbone(torch.zeros(1, 3, 64, 64)).values()))) == 5


# --- training mode ---------------------------------------------------------------

def test_train_mode_returns_scalar_losses_and_backpropagates():
    model = small_model().train()
    images, targets = rectangles(2)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(images, targets)
    assert sorted(losses) == ["loss_box", "loss_cls", "loss_ctr"]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.head.scales.grad is not None and model.head.scales.grad.abs().sum() > 0


def test_all_empty_batch_is_finite():
    model = small_model().train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(torch.rand(2, 3, 64, 64), [empty, empty])
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_box"] == 0
    total.backward()


def test_train_mode_input_errors():
    model = small_model().train()
    with pytest.raises(ValueError, match="targets are required"):
        model(torch.rand(1, 3, 64, 64))
    bad = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        model(torch.rand(1, 3, 64, 64), [bad])
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(3, 64, 64), [bad])


# --- eval mode -------------------------------------------------------------------

def test_eval_output_format():
    model = confident(small_model(num_classes=3, detections_per_img=7))
    detections = model(torch.rand(2, 3, 64, 96))
    assert len(detections) == 2
    for det in detections:
        assert det["boxes"].shape == (7, 4) and det["scores"].shape == (7,)
        assert det["labels"].dtype == torch.int64 and det["labels"].max() < 3
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        boxes = det["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()


def test_list_input_equals_padded_tensor_with_sizes():
    model = confident(small_model())
    images = [torch.rand(3, 50, 70), torch.rand(3, 64, 40)]
    from_list = model(images)
    padded = torch.zeros(2, 3, 64, 96)
    padded[0, :, :50, :70], padded[1, :, :64, :40] = images
    from_tensor = model(padded, image_sizes=[(50, 70), (64, 40)])
    for a, b in zip(from_list, from_tensor):
        for key in ("boxes", "scores", "labels"):
            assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
        assert (a["boxes"][:, 2] <= (70 if a is from_list[0] else 40)).all()


def test_boxes_are_mapped_to_original_size():
    model = confident(small_model())
    images = torch.rand(1, 3, 64, 64)
    native = model(images)[0]
    # The data pipeline resized a 128 x 192 (H, W) image to 64 x 64: x scales by 3, y by 2.
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                "orig_size": (128, 192)}]
    mapped = model(images, targets)[0]
    assert torch.allclose(mapped["boxes"], native["boxes"] * torch.tensor([3.0, 2.0, 3.0, 2.0]))
    assert torch.equal(mapped["scores"], native["scores"])
    assert torch.allclose(model(images, orig_sizes=[(128, 192)])[0]["boxes"], mapped["boxes"])


def test_score_threshold_and_per_class_topk():
    generator = torch.Generator().manual_seed(0)
    points = [torch.rand(50, 2, generator=generator) * 100]
    box = torch.rand(1, 50, 4, generator=generator)
    ctr = torch.zeros(1, 50)  # centerness 0.5
    cls = torch.full((1, 50, 3), -10.0)
    cls[0, :10, 0] = 4.0  # class 0 dominates ...
    cls[0, 20:23, 2] = -2.0  # ... class 2 is weak but above 0.05 (sigmoid(-2) = 0.12)
    _, scores, labels = select_candidates(cls, box, ctr, points, [8], topk_candidates=5)
    assert (labels[scores > 0] == 0).all() and len(scores[0]) == 5  # global top-k: class 2 starved
    _, scores, labels = select_candidates(cls, box, ctr, points, [8], per_class_topk=5)
    kept = labels[scores > 0]
    assert (kept == 0).sum() == 5 and (kept == 2).sum() == 3 and (kept == 1).sum() == 0
    # Score = sqrt(p_cls * p_ctr).
    assert torch.allclose(scores[scores > 0].max(), torch.sqrt(torch.sigmoid(torch.tensor(4.0)) * 0.5))


# --- learning --------------------------------------------------------------------

def test_overfits_a_few_synthetic_images():
    model = small_model(fpn_channels=32).train()
    images, targets = rectangles(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(20):
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.5 * history[0], history
    detections = model.eval()(images)
    hits = 0
    for det, target in zip(detections, targets):
        for box, label in zip(target["boxes"], target["labels"]):
            same = det["labels"] == label
            if same.any() and box_iou(det["boxes"][same][:1], box[None]).item() > 0.5:
                hits += 1
    assert hits >= 6, hits  # of 8 boxes


def test_image_sizes_must_fit_the_batch():
    model = small_model().eval()
    with pytest.raises(ValueError, match="image_sizes"):
        model(torch.rand(1, 3, 64, 64), image_sizes=[(65, 64)])
    with pytest.raises(ValueError, match="image_sizes"):
        model(torch.rand(2, 3, 64, 64), image_sizes=[(64, 64)])


def test_first_level_2_builds_p2_to_p4_from_c2_to_c4():
    """``first_level=2``: strides 4, 8, 16 from the trunk's C2..C4, no C5 built."""
    model = small_model(first_level=2, sizes_of_interest=(0, 16, 32, math.inf)).train()
    assert model.config.strides == (4, 8, 16)
    assert list(model.backbone.feature_names) == ["C2", "C3", "C4"]
    images, targets = rectangles(2)
    level_sizes, _ = model.decode(list(model.backbone(model.preprocess(list(images), None)[0]).values()))
    assert [tuple(s) for s in level_sizes] == [(16, 16), (8, 8), (4, 4)]  # 64 px input
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    assert model(images)[0]["boxes"].shape[-1] == 4


@pytest.mark.parametrize("bad, match", [
    (dict(first_level=4), "first_level must be 2"),
    (dict(first_level=2, sizes_of_interest=()), "first_level=2 needs sizes_of_interest"),
])
def test_first_level_is_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        small_model(**bad)
