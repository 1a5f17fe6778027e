"""Freeze torchvision's Faster R-CNN (v1 and v2) outputs for ``from_torchvision``.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    /work/refvenv/bin/python tests/reference/make_faster_rcnn_torchvision_refs.py
    # writes tests/fixtures/faster_rcnn_torchvision_refs.pt

For ``fasterrcnn_resnet50_fpn`` and ``fasterrcnn_resnet50_fpn_v2`` (``weights=None,
weights_backbone=None, num_classes=K + 1, min_size=200, max_size=1333``: BatchNorm2d
everywhere), every state-dict entry is filled by formula
(``deterministic_weights.py``; the background logit's bias is tuned once and
stored), and on two formula images in eval mode (one thread) we store, per model:

* ``proposals``: the RPN's boxes per image (after per-level top-n, clip, remove
  small, NMS 0.7 per level, post-NMS top-n);
* ``detections``: boxes, scores, labels (torchvision's 1..K) per image;
* ``train_losses``: the four losses in train mode on fixed targets after
  ``torch.manual_seed(SEED)`` (samplers draw with ``randperm``), BatchNorm in eval
  mode so that the batch statistics do not enter;
* ``fastrcnn_loss``: torchvision's ``fastrcnn_loss`` on fixed random inputs;
* ``rpn_loss``: ``RegionProposalNetwork.compute_loss`` on fixed random inputs
  (after ``torch.manual_seed(SEED)``: the anchor sampler draws with ``randperm``);
* ``filter_proposals``: ``RegionProposalNetwork.filter_proposals`` on fixed random
  boxes and logits, a small case and one with more than 1000 candidates and many
  tied scores (torchvision then merges the levels with an unstable sort);
* ``postprocess``: ``RoIHeads.postprocess_detections`` on fixed random inputs.

A third model, ``fasterrcnn_resnet50_fpn_frozen``, is v1 as torchvision builds it
whenever it loads weights: ``FrozenBatchNorm2d`` (eps 1e-5) in the ResNet-50 and
``trainable_backbone_layers=3``; its train losses need no BatchNorm switched to eval.

Rounding does not decide anything: the whole eval pass is repeated in float64 and
must keep the same proposals (as sets, in order) and the same detections (labels
and order), which is checked here. The image sizes are not multiples of 32, and
torchvision's transform leaves them unscaled (checked).
"""

import math
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deterministic_weights import deterministic_image, deterministic_state_dict  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "faster_rcnn_torchvision_refs.pt")
NUM_CLASSES = 5  # K foreground classes; torchvision's num_classes = K + 1
IMAGE_SIZES = ((200, 250), (213, 200))  # (H, W), image i = deterministic_image(H, W, i)
MIN_SIZE, MAX_SIZE = 200, 1333
SEED = 0
# Background mean logit in units of the foreground logits' std, tried in turn until
# there are a few dozen detections and float rounding decides nothing.
BACKGROUND_MEANS = (3.5, 4.0, 3.0, 4.5, 2.5, 2.0)
TARGETS = (  # torchvision labels 1..K
    {"boxes": [[20.0, 30.0, 80.0, 120.0], [120.0, 40.0, 160.0, 100.0], [10.0, 150.0, 200.0, 195.0]],
     "labels": [1, 3, 5]},
    {"boxes": [[50.0, 50.0, 90.0, 140.0]], "labels": [2]},
)
# Class-logit weight gain per model: v2's BatchNorm'd box head gives logits 10x closer
# together (std 0.16), where softmax scores would tie; the gain spreads them.
BUILDERS = {"fasterrcnn_resnet50_fpn": 1.0, "fasterrcnn_resnet50_fpn_v2": 10.0,
            "fasterrcnn_resnet50_fpn_frozen": 1.0}
CLS_WEIGHT_KEY = "roi_heads.box_predictor.cls_score.weight"


def images(dtype=torch.float32):
    return [deterministic_image(h, w, i).to(dtype) for i, (h, w) in enumerate(IMAGE_SIZES)]


def targets():
    return [{"boxes": torch.tensor(t["boxes"]), "labels": torch.tensor(t["labels"])} for t in TARGETS]


def check_unscaled(model, inputs):
    image_list, _ = model.transform(inputs)
    assert [tuple(s) for s in image_list.image_sizes] == list(IMAGE_SIZES), image_list.image_sizes
    return tuple(image_list.tensors.shape[-2:])


def eval_pass(model, inputs):
    """Proposals and detections of one eval-mode forward pass."""
    proposals = []
    hook = model.rpn.register_forward_hook(lambda _m, _i, out: proposals.extend(out[0]))
    detections = model(inputs)
    hook.remove()
    return [p.clone() for p in proposals], [{k: v.clone() for k, v in d.items()} for d in detections]


def same_decisions(single, double):
    """float32 and float64 runs keep the same proposals and the same labelled detections."""
    (props32, dets32), (props64, dets64) = single, double
    for a, b in zip(props32, props64):
        if a.shape != b.shape or (a.double() - b).abs().max() > 0.05:
            return False
    for a, b in zip(dets32, dets64):
        if not torch.equal(a["labels"], b["labels"]) or (a["boxes"].double() - b["boxes"]).abs().max() > 0.05:
            return False
    return True


def train_losses(model):
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    torch.manual_seed(SEED)
    with torch.enable_grad():
        losses = model(images(), targets())
    model.eval()
    return {k: v.detach().clone() for k, v in losses.items()}


def fastrcnn_loss_case():
    from torchvision.models.detection.roi_heads import fastrcnn_loss

    generator = torch.Generator().manual_seed(SEED)
    logits = torch.randn(12, NUM_CLASSES + 1, generator=generator)
    deltas = torch.randn(12, 4 * (NUM_CLASSES + 1), generator=generator)
    labels = [torch.tensor([0, 2, 5, 0, 1, 0, 3]), torch.tensor([4, 0, 0, 5, 0])]
    reg_targets = [torch.randn(7, 4, generator=generator), torch.randn(5, 4, generator=generator)]
    cls_loss, box_loss = fastrcnn_loss(logits, deltas, labels, reg_targets)
    return {"class_logits": logits, "box_regression": deltas, "labels": labels,
            "regression_targets": reg_targets, "loss_classifier": cls_loss, "loss_box_reg": box_loss}


def rpn_module(pre_nms_top_n, post_nms_top_n):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

    anchors = AnchorGenerator(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3)
    return RegionProposalNetwork(anchors, RPNHead(8, 3), 0.7, 0.3, 256, 0.5,
                                 dict(training=pre_nms_top_n, testing=pre_nms_top_n),
                                 dict(training=post_nms_top_n, testing=post_nms_top_n), 0.7).eval()


def random_boxes(generator, shape, size=200.0):
    """(..., 4) boxes, some off the image and some tiny, xyxy pixels."""
    corner = torch.rand(shape + (2,), generator=generator) * size * 1.2 - 0.1 * size
    side = torch.rand(shape + (2,), generator=generator) ** 3 * size * 0.6
    return torch.cat([corner, corner + side], dim=-1)


def filter_proposals_case(counts, pre_nms_top_n, post_nms_top_n, tie_step, batch):
    """Proposals from fixed boxes and logits (logits rounded to ``tie_step``: ties)."""
    generator = torch.Generator().manual_seed(SEED)
    rpn = rpn_module(pre_nms_top_n, post_nms_top_n)
    proposals = random_boxes(generator, (batch, sum(counts)))
    objectness = torch.randn(batch, sum(counts), generator=generator) * 3
    if tie_step:
        objectness = torch.round(objectness / tie_step) * tie_step
    sizes = [(200, 250), (213, 200)][:batch]
    boxes, scores = rpn.filter_proposals(proposals, objectness.reshape(-1, 1), sizes, list(counts))
    return {"proposals": proposals, "objectness": objectness, "image_sizes": sizes,
            "num_anchors_per_level": list(counts), "pre_nms_top_n": pre_nms_top_n,
            "post_nms_top_n": post_nms_top_n, "boxes": boxes, "scores": scores}


def rpn_loss_case():
    from torchvision.models.detection import _utils as det_utils

    generator = torch.Generator().manual_seed(SEED)
    rpn = rpn_module(100, 100)  # 256 anchors per image, half positive at most: all 150 are candidates
    labels = [torch.randint(-1, 2, (150,), generator=generator).float() for _ in range(2)]
    labels[1][:140] = torch.where(labels[1][:140] == 1, 0.0, labels[1][:140])  # few positives
    objectness = torch.randn(300, 1, generator=generator)
    deltas = torch.randn(300, 4, generator=generator)
    targets = [torch.randn(150, 4, generator=generator) for _ in range(2)]
    assert isinstance(rpn.fg_bg_sampler, det_utils.BalancedPositiveNegativeSampler)
    torch.manual_seed(SEED)
    loss_objectness, loss_box = rpn.compute_loss(objectness, deltas, labels, targets)
    return {"objectness": objectness, "deltas": deltas, "labels": labels, "regression_targets": targets,
            "loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}


def postprocess_case():
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.roi_heads import RoIHeads

    generator = torch.Generator().manual_seed(SEED)
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)
    assert isinstance(heads.box_coder, det_utils.BoxCoder)
    proposals = [random_boxes(generator, (n,)).clamp(0, 200) for n in (60, 45)]
    proposals = [torch.cat([p[:, :2], p[:, :2] + (p[:, 2:] - p[:, :2]).clamp(min=1.0)], dim=1) for p in proposals]
    logits = torch.randn(105, NUM_CLASSES + 1, generator=generator) * 2
    deltas = torch.randn(105, 4 * (NUM_CLASSES + 1), generator=generator) * 2
    sizes = [(200, 250), (213, 200)]
    boxes, scores, labels = heads.postprocess_detections(logits, deltas, proposals, sizes)
    return {"class_logits": logits, "box_regression": deltas, "proposals": proposals, "image_sizes": sizes,
            "boxes": boxes, "scores": scores, "labels": labels}


def centring_bias(model, template, bias_key, base):
    """A class-logit bias giving every class mean logit 0 on the proposals (rounded to 1e-3).

    Formula weights give each class its own offset, which would let one class take
    every detection; the background's mean is then set by :data:`BACKGROUND_MEANS`.
    """
    model.load_state_dict(deterministic_state_dict(template, {**base, bias_key: torch.zeros(NUM_CLASSES + 1)}))
    found = {}
    hook = model.roi_heads.box_predictor.register_forward_hook(lambda _m, _i, out: found.update(logits=out[0]))
    model(images())
    hook.remove()
    logits = found["logits"]
    centred = logits - logits.mean(dim=0)
    return torch.round(-logits.mean(dim=0) * 1000) / 1000, centred[:, 1:].std().item()


def frozen_v1(**kwargs):
    """``fasterrcnn_resnet50_fpn`` as torchvision builds it around pretrained weights."""
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    assert FrozenBatchNorm2d(1).eps == 1e-5
    trunk = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    return FasterRCNN(trunk, **{k: v for k, v in kwargs.items() if not k.startswith("weights")})


def build_case(builder_name, gain):
    import torchvision.models.detection as detection

    builder = frozen_v1 if builder_name.endswith("_frozen") else getattr(detection, builder_name)
    model = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                    min_size=MIN_SIZE, max_size=MAX_SIZE).eval()
    template = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    padded = check_unscaled(model, images())
    bias_key = "roi_heads.box_predictor.cls_score.bias"
    fan_in = template[CLS_WEIGHT_KEY][0][1]
    base = {CLS_WEIGHT_KEY: (0.0, gain * math.sqrt(2.0 / fan_in))}
    centred, spread = centring_bias(model, template, bias_key, base)
    for multiple in BACKGROUND_MEANS:
        background = round(multiple * spread, 2)
        shift = torch.zeros(NUM_CLASSES + 1)
        shift[0] = background
        overrides = {**base, bias_key: centred + shift}
        model.load_state_dict(deterministic_state_dict(template, overrides))
        single = eval_pass(model, images())
        double = eval_pass(model.double(), images(torch.float64))
        model.float()
        counts = [len(d["scores"]) for d in single[1]]
        print(f"{builder_name}: background logit {background}: detections {counts}, "
              f"proposals {[len(p) for p in single[0]]}")
        if all(5 <= c < 100 for c in counts) and same_decisions(single, double):
            break
    else:
        raise RuntimeError(f"{builder_name}: no background bias gives clean detections")
    return {
        "keys": list(template),
        "shapes": [shape for shape, _ in template.values()],
        "dtypes": [str(dtype).removeprefix("torch.") for _, dtype in template.values()],
        "overrides": overrides,
        "padded_size": padded,
        "proposals": single[0],
        "detections": single[1],
        "train_losses": train_losses(model),
    }


def main():
    import torchvision

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    refs = {
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
                     "python": platform.python_version(),
                     "script": "tests/reference/make_faster_rcnn_torchvision_refs.py"},
        "num_classes": NUM_CLASSES, "image_sizes": IMAGE_SIZES, "min_size": MIN_SIZE,
        "max_size": MAX_SIZE, "seed": SEED, "targets": TARGETS,
        "models": {name: build_case(name, gain) for name, gain in BUILDERS.items()},
        "fastrcnn_loss": fastrcnn_loss_case(),
        "rpn_loss": rpn_loss_case(),
        "filter_proposals": [filter_proposals_case((300, 75, 20), 100, 150, 0.0, 2),
                             filter_proposals_case((1200, 300, 75), 1000, 1000, 0.25, 1)],
        "postprocess": postprocess_case(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    torch.save(refs, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
