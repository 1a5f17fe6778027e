# %% [markdown]
# # 01 · Boxes and the IoU family
#
# Every detector speaks in boxes. This lesson pins the box convention, derives IoU
# and its three descendants (GIoU, DIoU, CIoU) in a few lines, proves the
# from-scratch versions equal the library, and shows how each behaves as two boxes
# slide apart.
#
# **Convention** (`docs/CONVENTIONS.md`): boxes are `xyxy` = `(x1, y1, x2, y2)`,
# float, absolute pixels, continuous coordinates; origin at the top-left, x right,
# y down; `width = x2 - x1`, **no `+ 1`**.

# %%
import os

import matplotlib.pyplot as plt
import torch

from fcos_from_scratch.ops import (box_area, box_convert, box_iou, box_iou_reference,
                                   complete_box_iou, distance_box_iou, generalized_box_iou,
                                   generalized_box_iou_reference)

FAST = os.environ.get("LESSONS_FAST") == "1"  # CI shrinks loops; the maths is the same
torch.manual_seed(0)

# %% [markdown]
# ## Formats
# Datasets store boxes as `xywh` (COCO) or centre-size `cxcywh` (box coding); inside
# the package everything is `xyxy`. Conversions are exact inverses.

# %%
boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0],   # 40 wide, 60 tall
                      [0.0, 0.0, 10.0, 10.0]])
xywh = box_convert(boxes, "xyxy", "xywh")
cxcywh = box_convert(boxes, "xyxy", "cxcywh")
print("xywh  ", xywh.tolist())
print("cxcywh", cxcywh.tolist())
assert torch.equal(box_convert(xywh, "xywh", "xyxy"), boxes)
assert torch.equal(box_convert(cxcywh, "cxcywh", "xyxy"), boxes)
print("area  ", box_area(boxes).tolist(), "= (x2 - x1) * (y2 - y1), no + 1")

# %% [markdown]
# ## IoU
# $$\mathrm{IoU}(A, B) = \frac{|A \cap B|}{|A \cup B|} = \frac{I}{|A| + |B| - I}$$
# The intersection is itself a box: the larger top-left corner and the smaller
# bottom-right corner, with widths clamped at 0 when the boxes do not overlap.

# %%
def iou_by_hand(a, b):
    """IoU of two xyxy boxes, as a Python float."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


a, b = [0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]
print("IoU by hand:", iou_by_hand(a, b), "= 25 / (100 + 100 - 25)")

# Random boxes: the hand version, the library's plain loop and the vectorised op agree.
xy = torch.rand(8, 2) * 50
random_boxes = torch.cat([xy, xy + 1 + torch.rand(8, 2) * 40], dim=1).double()
by_hand = torch.tensor([[iou_by_hand(p.tolist(), q.tolist()) for q in random_boxes] for p in random_boxes],
                       dtype=torch.float64)
torch.testing.assert_close(by_hand, box_iou_reference(random_boxes, random_boxes))
torch.testing.assert_close(by_hand, box_iou(random_boxes, random_boxes))
print("box_iou == box_iou_reference == by hand on", len(random_boxes), "x", len(random_boxes), "pairs")
print("(box_iou matches torchvision.ops.box_iou: tests/ops/test_ops_boxes.py pins frozen values)")

# %% [markdown]
# ## GIoU, DIoU, CIoU
# IoU is 0 for every pair of disjoint boxes, so it gives no gradient that pulls a
# prediction towards a target it does not touch. The descendants add a penalty:
#
# * GIoU ([giou] Alg. 1): $\mathrm{IoU} - \frac{|C \setminus (A \cup B)|}{|C|}$, with $C$ the smallest enclosing box.
# * DIoU ([diou] Eq. (6)): $\mathrm{IoU} - \frac{\rho^2(\text{centres})}{c^2}$, with $c$ the diagonal of $C$.
# * CIoU ([diou] Eqs. (9)-(11)): DIoU $- \alpha v$, where $v = \frac{4}{\pi^2}(\arctan\frac{w_B}{h_B} - \arctan\frac{w_A}{h_A})^2$ penalises a different aspect ratio.

# %%
def giou_by_hand(a, b):
    cw = max(a[2], b[2]) - min(a[0], b[0])  # the enclosing box C
    ch = max(a[3], b[3]) - min(a[1], b[1])
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union - (cw * ch - union) / (cw * ch)


def diou_by_hand(a, b):
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    return iou_by_hand(a, b) - rho2 / c2


giou_hand = torch.tensor([[giou_by_hand(p.tolist(), q.tolist()) for q in random_boxes] for p in random_boxes],
                         dtype=torch.float64)
diou_hand = torch.tensor([[diou_by_hand(p.tolist(), q.tolist()) for q in random_boxes] for p in random_boxes],
                         dtype=torch.float64)
torch.testing.assert_close(giou_hand, generalized_box_iou_reference(random_boxes, random_boxes))
torch.testing.assert_close(giou_hand, generalized_box_iou(random_boxes, random_boxes))
torch.testing.assert_close(diou_hand, distance_box_iou(random_boxes, random_boxes))
print("GIoU and DIoU by hand == the library (which matches torchvision's values)")

# %% [markdown]
# ## Picture: sliding a box away
# A 20 x 20 target and a 20 x 20 prediction moved to the right. IoU falls to 0 at
# an offset of 20 px and stays flat; GIoU and DIoU keep falling, so a loss built on
# them still knows which way to move.

# %%
target = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
offsets = torch.linspace(0, 60, 61 if not FAST else 13)
preds = torch.stack([offsets, torch.zeros_like(offsets), offsets + 20, torch.full_like(offsets, 20.0)], dim=1)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
for name, fn in [("IoU", box_iou), ("GIoU", generalized_box_iou), ("DIoU", distance_box_iou),
                 ("CIoU", complete_box_iou)]:
    left.plot(offsets, fn(preds, target)[:, 0], label=name)
left.set(xlabel="horizontal offset (px)", ylabel="similarity", title="same-size boxes sliding apart")
left.axhline(0, color="grey", lw=0.5)
left.legend()
for x, colour in [(0, "tab:green"), (10, "tab:orange"), (30, "tab:red")]:
    right.add_patch(plt.Rectangle((x, 0), 20, 20, fill=False, ec=colour, lw=2, label=f"offset {x}"))
right.add_patch(plt.Rectangle((0, 0), 20, 20, fill=True, alpha=0.2, color="k", label="target"))
right.set(xlim=(-5, 55), ylim=(25, -5), aspect="equal", title="y grows down (image axes)")
right.legend(loc="lower right", fontsize=8)
plt.show()

# %% [markdown]
# ## Edge cases worth remembering
# A zero-area box has IoU 0 with everything (torchvision returns NaN there; we return 0,
# see `docs/CONVENTIONS.md`), and an inverted box is read as empty.

# %%
empty = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
inverted = torch.tensor([[10.0, 10.0, 0.0, 0.0]])
print("IoU(empty, empty) =", box_iou(empty, empty).item())
print("area(inverted)    =", box_area(inverted).item())

# %% [markdown]
# ## Exercise
# Implement `box_iou`, `generalized_box_iou` and `distance_box_iou` yourself:
#
#     python -m assignments start boxes_iou --out my_work
#
# The grader compares your functions with the library on random and degenerate boxes.

# %%
print("LESSON COMPLETE: 01_boxes_iou")
