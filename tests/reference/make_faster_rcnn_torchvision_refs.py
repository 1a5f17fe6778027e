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
* ``fastrcnn_loss``: torchvision's ``fastrcnn_loss`` on fixed random inputs.

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
BUILDERS = {"fasterrcnn_resnet50_fpn": 1.0, "fasterrcnn_resnet50_fpn_v2": 10.0}
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
    for module in model.modules():  # BatchNorm in eval mode: running statistics, as the test
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
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


def build_case(builder_name, gain):
    import torchvision.models.detection as detection

    builder = getattr(detection, builder_name)
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
                     "python": platform.python_version()},
        "num_classes": NUM_CLASSES, "image_sizes": IMAGE_SIZES, "min_size": MIN_SIZE,
        "max_size": MAX_SIZE, "seed": SEED, "targets": TARGETS,
        "models": {name: build_case(name, gain) for name, gain in BUILDERS.items()},
        "fastrcnn_loss": fastrcnn_loss_case(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    torch.save(refs, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
