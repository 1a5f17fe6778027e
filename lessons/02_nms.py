# %% [markdown]
# # 02 · Non-maximum suppression and Soft-NMS
#
# A dense detector fires many overlapping boxes on each object. Greedy NMS keeps
# the best-scoring box and deletes every box that overlaps it by more than a
# threshold, then repeats. Soft-NMS ([soft-nms]) decays overlapping scores instead
# of deleting them.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch

from fcos_from_scratch.ops import (batched_nms, batched_nms_reference, box_iou, nms, nms_reference,
                                   soft_nms, soft_nms_reference)

FAST = os.environ.get("LESSONS_FAST") == "1"
torch.manual_seed(0)

# %% [markdown]
# ## Greedy NMS in eight lines
# Sort by score; take the first remaining box; drop every remaining box whose IoU
# with it is **greater than** the threshold (equal survives: torchvision's rule).

# %%
def nms_by_hand(boxes, scores, iou_threshold):
    order = scores.argsort(descending=True).tolist()
    keep = []
    while order:
        best = order.pop(0)
        keep.append(best)
        order = [i for i in order if box_iou(boxes[best, None], boxes[i, None]).item() <= iou_threshold]
    return torch.tensor(keep, dtype=torch.int64)


# Three detections of one object and two of another.
boxes = torch.tensor([[10, 10, 50, 50], [12, 12, 52, 52], [8, 14, 48, 54],
                      [60, 20, 90, 60], [62, 22, 92, 58]], dtype=torch.float32)
scores = torch.tensor([0.9, 0.8, 0.7, 0.85, 0.6])
keep = nms_by_hand(boxes, scores, 0.5)
print("kept by hand:", keep.tolist())
assert torch.equal(keep, nms_reference(boxes, scores, 0.5))
assert torch.equal(keep, nms(boxes, scores, 0.5))
print("nms_by_hand == nms_reference == nms (and nms == torchvision.ops.nms: tests/ops/test_ops_nms.py)")

# %% [markdown]
# On many random boxes the three agree too. `nms_reference` is the loop above with
# one IoU row per kept box; `nms` is the library's vectorised version (timed after a
# warm-up call).

# %%
n = 200 if FAST else 2000
xy = torch.rand(n, 2) * 150
many = torch.cat([xy, xy + 10 + torch.rand(n, 2) * 60], dim=1)
many_scores = torch.rand(n)
nms(many, many_scores, 0.5)  # warm-up
start = time.perf_counter()
slow = nms_reference(many, many_scores, 0.5)
t_loop = time.perf_counter() - start
start = time.perf_counter()
fast = nms(many, many_scores, 0.5)
t_fast = time.perf_counter() - start
assert torch.equal(slow, fast)
assert torch.equal(nms_by_hand(many[:60], many_scores[:60], 0.5), nms(many[:60], many_scores[:60], 0.5))
print(f"{n} boxes: kept {len(fast)}; loop {t_loop * 1e3:.0f} ms, library {t_fast * 1e3:.1f} ms")

# %% [markdown]
# ## Per-class NMS
# A "3" must not suppress an overlapping "8". `batched_nms` runs NMS per class at
# once: it shifts each class's boxes by `class * (max coordinate + 1)` so boxes of
# different classes can never overlap.

# %%
labels = torch.tensor([0, 0, 1, 1, 1])
keep_per_class = batched_nms(boxes, scores, labels, 0.5)
assert torch.equal(keep_per_class, batched_nms_reference(boxes, scores, labels, 0.5))
print("classes", labels.tolist(), "-> kept", keep_per_class.tolist(), "(box 2 survives: other class)")

# %% [markdown]
# ## Soft-NMS
# Instead of deleting box $b_i$ when it overlaps the current best $M$, Soft-NMS
# rescales its score ([soft-nms] Alg. 1):
#
# * linear: $s_i \leftarrow s_i (1 - \mathrm{IoU}(M, b_i))$ when $\mathrm{IoU} > N_t$;
# * Gaussian: $s_i \leftarrow s_i\, e^{-\mathrm{IoU}(M, b_i)^2 / \sigma}$.
#
# Boxes whose score falls below a small threshold are dropped at the end.

# %%
def soft_nms_gaussian_by_hand(boxes, scores, sigma=0.5, score_threshold=0.001):
    scores = scores.clone()
    remaining, keep, kept_scores = list(range(len(boxes))), [], []
    while remaining:
        best = max(remaining, key=lambda i: scores[i].item())
        remaining.remove(best)
        if scores[best] < score_threshold:
            break
        keep.append(best)
        kept_scores.append(scores[best].item())
        for i in remaining:
            iou = box_iou(boxes[best, None], boxes[i, None]).item()
            scores[i] *= torch.exp(torch.tensor(-iou * iou / sigma))
    return torch.tensor(keep), torch.tensor(kept_scores)


keep_soft, scores_soft = soft_nms(boxes, scores, sigma=0.5, method="gaussian")
keep_ref, scores_ref = soft_nms_reference(boxes, scores, sigma=0.5, method="gaussian")
keep_hand, scores_hand = soft_nms_gaussian_by_hand(boxes, scores)
assert torch.equal(keep_soft, keep_ref) and torch.equal(keep_soft, keep_hand)
torch.testing.assert_close(scores_soft, scores_hand)
torch.testing.assert_close(scores_soft, scores_ref)
print("Gaussian Soft-NMS keeps", keep_soft.tolist())
print("decayed scores      ", [round(s, 3) for s in scores_soft.tolist()])

# %% [markdown]
# ## Picture
# Left: the raw detections. Middle: hard NMS keeps one box per object. Right:
# Soft-NMS keeps every box but fades the duplicates (line width = score).

# %%
def show(ax, title, shown, shown_scores):
    ax.set(xlim=(0, 100), ylim=(70, 0), aspect="equal", title=title)
    for box, score in zip(shown.tolist(), shown_scores.tolist()):
        x1, y1, x2, y2 = box
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=4 * score, ec="tab:blue"))
        ax.text(x1, y1 - 1, f"{score:.2f}", fontsize=7)


fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
show(axes[0], "detections", boxes, scores)
show(axes[1], "NMS (IoU > 0.5 removed)", boxes[keep], scores[keep])
show(axes[2], "Gaussian Soft-NMS (sigma 0.5)", boxes[keep_soft], scores_soft)
plt.show()

# %% [markdown]
# ## Exercise
# Write `nms` (the greedy loop), `batched_nms` and `soft_nms`:
#
#     python -m assignments start nms --out my_work
#
# The grader checks exact indices, ties and IoU exactly at the threshold.

# %%
print("LESSON COMPLETE: 02_nms")
