# %% [markdown]
# # 07 · FCOS: head, loss, inference, and a training run on digits
#
# Lesson 06 decided what every point must predict. Here the network predicts it:
# a backbone and an FPN ([fpn]) give feature maps P3..P5, a shared head turns each
# map into class logits, four distances and a centerness logit per point, a loss
# compares them with the targets, and inference turns them back into boxes. Then
# we train the whole detector on digits, on this CPU.

# %%
import dataclasses
import os
import tempfile

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from fcos_from_scratch.config import get_preset
from fcos_from_scratch.data import DIGIT_CLASSES, DigitsConfig, build_dataset, default_data_root
from fcos_from_scratch.engine.trainer import fit
from fcos_from_scratch.models import build_model
from fcos_from_scratch.models.detectors.fcos import assign_targets, fcos_loss, make_points
from fcos_from_scratch.models.images import pad_ground_truth
from fcos_from_scratch.models.matching import BACKGROUND
from fcos_from_scratch.ops import batched_nms, decode_ltrb, generalized_box_iou_loss, sigmoid_focal_loss
from fcos_from_scratch.visualize.draw import draw_boxes

FAST = os.environ.get("LESSONS_FAST") == "1"
scratch = tempfile.TemporaryDirectory(prefix="lesson_fcos_")
if FAST:  # a few tiny images in a throw-away folder, a narrow model, a handful of steps
    data_root, digits = scratch.name, DigitsConfig(num_train=8, num_val=1, num_test=4, min_side=64,
                                                   max_side=96, max_digits=2, digit_height=(16, 40))
else:  # the real cache, shared with `python -m fcos_from_scratch.train`
    data_root, digits = default_data_root(), DigitsConfig()
torch.manual_seed(0)
preset = get_preset("digits")  # the FCOS that trains on digits: tiny trunk, P3..P5, 2-conv head
model_config = preset.model if not FAST else preset.model.__class__(
    **{**preset.model.__dict__, "fpn_channels": 16, "head_convs": 1})
model = build_model("fcos", **model_config.__dict__)
print(f"FCOS with a {model_config.backbone} trunk: {sum(p.numel() for p in model.parameters()) / 1e3:.0f}k parameters")

# %% [markdown]
# ## The head
# One small conv tower is shared by all levels ([fcos] Sec. 3.2); a learned scalar per
# level rescales the distances, since P5's boxes are larger than P3's. Outputs for
# all levels are concatenated into N points: `(B, N, K)`, `(B, N, 4)`, `(B, N)`.
# The classifier starts at $p = \pi = 0.01$ (lesson 03's prior bias).

# %%
train_set = build_dataset("digits", "train", root=data_root, config=digits)
samples = [train_set[i] for i in range(2)]
images, targets = [image for image, _ in samples], [target for _, target in samples]
model.eval()
with torch.no_grad():
    batch, sizes = model.preprocess(images, [tuple(image.shape[1:]) for image in images])  # padded to /32
    pyramid = model.fpn(list(model.backbone(batch).values()))
    cls_logits, box_ltrb, ctr_logits = model.head(pyramid)
print("padded batch", tuple(batch.shape))
for level, p in enumerate(pyramid):
    print(f"P{level + 3}: {tuple(p.shape)}")
print("cls", tuple(cls_logits.shape), "box", tuple(box_ltrb.shape), "ctr", tuple(ctr_logits.shape))
print(f"mean initial class probability {torch.sigmoid(cls_logits).mean():.4f} (prior 0.01)")

# %% [markdown]
# ## The loss, by hand
# ([fcos] Eq. (2) with the [fcos-imp] refinements):
# $$L = \frac{1}{N_\text{pos}} \sum_\text{points} \mathrm{FL} + \frac{1}{\sum c^*} \sum_\text{pos} c^* \,(1 - \mathrm{GIoU}) + \frac{1}{N_\text{pos}} \sum_\text{pos} \mathrm{BCE}(\text{ctr}, c^*)$$
# GIoU does not care where a box is, so both boxes are written in the point's own
# frame in stride units: distances $(l, t, r, b)$ are the box $(-l, -t, r, b)$.

# %%
points = make_points([p.shape[-2:] for p in pyramid], model_config.strides)
gt_boxes, gt_labels, gt_valid = pad_ground_truth(targets)
assigned = assign_targets(points, model_config.strides, gt_boxes, gt_labels, gt_valid,
                          sizes_of_interest=model_config.level_ranges,
                          center_sampling_radius=model_config.center_sampling_radius)

positive = assigned.labels != BACKGROUND  # (B, N)
num_pos = positive.sum().clamp(min=1)
one_hot = F.one_hot(assigned.labels.clamp(min=0), model_config.num_classes).float() * positive[..., None]
# [fcos] Eq. (2) weighs the terms; the digits preset uses focal gamma 1 (not [focal]'s 2)
# and weight 2 on the focal term (its reasons are in presets.py).
loss_cls = model_config.cls_weight * sigmoid_focal_loss(
    cls_logits, one_hot, alpha=model_config.focal_alpha, gamma=model_config.focal_gamma,
    reduction="sum") / num_pos


def local_box(ltrb):  # distances -> the box (-l, -t, r, b) around the point
    return torch.cat([-ltrb[:, :2], ltrb[:, 2:]], dim=1)


c_star = assigned.centerness[positive]
giou = generalized_box_iou_loss(local_box(box_ltrb[positive]), local_box(assigned.ltrb[positive]))
loss_box = (c_star * giou).sum() / c_star.sum().clamp(min=1e-6)
loss_ctr = F.binary_cross_entropy_with_logits(ctr_logits[positive], c_star, reduction="sum") / num_pos
library = fcos_loss(cls_logits, box_ltrb, ctr_logits, assigned.labels, assigned.ltrb, assigned.centerness,
                    model_config)
for name, value in [("loss_cls", loss_cls), ("loss_box", loss_box), ("loss_ctr", loss_ctr)]:
    torch.testing.assert_close(value, library[name])
    print(f"{name} = {value.item():.4f}")
print(f"{int(positive.sum())} positive points; by hand == fcos_loss (pinned to torchvision's FCOS losses "
      "in tests/models/detectors/test_fcos_loss.py)")

# %% [markdown]
# ## A short training run
# `fit` is the library's training loop (AdamW, warm-up, cosine schedule, evaluation).
# Full mode is the digits preset itself (a fixed 2000 steps, several minutes on 2 CPU
# cores; the README reports its numbers); fast mode takes a few steps on 8 tiny images.

# %%
run_config = preset.replace(
    device="cpu", progress=False, out=os.path.join(scratch.name, "run"), data_root=str(data_root),
    num_workers=0, **(dict(fpn_channels=16, head_convs=1, epochs=2, batch_size=4, max_minutes=0.0,
                           time_schedule=False, no_aug_epochs=0, log_every=1)
                      if FAST else dict(log_every=10)))  # full: the digits preset as it is
model = build_model("fcos", **run_config.model.__dict__)
test_set = build_dataset("digits", "test", root=data_root, config=digits, train=False)
result = fit(run_config, model=model, train_set=train_set if FAST else None, test_set=test_set)
print(f"{result.steps} steps, {result.epochs_done} epochs; AP50 on the test split {result.metrics['AP50']:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for key in ("loss", "loss_cls", "loss_box", "loss_ctr"):
    ax.plot([record[key] for record in result.history], label=key)  # one record per step
ax.set(xlabel="step", ylabel="loss", yscale="log", title="FCOS on digits")
ax.legend()
plt.show()

# %% [markdown]
# ## Inference, by hand
# Score every (point, class) pair by $\sqrt{p_\text{cls} \cdot p_\text{ctr}}$, keep those
# with $p_\text{cls} > 0.05$, decode the distances into boxes ($x_1 = x - l s$, ...),
# and run per-class NMS ([fcos] Sec. 3.3). That is the library's `model(images)`,
# which also clips boxes to the image and keeps at most 100.

# %%
model.eval()
if FAST:  # a few steps leave every probability near the prior: lower the bar to have boxes
    model.config = dataclasses.replace(model.config, score_thresh=0.02)
image, target = test_set[0]
height, width = image.shape[1:]
with torch.no_grad():
    detections = model([image])[0]
    batch, _ = model.preprocess([image], [(height, width)])
    pyramid = model.fpn(list(model.backbone(batch).values()))
    cls_logits, box_ltrb, ctr_logits = model.head(pyramid)
points = make_points([p.shape[-2:] for p in pyramid], model.config.strides)
strides = torch.cat([torch.full((len(p),), float(s)) for p, s in zip(points, model.config.strides)])
cls_prob, ctr_prob = torch.sigmoid(cls_logits[0]), torch.sigmoid(ctr_logits[0])  # (N, K), (N,)
point_idx, labels = torch.nonzero(cls_prob > model.config.score_thresh, as_tuple=True)
scores = torch.sqrt(cls_prob[point_idx, labels] * ctr_prob[point_idx])
boxes = decode_ltrb(torch.cat(points)[point_idx], box_ltrb[0][point_idx], strides[point_idx])
boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
keep = batched_nms(boxes, scores, labels, model.config.nms_thresh)[: model.config.detections_per_img]
if len(scores) <= model.config.topk_candidates:  # no top-k cut happened: the two must agree
    torch.testing.assert_close(boxes[keep], detections["boxes"], atol=1e-4, rtol=0)
    assert torch.equal(labels[keep], detections["labels"])
print(f"{len(scores)} candidates -> {len(keep)} detections by hand == model(images) "
      f"(score threshold {model.config.score_thresh})")

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 4))
for index, ax in enumerate(axes):
    image, target = test_set[index % len(test_set)]
    with torch.no_grad():
        found = model([image])[0]
    ax.imshow(draw_boxes(image, found["boxes"], found["labels"], found["scores"], DIGIT_CLASSES,
                         score_threshold=0.3))
    ax.set_title(f"{len(target['boxes'])} digits in the image", fontsize=9)
    ax.axis("off")
plt.suptitle("detections with score > 0.3")
plt.show()

# %% [markdown]
# ## Exercises
# * The FPN and the head (`FPN`, `FCOSHead`): `python -m assignments start fpn_head --out my_work`
# * The loss and inference: `python -m assignments start fcos_loss_inference --out my_work`
# * Train and diagnose your detector: `python -m assignments start training --out my_work`

# %%
print("LESSON COMPLETE: 07_fcos")
