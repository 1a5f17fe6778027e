# %% [markdown]
# # Lesson 11: RefineDetLite, a one-stage detector that refines its anchors
#
# RefineDetLite ([refinedetlite]) is built for CPUs. It keeps RefineDet's two-step
# cascade ([refinedet]) inside one network pass:
#
# 1. the **ARM** (anchor refinement module) looks at every anchor and says
#    "object or background" and how to move it;
# 2. the **ODM** (object detection module) starts from the *moved* anchors and
#    predicts K + 1 classes and a second, finer offset.
#
# Between the two sit **negative-anchor filtering** (anchors the ARM is sure are
# background never reach the ODM) and **OHEM** (only the hardest background is
# trained on). The paper then adds four loss ideas: GIoU, IoU-guided soft labels
# with sample weights, class weights from box counts, and learned loss weights.
# This lesson runs each piece on digits. `LESSONS_FAST=1` makes it a few seconds.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

from fcos_from_scratch.data.digits import DigitsConfig, generate_image
from fcos_from_scratch.models import build_model
from fcos_from_scratch.models.anchors import ssd_anchors
from fcos_from_scratch.models.detectors.refinedet_targets import match_anchors, negative_anchor_mask
from fcos_from_scratch.models.loss_weighting import LearnedLossWeights
from fcos_from_scratch.models.matching import Matcher
from fcos_from_scratch.models.sampling import hard_negative_mining
from fcos_from_scratch.ops import box_iou, class_weights_from_counts, iou_guided_sample_weights, iou_guided_soft_labels
from fcos_from_scratch.visualize.refinedet import refinement_picture

FAST = os.environ.get("LESSONS_FAST") == "1"
torch.manual_seed(0)


def digits_sample(index: int, config=DigitsConfig(min_side=160, max_side=224, max_digits=3)):
    """One generated digits image in [0, 1] and its target (no dataset on disk needed)."""
    picture, boxes, labels = generate_image(0, "train", index, config)
    image = torch.from_numpy(np.asarray(picture, np.float32) / 255).permute(2, 0, 1)
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                   "labels": torch.tensor(labels, dtype=torch.int64)}


image, target = digits_sample(0)
print("image", tuple(image.shape), "digits", target["labels"].tolist())

# %% [markdown]
# ## SSD anchors: one size per level, three shapes per cell
# Res2NetLite gives four source maps at strides 16, 32, 64 and ~107 (a 320-px
# image: 20x20, 10x10, 5x5, 3x3). Every cell gets anchors of one size and aspect
# ratios h / w = 1, 2, 1/2, centred in the cell ([ssd] Sec. 2.2).

# %%
feature_sizes = [(20, 20), (10, 10), (5, 5), (3, 3)]
anchors = ssd_anchors((320, 320), feature_sizes, sizes=(32, 64, 128, 256))
print("anchors:", len(anchors), "= 3 x", [h * w for h, w in feature_sizes])
print("last cell of the 3x3 level (centre 266.7, not a multiple of 107):", anchors[-3:].round().tolist())

# %% [markdown]
# ## Matching: IoU >= 0.5, plus every box's single best anchor
# A small digit may overlap no anchor by 0.5; SSD's rule lets it claim its best
# anchor anyway. torchvision's "low-quality" rule looks alike but hands that anchor
# to the box *the anchor* overlaps most -- here box 1, so box 0 ends with nothing.

# %%
quality = torch.tensor([[0.10, 0.40, 0.00],    # box 0: best anchor is 1 (IoU 0.40)
                        [0.00, 0.45, 0.90]])   # box 1: anchor 2 (0.90), and anchor 1 overlaps it more
print("SSD rule        :", Matcher(0.5, 0.5, best_prediction_per_gt=True)(quality).tolist())
print("torchvision rule:", Matcher(0.5, 0.5, allow_low_quality_matches=True)(quality).tolist())

# %% [markdown]
# ## The model and its cascade
# A narrow RefineDetLite (width 8 instead of the paper's 72). `cascade` returns the
# ARM and ODM outputs, the anchors, the ARM-refined anchors and the filter mask.

# %%
model = build_model("refinedet_lite", num_classes=10, width=8, extra_channels=(64, 64), head_channels=32)
model.eval()
with torch.no_grad():
    batch, sizes = model.preprocess([image])
    outputs, image_anchors, refined, filtered = model.cascade(batch)
arm_logits, arm_offsets, odm_logits, odm_offsets = outputs
print("padded input", tuple(batch.shape[-2:]), "anchors", len(image_anchors))
print("ARM logits", tuple(arm_logits.shape), "ODM logits", tuple(odm_logits.shape), "(K + 1 = 11 classes)")

# %% [markdown]
# The ARM is trained against the anchors; the ODM against the refined anchors,
# which differ per image (so matching is per image, detached from the ARM).

# %%
matcher = Matcher(0.5, 0.5, best_prediction_per_gt=True)
arm_targets = match_anchors(image_anchors, [target["boxes"]], [target["labels"]], matcher)
odm_targets = match_anchors(refined, [target["boxes"]], [target["labels"]], matcher)
print("ARM positives:", int((arm_targets.labels > 0).sum()), "ODM positives:", int((odm_targets.labels > 0).sum()))

# %% [markdown]
# ## Negative-anchor filtering ([refinedet] Sec. 3.3)
# If the ARM gives an anchor a background probability above 1 - theta (theta =
# 0.01), the ODM ignores it in training and it cannot become a detection. An
# untrained ARM is unsure (p ~ 0.5), so nothing is filtered yet.

# %%
logits = torch.tensor([[[0.0, -5.0], [0.0, -4.0], [0.0, 2.0]]])  # background prob 0.993, 0.982, 0.119
print("filtered:", negative_anchor_mask(logits, theta=0.01).tolist(), "| untrained model filters",
      int(filtered.sum()), "of", filtered.numel())

# %% [markdown]
# ## OHEM: 3 hard negatives per positive ([ssd] Sec. 2.2)
# Thousands of anchors are background. Per image, only the 3 x P negatives with
# the largest loss count; the rest contribute nothing.

# %%
loss = torch.tensor([[0.1, 0.9, 5.0, 0.8, 0.2, 0.7, 3.0]])
labels = torch.tensor([[0, 0, -1, 0, 0, 0, 2]])  # one positive (class 1), one ignored (-1)
print("chosen negatives:", hard_negative_mining(loss, labels, 3).nonzero()[:, 1].tolist())

# %% [markdown]
# ## The four loss ideas of [refinedetlite] Sec. 4
# **GIoU** ([giou]) replaces smooth L1 on box codes (`loc_loss="giou"`).
#
# **IoU-guided soft labels** (Eq. 3): a positive whose predicted box has IoU 0.6
# with its digit is taught "class with 1 - alpha (1 - 0.6) = 0.9", not 1, so the
# score tracks localisation quality; **sample weights** (Eq. 4) make badly
# localised positives count more.

# %%
soft = iou_guided_soft_labels(torch.tensor([3, 0]), torch.tensor([0.6, 0.2]), num_classes=4, alpha=0.25)
print("soft labels (positive of class 3, IoU 0.6; negative, IoU 0.2):\n", soft)
print("sample weights:", iou_guided_sample_weights(torch.tensor([0.6, 0.2]), torch.tensor([3, 0]), beta=0.9))

# %% [markdown]
# **Class weights** (Eq. 5): from the training split's box counts, the most frequent
# class weighs 1 and the rarest W = 10 (the background 1).

# %%
counts = torch.tensor([600.0, 360.0, 216.0, 130.0, 78.0, 47.0, 28.0, 17.0, 10.0, 6.0])  # p(d) ~ 0.6^d
print("class weights (background first):", class_weights_from_counts(counts, max_weight=10.0).round(decimals=2))

# %% [markdown]
# **Learned multi-task weights** (Eq. 6): each of the four terms is scaled by
# 1 / (2 sigma^2) (regression) or 1 / sigma^2 (classification) plus log sigma^2 / 2,
# with s = log sigma^2 learned (no weight decay). The trainer logs every sigma.

# %%
weighting = LearnedLossWeights({"arm_loc": "regression", "arm_cls": "classification"})
total, sigmas = weighting({"arm_loc": torch.tensor(2.0), "arm_cls": torch.tensor(1.0)})
print("total at s = 0:", float(total.detach()), "(= 2 / 2 + 1)", sigmas)

# %% [markdown]
# ## Train, then look at the refinement
# A few hundred steps on generated digits (a handful in fast mode). The picture
# shows the most object-like anchors before (left) and after (right) the ARM's move.

# %%
data = [digits_sample(index) for index in range(4 if FAST else 48)]
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
steps = 4 if FAST else 400
model.train()
for step in range(steps):
    chosen = [data[(4 * step + k) % len(data)] for k in range(4)]
    losses = model([c[0] for c in chosen], [c[1] for c in chosen])
    total = sum(value for name, value in losses.items() if name.startswith("loss"))
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    if step % max(steps // 4, 1) == 0 or step == steps - 1:
        print(step, {k: round(float(v.detach()), 3) for k, v in losses.items() if k.startswith("loss")})

path = refinement_picture(model, image, target, os.path.join(tempfile.mkdtemp(), "refinement.png"), top=15)
figure = plt.figure(figsize=(10, 5))
plt.imshow(plt.imread(path))
plt.axis("off")
plt.show()

# %%
model.eval()
with torch.no_grad():
    (detection,) = model([image])
keep = detection["scores"] >= 0.3
print("detections >= 0.3:", detection["labels"][keep].tolist(), "truth:", target["labels"].tolist())
print("IoU of each digit with its best detection:",
      box_iou(target["boxes"], detection["boxes"][keep]).max(dim=1).values.round(decimals=2).tolist()
      if keep.any() else "none yet")

# %%
print("LESSON COMPLETE: 11_refinedet_lite")
