# %% [markdown]
# # 06 · FCOS targets: points, level ranges, centre sampling, centerness
#
# FCOS ([fcos]) has no anchors. Every feature-map cell is a **point** in the image,
# and a point is positive for a box when it lies inside it; it then regresses its
# distances $(l, t, r, b)$ to the four sides. Three rules decide which points are
# positive and what they learn:
#
# 1. **level ranges** ([fcos] Sec. 3.2): level $\ell$ takes a box only if $m_{\ell-1} \le \max(l, t, r, b) < m_\ell$;
# 2. **centre sampling** ([fcos-imp]): only points within $r \cdot s_\ell$ ($r = 1.5$) of the box centre;
# 3. **ambiguity** ([fcos] Sec. 3.1): a point inside several boxes takes the smallest.
#
# Its **centerness** target ([fcos] Eq. (3)) is $\sqrt{\frac{\min(l, r)}{\max(l, r)} \cdot \frac{\min(t, b)}{\max(t, b)}}$.

# %%
import os

import matplotlib.pyplot as plt
import torch

from fcos_from_scratch.config import get_preset
from fcos_from_scratch.models.detectors.fcos import assign_targets, centerness_target, make_points
from fcos_from_scratch.models.matching import BACKGROUND
from fcos_from_scratch.ops import encode_ltrb

FAST = os.environ.get("LESSONS_FAST") == "1"
config = get_preset("digits").model  # the FCOS used on digits: P3..P5
strides, ranges, radius = config.strides, config.level_ranges, config.center_sampling_radius
print("strides", strides, "| sizes of interest", ranges, "| centre radius", radius)

# %% [markdown]
# ## Points
# Level $\ell$ has stride $s_\ell$; cell $(i, j)$ maps to the image point
# $(s_\ell j + s_\ell/2,\ s_\ell i + s_\ell/2)$, the centre of the cell's receptive square.

# %%
height, width = 128, 160
feature_sizes = [(height // s, width // s) for s in strides]
points = make_points(feature_sizes, strides)
for (h, w), s, p in zip(feature_sizes, strides, points):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    by_hand = torch.stack([xs.flatten() * s + s / 2, ys.flatten() * s + s / 2], dim=1).float()
    assert torch.equal(by_hand, p)
    print(f"stride {s:2d}: {h} x {w} = {len(p):3d} points, first {p[:2].tolist()}")

# %% [markdown]
# ## Assignment by hand
# A plain loop over points and boxes, written straight from the three rules.

# %%
gt_boxes = torch.tensor([[10., 20., 34., 50.],     # small digit: max side distance < 32 -> P3
                         [60., 10., 120., 100.],   # large: -> P5
                         [70., 40., 100., 80.]])   # medium, inside the large one: smaller wins
gt_labels = torch.tensor([3, 8, 1])


def assign_by_hand(points_per_level, boxes, labels):
    matched, target_labels = [], []
    for level, level_points in enumerate(points_per_level):
        stride, low, high = strides[level], ranges[level], ranges[level + 1]
        for x, y in level_points.tolist():
            best, best_area = BACKGROUND, float("inf")
            for m, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
                l, t, r, b = x - x1, y - y1, x2 - x, y2 - y
                inside = min(l, t, r, b) > 0
                in_range = low <= max(l, t, r, b) < high
                near_centre = max(abs(x - (x1 + x2) / 2), abs(y - (y1 + y2) / 2)) < radius * stride
                area = (x2 - x1) * (y2 - y1)
                if inside and in_range and near_centre and area < best_area:
                    best, best_area = m, area
            matched.append(best)
            target_labels.append(labels[best].item() if best != BACKGROUND else BACKGROUND)
    return torch.tensor(matched), torch.tensor(target_labels)


matched_hand, labels_hand = assign_by_hand(points, gt_boxes, gt_labels)
targets = assign_targets(points, strides, gt_boxes[None], gt_labels[None], torch.ones(1, 3, dtype=torch.bool),
                         sizes_of_interest=ranges, center_sampling_radius=radius)
assert torch.equal(matched_hand, targets.matched_idxs[0])
assert torch.equal(labels_hand, targets.labels[0])
positive = targets.labels[0] != BACKGROUND
print(f"by hand == assign_targets: {int(positive.sum())} positive points of {len(positive)}")
print("(assign_targets matches torchvision's FCOS assignment: tests/models/detectors/test_fcos_targets.py)")

# %% [markdown]
# ## What each positive point learns
# The distances are encoded in units of the level's stride, $(l, t, r, b) / s_\ell$
# (`encode_ltrb`, [fcos-imp]), so every level predicts numbers of the same size.

# %%
all_points = torch.cat(points)
point_strides = torch.cat([torch.full((len(p),), float(s)) for p, s in zip(points, strides)])
boxes_of_points = gt_boxes[targets.matched_idxs[0].clamp(min=0)]
x, y = all_points.unbind(1)
ltrb_hand = torch.stack([x - boxes_of_points[:, 0], y - boxes_of_points[:, 1],
                         boxes_of_points[:, 2] - x, boxes_of_points[:, 3] - y], dim=1) / point_strides[:, None]
torch.testing.assert_close(ltrb_hand[positive], targets.ltrb[0][positive])
torch.testing.assert_close(ltrb_hand[positive], encode_ltrb(all_points, boxes_of_points, point_strides)[positive])

l, t, r, b = ltrb_hand[positive].unbind(1)
centerness_hand = torch.sqrt(torch.minimum(l, r) / torch.maximum(l, r) * torch.minimum(t, b) / torch.maximum(t, b))
torch.testing.assert_close(centerness_hand, centerness_target(ltrb_hand[positive]))
torch.testing.assert_close(centerness_hand, targets.centerness[0][positive])
print("LTRB / stride and centerness by hand == encode_ltrb, centerness_target, assign_targets")

# %% [markdown]
# ## Picture: who is positive, on which level
# Each panel is one level; dots are its points, coloured by the box they regress
# (grey: background); the dashed square is the centre-sampling region of each box
# on that level. Right: the centerness target, 1 at a box's centre and 0 on its border.

# %%
colours = ["tab:red", "tab:blue", "tab:green"]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
start = 0
for level, (ax, level_points) in enumerate(zip(axes, points)):
    stop = start + len(level_points)
    owner = targets.matched_idxs[0][start:stop]
    ax.scatter(*level_points.T, s=4, c="lightgrey")
    for m, box in enumerate(gt_boxes.tolist()):
        ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec=colours[m], lw=2))
        cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, radius * strides[level]
        ax.add_patch(plt.Rectangle((cx - half, cy - half), 2 * half, 2 * half, fill=False, ec=colours[m], ls="--", lw=0.8))
        mine = owner == m
        ax.scatter(*level_points[mine].T, s=30, c=colours[m])
    ax.set(xlim=(0, width), ylim=(height, 0), aspect="equal",
           title=f"P{level + 3}: stride {strides[level]}, max(l,t,r,b) in [{ranges[level]:g}, {ranges[level + 1]:g})")
    start = stop

# Centerness on a dense pixel grid, for the three boxes.
ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
heat = torch.zeros(height, width)
for x1, y1, x2, y2 in gt_boxes.tolist():
    ltrb = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], dim=-1).clamp(min=0)
    heat = torch.maximum(heat, centerness_target(ltrb))
axes[3].imshow(heat, cmap="magma")
axes[3].set_title("centerness target")
plt.show()

# %% [markdown]
# ## Exercise
# Implement `make_points`, `encode_ltrb`/`decode_ltrb`, `centerness_target`,
# `candidate_mask` and `assign_targets` (vectorised, no loop over points):
#
#     python -m assignments start fcos_targets --out my_work

# %%
print("LESSON COMPLETE: 06_fcos_targets")
