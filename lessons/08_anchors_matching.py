# %% [markdown]
# # 08 · Anchors, box coding, matching and sampling
#
# Two-stage detectors such as Faster R-CNN ([faster-rcnn]) start from **anchors**:
# boxes of a few sizes and shapes placed at every feature-map cell. Training needs
# three more parts: a **box coder** that writes a target box relative to its anchor,
# a **matcher** that decides which anchor answers for which object, and a
# **sampler** that picks a balanced set of positives and negatives to train on.
# All four are shared parts with torchvision's names and semantics.

# %%
import math
import os

import matplotlib.pyplot as plt
import torch

from fcos_from_scratch.models.anchors import AnchorGenerator
from fcos_from_scratch.models.matching import BACKGROUND, IGNORE, Matcher
from fcos_from_scratch.models.sampling import BalancedPositiveNegativeSampler
from fcos_from_scratch.ops import BoxCoder, box_iou

FAST = os.environ.get("LESSONS_FAST") == "1"
torch.manual_seed(0)

# %% [markdown]
# ## Anchors
# A cell anchor of size $S$ (the square root of its area) and ratio $r = h / w$ has
# $w = S / \sqrt{r}$, $h = S \sqrt{r}$, centred on 0 and rounded to whole pixels
# (torchvision's rounding). The grid shifts it to every cell: torchvision places
# anchor centres on the cell's top-left corner, $(s j, s i)$ (FCOS's points sit at
# the cell centre, offset $s/2$).

# %%
sizes, ratios = (32, 64), (0.5, 1.0, 2.0)
generator = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
cell = generator.generate_anchors(sizes, ratios)
by_hand = torch.tensor([[-w / 2, -h / 2, w / 2, h / 2] for r in ratios for s in sizes
                        for w, h in [(s / math.sqrt(r), s * math.sqrt(r))]]).round()
assert torch.equal(cell, by_hand)
print("cell anchors (ratio-major):\n", cell)

height, width, stride = 128, 128, 16
anchors = generator((height, width), [(height // stride, width // stride)])[0]  # (N, 4)
print(f"{len(anchors)} anchors = {height // stride} x {width // stride} cells x {len(cell)} per cell")
torch.testing.assert_close(anchors[len(cell)] - anchors[0], torch.tensor([16.0, 0, 16, 0]))  # next cell: +stride in x

# %% [markdown]
# ## Box coding ([rcnn] Appendix C)
# A target box $(x, y, w, h)$ (centre and size) relative to its anchor $(x_a, y_a, w_a, h_a)$:
# $$t_x = w_x \frac{x - x_a}{w_a},\ t_y = w_y \frac{y - y_a}{h_a},\ t_w = w_w \log\frac{w}{w_a},\ t_h = w_h \log\frac{h}{h_a}$$
# with weights $(10, 10, 5, 5)$, the inverse of SSD's variances $(0.1, 0.1, 0.2, 0.2)$
# ([ssd]): they scale the codes to roughly unit spread. Decoding is the exact inverse.

# %%
coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
gt = torch.tensor([[30.0, 40.0, 90.0, 70.0]])
anchor = torch.tensor([[20.0, 30.0, 84.0, 94.0]])


def encode_by_hand(box, ref, weights=(10.0, 10.0, 5.0, 5.0)):
    x, y, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    xa, ya, wa, ha = (ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2, ref[2] - ref[0], ref[3] - ref[1]
    return torch.stack([weights[0] * (x - xa) / wa, weights[1] * (y - ya) / ha,
                        weights[2] * torch.log(w / wa), weights[3] * torch.log(h / ha)])


codes = coder.encode_single(gt, anchor)
torch.testing.assert_close(codes[0], encode_by_hand(gt[0], anchor[0]))
torch.testing.assert_close(coder.decode_single(codes, anchor), gt)
print("codes", [round(v, 3) for v in codes[0].tolist()], "-> decoded back to", coder.decode_single(codes, anchor).tolist())

# %% [markdown]
# ## Matching ([faster-rcnn] Sec. 3.1.2)
# With the IoU matrix $(M, N)$ between objects and anchors, anchor $n$ is
#
# * **positive** for its best object if that IoU is $\geq 0.7$;
# * **background** (`BACKGROUND` = -1) if its best IoU is $< 0.3$;
# * **ignored** (`IGNORE` = -2) in between;
# * and, so that no object goes unmatched, every object's best anchors are positive
#   whatever their IoU (the *low-quality* rule).

# %%
gt_boxes = torch.tensor([[20.0, 20.0, 60.0, 52.0], [70.0, 56.0, 120.0, 124.0], [6.0, 90.0, 26.0, 100.0]])
iou = box_iou(gt_boxes, anchors)  # (M, N)


def match_by_hand(iou, high=0.7, low=0.3):
    best_iou, best = iou.max(dim=0)
    matches = best.clone()
    matches[best_iou < high] = IGNORE
    matches[best_iou < low] = BACKGROUND
    for m in range(len(iou)):  # low-quality rule: each object's best anchors (ties included)
        for n in torch.nonzero(iou[m] == iou[m].max()).flatten().tolist():
            matches[n] = best[n]
    return matches


matches = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
assert torch.equal(matches, match_by_hand(iou))
print(f"positives {(matches >= 0).sum().item()}, ignored {(matches == IGNORE).sum().item()}, "
      f"background {(matches == BACKGROUND).sum().item()} (Matcher == by hand, torchvision's semantics)")
print("best IoU of each object:", [round(v, 2) for v in iou.max(dim=1).values.tolist()],
      "-- objects below 0.7 get their best anchors through the low-quality rule")

# %% [markdown]
# ## Sampling
# An image has thousands of negatives and a handful of positives. The RPN trains on
# 256 anchors per image, at most half of them positive ([faster-rcnn] Sec. 3.1.3);
# the rest are filled with randomly chosen negatives. Here: 32 per image.

# %%
sampler = BalancedPositiveNegativeSampler(batch_size_per_image=32, positive_fraction=0.5)
labels = torch.where(matches >= 0, 1, torch.where(matches == BACKGROUND, 0, -1))  # 1 pos, 0 neg, -1 ignore
pos_mask, neg_mask = sampler([labels])
num_pos, num_neg = int(pos_mask[0].sum()), int(neg_mask[0].sum())
assert num_pos == min(int((labels == 1).sum()), 16) and num_pos + num_neg == 32
assert not (pos_mask[0].bool() & (labels != 1)).any() and not (neg_mask[0].bool() & (labels != 0)).any()
print(f"sampled {num_pos} positives and {num_neg} negatives")

# %% [markdown]
# ## Picture
# Left: the six anchors of one cell. Right: the objects (black), their positive
# anchors (coloured like the object), and the sampled negatives (grey centres).

# %%
colours = ["tab:red", "tab:blue", "tab:green"]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
for box in (cell + 64).tolist():
    left.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False))
left.set(xlim=(0, 128), ylim=(128, 0), aspect="equal", title="6 anchors of one cell: sizes 32, 64 x ratios 0.5, 1, 2")
for m, box in enumerate(gt_boxes.tolist()):
    right.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="k", lw=3))
    for a in anchors[matches == m].tolist():
        right.add_patch(plt.Rectangle(a[:2], a[2] - a[0], a[3] - a[1], fill=False, ec=colours[m], lw=1))
centres = (anchors[:, :2] + anchors[:, 2:]) / 2
right.scatter(*centres[neg_mask[0].bool()].T, s=12, c="grey", label="sampled negatives (centres)")
right.set(xlim=(-20, 148), ylim=(148, -20), aspect="equal", title="matched anchors (IoU >= 0.7 or best)")
right.legend(loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# ## Exercise
# Anchors per level, the box coder, the matcher with its low-quality rule, the sampler:
#
#     python -m assignments start anchors_matching --out my_work

# %%
print("LESSON COMPLETE: 08_anchors_matching")
