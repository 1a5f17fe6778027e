# %% [markdown]
# # 03 · Focal loss and IoU losses
#
# A dense detector scores tens of thousands of points per image, and almost all of
# them are background. Plain cross-entropy drowns in those easy negatives; the focal
# loss ([focal] Eq. (5)) turns their weight down. For the boxes, IoU-based losses
# ([giou], [diou]) compare whole boxes instead of four independent coordinates.

# %%
import math
import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from fcos_from_scratch.models.heads import prior_bias
from fcos_from_scratch.ops import (complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou,
                                   generalized_box_iou_loss, sigmoid_focal_loss)

FAST = os.environ.get("LESSONS_FAST") == "1"
torch.manual_seed(0)

# %% [markdown]
# ## The focal loss
# With $p = \sigma(x)$ and $p_t = p$ for a positive, $1 - p$ for a negative:
# $$\mathrm{FL}(p_t) = -\alpha_t (1 - p_t)^\gamma \log(p_t), \qquad \alpha = 0.25,\ \gamma = 2 \quad \text{([focal] Sec. 3)}$$
# The factor $(1 - p_t)^\gamma$ is near 0 for well-classified examples.

# %%
def focal_by_hand(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t), stable
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


logits = torch.randn(6, 10, dtype=torch.float64) * 3
targets = (torch.rand(6, 10) < 0.1).double()
torch.testing.assert_close(focal_by_hand(logits, targets), sigmoid_focal_loss(logits, targets))
print("focal by hand == sigmoid_focal_loss (which equals torchvision.ops.sigmoid_focal_loss)")

# %% [markdown]
# ## Picture: how much an example weighs
# For a positive example with probability $p_t$, cross-entropy ($\gamma = 0$) still
# charges 0.1 at $p_t = 0.9$; with $\gamma = 2$ the charge is 100x smaller.

# %%
p_t = torch.linspace(0.01, 1.0, 100)
fig, ax = plt.subplots(figsize=(6, 4))
for gamma in (0, 0.5, 1, 2, 5):
    loss = focal_by_hand(torch.logit(p_t), torch.ones_like(p_t), alpha=0.5, gamma=gamma) * 2
    ax.plot(p_t, loss, label=f"gamma = {gamma}")
ax.set(xlabel="probability of the ground-truth class p_t", ylabel="loss", ylim=(0, 5),
       title="focal loss, [focal] Fig. 1")
ax.legend()
plt.show()

# %% [markdown]
# ## Why the prior bias
# If the classifier starts at $p = 0.5$, 100 000 background points each cost
# $-\log 0.5$ and the first steps are spent shouting "background". [focal] Sec. 3.3
# sets the last bias to $b = -\log((1 - \pi)/\pi)$ with $\pi = 0.01$, so every point
# starts at $p = 0.01$.

# %%
pi = 0.01
b = -math.log((1 - pi) / pi)
assert math.isclose(prior_bias(pi), b)
negatives = torch.zeros(100_000)
for bias in (0.0, b):
    print(f"bias {bias:+.2f}: p = {torch.sigmoid(torch.tensor(bias)).item():.3f}, "
          f"CE of 100k negatives = {F.binary_cross_entropy_with_logits(negatives + bias, negatives, reduction='sum').item():9.0f}, "
          f"focal = {sigmoid_focal_loss(negatives + bias, negatives, reduction='sum').item():7.1f}")

# %% [markdown]
# ## IoU losses
# $$\mathcal{L}_\mathrm{GIoU} = 1 - \mathrm{GIoU},\quad \mathcal{L}_\mathrm{DIoU} = 1 - \mathrm{DIoU},\quad \mathcal{L}_\mathrm{CIoU} = 1 - \mathrm{CIoU}$$
# ([giou] Alg. 2, [diou] Eqs. (7), (10)). The library computes them row by row
# (a prediction against *its* target), not pairwise.

# %%
xy = torch.rand(5, 2, dtype=torch.float64) * 20
pred = torch.cat([xy, xy + 5 + torch.rand(5, 2, dtype=torch.float64) * 10], dim=1)
target = pred + torch.randn(5, 4, dtype=torch.float64)
by_hand = 1 - torch.diag(generalized_box_iou(pred, target))
torch.testing.assert_close(by_hand, generalized_box_iou_loss(pred, target))
print("1 - diag(GIoU) == generalized_box_iou_loss (torchvision's values and gradients)")

# %% [markdown]
# ## Picture: which way does the loss push?
# Gradient descent (Adam, 0.5 px steps) on a prediction that starts beside its
# target and barely touches it. Every loss walks it in; the IoU losses measure the
# match in the same unit at every box size, L1 on the corners in pixels. Plotted:
# the GIoU with the target after each step.

# %%
steps = 80 if FAST else 200
start = torch.tensor([[40.0, 5.0, 60.0, 45.0]])
goal = torch.tensor([[0.0, 0.0, 30.0, 30.0]])
losses = {"GIoU": generalized_box_iou_loss, "DIoU": distance_box_iou_loss, "CIoU": complete_box_iou_loss,
          "L1 (corners)": lambda p, t: (p - t).abs().sum(-1) / 30}
fig, ax = plt.subplots(figsize=(6, 4))
for name, loss_fn in losses.items():
    box = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([box], lr=0.5)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(box, goal).sum().backward()
        optimizer.step()
        history.append(1 - generalized_box_iou_loss(box.detach(), goal).item())
    ax.plot(history, label=name)
    print(f"{name:13s} final box {[round(v, 1) for v in box.detach()[0].tolist()]}")
ax.set(xlabel="Adam step", ylabel="GIoU with the target", title="a box learning its target")
ax.legend()
plt.show()

# %% [markdown]
# ## Exercise
# Implement `sigmoid_focal_loss` (with its reductions) and the prior-probability bias:
#
#     python -m assignments start focal_loss --out my_work

# %%
print("LESSON COMPLETE: 03_losses")
