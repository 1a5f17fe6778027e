"""Freeze torchvision's FCOS detections as reference values for ``from_torchvision``.

Run in a separate environment that has torchvision (never a dependency of the
package or of the test suite)::

    python tests/reference/make_fcos_torchvision_refs.py   # writes tests/fixtures/fcos_torchvision_refs.pt

It builds ``torchvision.models.detection.fcos_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=K, min_size=200, max_size=1333)`` (BatchNorm2d
backbone) and a copy with torchvision's FrozenBatchNorm2d (what any pretrained
build has), fills every state-dict entry by formula (``deterministic_weights.py``;
the test rebuilds the same numbers from the keys, shapes and overrides stored
here; the class-logit bias is tuned once and stored), runs two formula images in
eval mode with one thread (as the test suite) and stores, per backbone norm:

* the detections (boxes, scores, labels) per image;
* the head outputs (class logits, box regression, centerness) for debugging;
* margins showing the detections are not decided by float rounding: no score
  within ``MIN_MARGIN`` of the score threshold, no two kept scores that close, no
  same-class IoU that close to the NMS threshold, no overlapping same-class pair
  with scores that close; top-k and the 100-detection cap do not bind.

plus the torchvision state-dict layout (keys, shapes, dtypes), the fill overrides
and the library versions.

Both images have a shorter side of 200 = ``min_size`` and a longer side below
``max_size``, so torchvision's transform scales them by exactly 1 (checked here:
the transformed images equal the normalised inputs bit for bit). Their sizes are
not multiples of 32, and the padded batch (224 x 256) is not a multiple of 128, so
torchvision's P6/P7 anchor spacing (224 // 4 = 56 px, not 64) is exercised.
"""

import math
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deterministic_weights import deterministic_image, deterministic_state_dict  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fcos_torchvision_refs.pt")
NUM_CLASSES = 20
IMAGE_SIZES = ((200, 250), (213, 200))  # (H, W); image i = deterministic_image(H, W, i)
MIN_SIZE, MAX_SIZE = 200, 1333  # scale = min(200 / 200, 1333 / 250) = 1 for both images
MIN_MARGIN = 1e-5  # required distance of scores and IoUs from every decision boundary
BIAS_SHIFTS = (0.0, -0.011, -0.023, -0.037, -0.052, -0.068, -0.085, -0.103)  # tried in turn (see main)

# Head weights: gain g gives weight std g / sqrt(fan_in); bias (centre, amplitude).
HEAD_FILL = {
    "head.classification_head.cls_logits": (1.5, None),  # logits spread ~0.6 per class; bias tuned
    "head.regression_head.bbox_reg": (1.0, (3.0, 0.3)),  # distances ~3 +- 0.5 strides: NMS has work
    "head.regression_head.bbox_ctrness": (2.0, (0.0, 0.3)),  # centerness logits ~0.5 +- 0.6
}
CLS_LOGIT_MEAN = -4.7  # mean class logit after tuning: a few dozen detections per image


def fill_overrides(template):
    """key -> (centre, amplitude) for the head entries of :data:`HEAD_FILL`."""
    overrides = {}
    for prefix, (gain, bias) in HEAD_FILL.items():
        shape = template[prefix + ".weight"][0]
        overrides[prefix + ".weight"] = (0.0, gain * math.sqrt(2.0 / math.prod(shape[1:])))
        overrides[prefix + ".bias"] = bias or (0.0, 0.0)
    return overrides


def tune_class_bias(model, template, overrides, inputs):
    """A class-logit bias that gives every class the mean logit CLS_LOGIT_MEAN.

    Positive ReLU features make each class filter respond with its own offset
    (the filter's sum times the features' mean), which would let one class win
    every detection. The bias cancels the offsets (rounded to 1e-3; stored in the
    fixture as an override), so labels vary and ties between classes stay unlikely.
    """
    key = "head.classification_head.cls_logits.bias"
    model.load_state_dict(deterministic_state_dict(template, overrides))  # bias 0 here
    logits = model.head(list(model.backbone(model.transform(inputs)[0].tensors).values()))["cls_logits"]
    bias = torch.round((CLS_LOGIT_MEAN - logits.mean(dim=(0, 1))) * 1000) / 1000  # (K,)
    return {**overrides, key: bias}


def images():
    return [deterministic_image(h, w, i) for i, (h, w) in enumerate(IMAGE_SIZES)]


def _check_unscaled(model, inputs):
    """torchvision's transform must only normalise and pad (scale factor exactly 1)."""
    image_list, _ = model.transform(inputs)
    assert [tuple(s) for s in image_list.image_sizes] == list(IMAGE_SIZES), image_list.image_sizes
    mean = torch.tensor(model.transform.image_mean)[:, None, None]
    std = torch.tensor(model.transform.image_std)[:, None, None]
    for tensor, image in zip(image_list.tensors, inputs):
        height, width = image.shape[-2:]
        assert torch.equal(tensor[:, :height, :width], (image - mean) / std)
    return tuple(image_list.tensors.shape[-2:])


def _candidates(model, head, anchors, index):
    """Scores (C,), labels (C,) and clipped boxes (C, 4) of image ``index`` above the threshold."""
    scores = torch.sqrt(torch.sigmoid(head["cls_logits"][index]) * torch.sigmoid(head["bbox_ctrness"][index]))
    flat = scores.flatten()
    keep = torch.where(flat > model.score_thresh)[0]
    point, label = keep // NUM_CLASSES, keep % NUM_CLASSES
    boxes = model.box_coder.decode(head["bbox_regression"][index][point], anchors[index][point])
    height, width = IMAGE_SIZES[index]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return flat, flat[keep], label, boxes


def _margins(model, head, anchors, detections):
    """Distances of the numbers from every decision torchvision took (all must be large).

    * ``score_thresh``: any (point, class) score from the threshold 0.2;
    * ``order``: consecutive kept scores (the output order);
    * ``nms_iou``: any same-class candidate IoU from the NMS threshold 0.6;
    * ``nms_order``: scores of same-class candidates that overlap above 0.6 (which
      one suppresses the other).
    Top-k and the 100-detection cap are asserted not to bind.
    """
    from torchvision.ops import box_iou

    margins = {"score_thresh": math.inf, "order": math.inf, "nms_iou": math.inf, "nms_order": math.inf}
    for index, detection in enumerate(detections):
        assert len(detection["scores"]) < model.detections_per_img, len(detection["scores"])
        kept = detection["scores"]
        margins["order"] = min(margins["order"], (kept[:-1] - kept[1:]).min().item())
        flat, scores, labels, boxes = _candidates(model, head, anchors, index)
        assert len(scores) < model.topk_candidates  # so top-k keeps every candidate of every level
        margins["score_thresh"] = min(margins["score_thresh"], (flat - model.score_thresh).abs().min().item())
        iou = box_iou(boxes, boxes).nan_to_num(0.0)  # (C, C)
        pairs = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
        margins["nms_iou"] = min(margins["nms_iou"], (iou[pairs] - model.nms_thresh).abs().min().item())
        overlapping = pairs & (iou > model.nms_thresh)
        if overlapping.any():
            gaps = (scores[:, None] - scores[None, :]).abs()[overlapping]
            margins["nms_order"] = min(margins["nms_order"], gaps.min().item())
    return margins


def frozen_copy(model):
    """The model with every BatchNorm2d replaced by torchvision's FrozenBatchNorm2d.

    This is what ``fcos_resnet50_fpn`` builds whenever it loads weights; building
    it that way would download them, so the layers are swapped here instead.
    """
    import copy

    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = copy.deepcopy(model)
    for parent in list(frozen.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                layer = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(layer, key).copy_(getattr(child, key))
                setattr(parent, name, layer)
    return frozen.eval()


def run(model, inputs):
    """Detections, head outputs and margins of one eval-mode forward pass."""
    head, anchors = {}, []
    hooks = [model.head.register_forward_hook(lambda _m, _i, out: head.update(out)),
             model.anchor_generator.register_forward_hook(lambda _m, _i, out: anchors.extend(out))]
    detections = model(inputs)
    for hook in hooks:
        hook.remove()
    margins = _margins(model, head, anchors, detections)
    return {"detections": [{k: v.clone() for k, v in d.items()} for d in detections],
            "head": {k: v.clone() for k, v in head.items()}, "margins": margins}


def main():
    import torchvision
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # as tests/conftest.py: same conv blocking, so the same rounding
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                              min_size=MIN_SIZE, max_size=MAX_SIZE).eval()
    template = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    inputs = images()
    padded_size = _check_unscaled(model, inputs)
    tuned = tune_class_bias(model, template, fill_overrides(template), inputs)
    bias_key = "head.classification_head.cls_logits.bias"
    for shift in BIAS_SHIFTS:  # the first shift of all class logits that keeps clear of every tie
        overrides = {**tuned, bias_key: tuned[bias_key] + shift}
        model.load_state_dict(deterministic_state_dict(template, overrides))
        # BatchNorm2d (weights=None builds it) and FrozenBatchNorm2d (any pretrained
        # build) compute the same function up to rounding; both are pinned.
        cases = {"batchnorm": run(model, inputs), "frozen_bn": run(frozen_copy(model), inputs)}
        margins = {k: min(case["margins"].values()) for k, case in cases.items()}
        counts = [len(d["scores"]) for d in cases["batchnorm"]["detections"]]
        print(f"class-bias shift {shift}: {counts} detections, smallest margins {margins}")
        if min(margins.values()) > MIN_MARGIN:
            break
    else:
        raise RuntimeError("no bias shift keeps the detections clear of ties; change CLS_LOGIT_MEAN")

    labels = torch.cat([d["labels"] for d in cases["batchnorm"]["detections"]])
    refs = {
        "versions": {
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "python": platform.python_version(),
        },
        "constructor": {"name": "fcos_resnet50_fpn", "num_classes": NUM_CLASSES,
                        "min_size": MIN_SIZE, "max_size": MAX_SIZE},
        "image_sizes": IMAGE_SIZES,
        "padded_size": padded_size,
        "keys": list(template),
        "shapes": [shape for shape, _ in template.values()],
        "dtypes": [str(dtype).removeprefix("torch.") for _, dtype in template.values()],
        "overrides": overrides,
        "label_counts": torch.bincount(labels, minlength=NUM_CLASSES),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    torch.save(refs, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB); "
          f"detections per image {counts}; label counts {refs['label_counts'].tolist()}")


if __name__ == "__main__":
    main()
