# %% [markdown]
# # Lesson 10: Faster R-CNN, one stage at a time
#
# Faster R-CNN ([faster-rcnn]) detects in two stages. A small network, the
# **Region Proposal Network** (RPN), looks at every anchor of a feature pyramid
# ([fpn] Sec. 4) and says "object or not" and how to move the anchor; the best
# few hundred moved anchors are the **proposals**. The second stage pools a 7x7
# feature from each proposal (RoIAlign, [mask-rcnn]) and classifies it into K
# classes + background, refining its box once more ([fast-rcnn]).
#
# This lesson runs every step on a toy picture, then trains a tiny model. Run it
# as a script; `LESSONS_FAST=1` makes it a few seconds.

# %%
import os

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from fcos_from_scratch.models import build_model
from fcos_from_scratch.models.detectors.faster_rcnn import assign_targets
from fcos_from_scratch.models.detectors.rpn import OBJECT, NOT_OBJECT, assign_anchor_targets, filter_proposals
from fcos_from_scratch.sequence import read_number

FAST = os.environ.get("LESSONS_FAST") == "1"
torch.manual_seed(0)

# %% [markdown]
# ## A toy task: bright rectangles on noise
# Two classes: tall rectangles (label 0) and wide ones (label 1).

# %%
def toy_image(seed: int):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 96, 128, generator=generator) * 0.3
    boxes, labels = [], []
    for index in range(2):
        tall = bool(torch.randint(0, 2, (1,), generator=generator))
        w, h = (12, 30) if tall else (30, 12)
        x = 10 + 60 * index + int(torch.randint(0, 20, (1,), generator=generator))
        y = int(torch.randint(5, 96 - h - 5, (1,), generator=generator))
        image[:, y:y + h, x:x + w] = 0.9
        boxes.append([x, y, x + w, y + h])
        labels.append(0 if tall else 1)
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


image, target = toy_image(0)
print("boxes", target["boxes"].tolist(), "labels", target["labels"].tolist())

# %% [markdown]
# ## The model: every torchvision default, shrunk for a CPU
# Anchors: one size per level P2..P6, aspect ratios (h / w) 1 and 2 and 0.5.

# %%
model = build_model("faster_rcnn", backbone="tiny", num_classes=2, fpn_channels=32, representation_size=64,
                    anchor_sizes=(16, 32, 64, 128, 256), rpn_pre_nms_top_n_train=200,
                    rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                    box_batch_size_per_image=64)
model.eval()
batch, sizes, levels = model.pyramid([image])
print("pyramid levels:", [tuple(level.shape[-2:]) for level in levels])
objectness, deltas, anchors, proposals, counts = model.rpn.predict(tuple(batch.shape[-2:]), levels)
print("anchors per level:", counts, "total", len(anchors[0]))

# %% [markdown]
# ## RPN targets ([faster-rcnn] Sec. 3.1.2)
# IoU >= 0.7 with a box -> object; < 0.3 -> background; in between -> ignored. Each
# box's best anchor is an object too, however low its IoU.

# %%
labels, matched = assign_anchor_targets(anchors, [target["boxes"]], model.rpn.matcher)
print("object anchors:", int((labels[0] == OBJECT).sum()), "background:", int((labels[0] == NOT_OBJECT).sum()),
      "ignored:", int((labels[0] < 0).sum()))

# %% [markdown]
# ## Proposals: top-n per level, clip, drop tiny boxes, NMS 0.7 per level

# %%
boxes, scores = filter_proposals(proposals, objectness, sizes, counts, pre_nms_top_n=100, post_nms_top_n=50)
print("proposals kept:", len(boxes[0]), "of", len(anchors[0]), "anchors")


def show(ax, title, drawn, colour):
    """The toy image with xyxy boxes drawn (pixel edges at integers, as the convention)."""
    ax.imshow(image.permute(1, 2, 0).numpy(), extent=(0, image.shape[2], image.shape[1], 0))
    for x1, y1, x2, y2 in drawn.tolist():
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1))
    ax.set(title=title, xlim=(0, image.shape[2]), ylim=(image.shape[1], 0))
    ax.axis("off")


# Left: the object anchors of the RPN targets; right: the first 10 proposals (untrained RPN).
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
show(left, "anchors labelled 'object'", anchors[0][labels[0] == OBJECT], "lime")
show(right, "10 proposals, untrained RPN", boxes[0][:10], "orange")
plt.show()

# %% [markdown]
# ## The second stage's training samples ([fast-rcnn] Sec. 2.3)
# The ground-truth boxes join the proposals; IoU >= 0.5 is a positive RoI.

# %%
rois, roi_labels, _ = assign_targets(boxes, [target["boxes"]], [target["labels"]], model.box_matcher,
                                     model.box_sampler)
print("sampled RoIs:", len(rois[0]), "positives:", int((roi_labels[0] > 0).sum()))

# %% [markdown]
# ## Train: four losses, summed (torchvision's names)

# %%
data = [toy_image(seed) for seed in range(4 if FAST else 16)]
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
model.train()
steps = 10 if FAST else 300
for step in range(steps):
    images, targets = zip(*[data[(2 * step + k) % len(data)] for k in range(2)])
    losses = model(list(images), list(targets))
    total = sum(losses.values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    if step % max(steps // 5, 1) == 0 or step == steps - 1:
        print(step, {k: round(v.item(), 3) for k, v in losses.items()})

# %% [markdown]
# ## Detect, and read left to right ([digits-lab] task 2)
# With digits as classes, the labels sorted by box centre x form the number.

# %%
model.eval()
with torch.no_grad():
    (detection,) = model([image])
print("detections:", len(detection["scores"]), "read at 0.5:", repr(read_number(detection, 0.5)),
      "truth:", "".join(str(int(label)) for label in target["labels"]))
fig, ax = plt.subplots(figsize=(4.5, 3.5))
show(ax, "detections with score >= 0.5", detection["boxes"][detection["scores"] >= 0.5], "red")
plt.show()

# %%
print("LESSON COMPLETE: 10_faster_rcnn")
