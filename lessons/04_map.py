# %% [markdown]
# # 04 · Mean average precision, step by step
#
# How good is a detector? Sort its detections by score, decide for each one whether
# it found a new object (true positive) or not (false positive), trace precision
# against recall, and take the area under that curve. The details -- the IoU rule,
# how the curve is interpolated -- differ between PASCAL VOC ([voc]) and COCO
# ([coco]), and they change the number. We compute both by hand and check them
# against the library, whose `coco_eval` reproduces pycocotools' numbers and whose
# `voc_eval` reproduces the VOC devkit's.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from fcos_from_scratch.evaluation import coco_eval, detections_to_coco, targets_to_coco, tide_errors, voc_eval
from fcos_from_scratch.evaluation.coco import average_precision
from fcos_from_scratch.ops import box_iou

FAST = os.environ.get("LESSONS_FAST") == "1"

# %% [markdown]
# ## A toy evaluation: one class, three images

# %%
targets = [
    {"boxes": torch.tensor([[10., 10., 50., 50.], [60., 10., 100., 50.]]), "labels": torch.tensor([1, 1])},
    {"boxes": torch.tensor([[20., 20., 80., 90.]]), "labels": torch.tensor([1])},
    {"boxes": torch.tensor([[0., 0., 30., 30.], [40., 40., 90., 70.]]), "labels": torch.tensor([1, 1])},
]
preds = [
    {"boxes": torch.tensor([[12., 11., 50., 52.], [14., 12., 48., 49.], [61., 30., 100., 70.]]),
     "scores": torch.tensor([0.95, 0.60, 0.70]), "labels": torch.tensor([1, 1, 1])},
    {"boxes": torch.tensor([[22., 18., 82., 88.], [100., 100., 120., 120.]]),
     "scores": torch.tensor([0.90, 0.50]), "labels": torch.tensor([1, 1])},
    {"boxes": torch.tensor([[1., 0., 31., 29.]]), "scores": torch.tensor([0.80]), "labels": torch.tensor([1])},
]
num_gt = sum(len(t["boxes"]) for t in targets)

# %% [markdown]
# ## Step 1: greedy matching
# Go through the detections from the highest score down. A detection is a true
# positive when its best-overlapping *still unmatched* ground truth has IoU at least
# the threshold (COCO: $\geq t$; VOC: $> 0.5$); a second detection of a matched object
# is a duplicate, hence a false positive.

# %%
def match_by_hand(targets, preds, threshold=0.5):
    rows = []  # (score, is_tp) over all images
    for target, pred in zip(targets, preds):
        taken = set()
        ious = box_iou(pred["boxes"], target["boxes"])  # (N, M)
        for i in pred["scores"].argsort(descending=True).tolist():
            candidates = [(ious[i, j].item(), j) for j in range(len(target["boxes"])) if j not in taken]
            best_iou, best = max(candidates, default=(0.0, None))
            hit = best is not None and best_iou >= threshold
            if hit:
                taken.add(best)
            rows.append((pred["scores"][i].item(), hit))
    rows.sort(key=lambda r: -r[0])
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


scores, is_tp = match_by_hand(targets, preds)
for s, t in zip(scores, is_tp):
    print(f"score {s:.2f}  {'TP' if t else 'FP'}")

# %% [markdown]
# ## Step 2: the precision-recall curve
# After the first $k$ detections: precision $= \mathrm{TP}_k / k$, recall $= \mathrm{TP}_k / \#\mathrm{GT}$.

# %%
tp_cum = np.cumsum(is_tp)
precision = tp_cum / np.arange(1, len(is_tp) + 1)
recall = tp_cum / num_gt
print("precision", np.round(precision, 3))
print("recall   ", np.round(recall, 3))

# %% [markdown]
# ## Step 3: interpolate and average
# The raw curve zig-zags, so both benchmarks first take the **envelope**
# $\hat p(r) = \max_{r' \geq r} p(r')$. Then:
#
# * **COCO, 101 points**: the mean of $\hat p$ at $r = 0, 0.01, \dots, 1$ (0 beyond the last recall reached);
# * **VOC2007, 11 points**: the mean of $\hat p$ at $r = 0, 0.1, \dots, 1$;
# * **VOC2010+, all points**: the exact area under $\hat p$.

# %%
envelope = np.maximum.accumulate(precision[::-1])[::-1]


def interpolated_ap(recall_points):
    first = np.searchsorted(recall, recall_points, side="left")  # first detection reaching r
    return float(np.mean([envelope[i] if i < len(recall) else 0.0 for i in first]))


ap_coco = interpolated_ap(np.linspace(0, 1, 101))
ap_voc07 = interpolated_ap(np.linspace(0, 1, 11))
steps_r = np.concatenate([[0.0], recall])
ap_area = float(np.sum((steps_r[1:] - steps_r[:-1]) * envelope))
print(f"COCO 101-point AP50 {ap_coco:.4f} | VOC07 11-point {ap_voc07:.4f} | all-point area {ap_area:.4f}")

# The library agrees: its building block, COCO's full evaluator, and the VOC evaluator.
assert np.isclose(ap_coco, average_precision(scores, is_tp, num_gt))
stats = coco_eval(targets_to_coco(targets), detections_to_coco(preds))
assert np.isclose(ap_coco, stats["AP50"]), stats["AP50"]
assert np.isclose(ap_voc07, voc_eval(targets, preds, use_07_metric=True)["mAP"])
assert np.isclose(ap_area, voc_eval(targets, preds)["mAP"])
print("== average_precision, coco_eval(...)['AP50'] (pycocotools' numbers), voc_eval (devkit's)")
print(f"COCO AP@[.5:.95] = {stats['AP']:.4f}: the same, averaged over IoU 0.50, 0.55, ..., 0.95")

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.plot(np.concatenate([[0], recall]), np.concatenate([[1], precision]), "o-", label="raw precision")
ax.step(np.concatenate([[0], recall]), np.concatenate([[envelope[0]], envelope]), where="pre",
        label="envelope (max to the right)")
r101 = np.linspace(0, 1, 101)
first = np.searchsorted(recall, r101, side="left")
ax.plot(r101, [envelope[i] if i < len(recall) else 0 for i in first], ".", ms=3, label="101 sampled points")
ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.05), title=f"PR curve, AP50 = {ap_coco:.3f}")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# ## Why did we lose AP? The error breakdown
# [tide] sorts every mistake into one type (classification, localisation, both,
# duplicate, background, missed) and reports how much AP fixing *only that type*
# would give back. A synthetic detector on random scenes with known mistakes:

# %%
rng = np.random.default_rng(0)
num_images = 20 if FAST else 200
scene_targets, scene_preds = [], []
for _ in range(num_images):
    xy = rng.uniform(0, 200, size=(3, 2))
    gt = np.concatenate([xy, xy + rng.uniform(20, 60, size=(3, 2))], axis=1)
    labels = rng.integers(1, 4, size=3)
    boxes, det_labels, det_scores = [], [], []
    for box, label in zip(gt, labels):
        kind = rng.choice(["good", "loc", "cls", "dupe", "miss"], p=[0.5, 0.2, 0.1, 0.1, 0.1])
        if kind == "miss":
            continue
        jittered = box + rng.normal(0, 2 if kind != "loc" else 12, size=4)
        jittered[2:] = np.maximum(jittered[2:], jittered[:2] + 4)  # keep x2 > x1, y2 > y1
        boxes.append(jittered)
        det_labels.append(label if kind != "cls" else label % 3 + 1)
        det_scores.append(rng.uniform(0.3, 1.0))
        if kind == "dupe":
            boxes.append(box + rng.normal(0, 2, size=4)); det_labels.append(label); det_scores.append(rng.uniform(0.1, 0.5))
    xy = rng.uniform(0, 200, size=2)  # one detection on the background
    boxes.append(np.concatenate([xy, xy + 30])); det_labels.append(rng.integers(1, 4)); det_scores.append(rng.uniform(0, 0.6))
    scene_targets.append({"boxes": torch.tensor(gt, dtype=torch.float32), "labels": torch.tensor(labels)})
    scene_preds.append({"boxes": torch.tensor(np.array(boxes), dtype=torch.float32),
                        "scores": torch.tensor(det_scores, dtype=torch.float32),
                        "labels": torch.tensor(det_labels)})

breakdown = tide_errors(targets_to_coco(scene_targets), detections_to_coco(scene_preds))
print(f"AP50 = {breakdown.ap:.3f}")
for name in breakdown.counts:
    print(f"  {name:5s} {breakdown.counts[name]:4d} errors, fixing them gives +{breakdown.delta_ap[name]:.3f} AP")

fig, ax = plt.subplots(figsize=(6, 3))
names = list(breakdown.delta_ap)
ax.barh(names, [breakdown.delta_ap[n] for n in names], color="tab:red")
ax.set(xlabel="AP50 gained by fixing only this error type", title="error breakdown [tide]")
ax.invert_yaxis()
plt.show()

# %% [markdown]
# ## Exercise
# Write the per-class matching, the VOC 11-point and all-point AP, and COCO's
# 101-point AP:
#
#     python -m assignments start map --out my_work

# %%
print("LESSON COMPLETE: 04_map")
