# %% [markdown]
# # 05 · The digits dataset and box-aware augmentation
#
# Every detector in this repository trains on a CPU in minutes because its data is
# drawn, not downloaded: digits 0-9 on textured backgrounds with distractor shapes
# (`fcos_from_scratch/data/digits.py`). This lesson looks at the data, the target
# format every detector consumes, and the rule behind every augmentation: **when
# the image moves, the boxes move with it**.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import torch

from fcos_from_scratch.data import DIGIT_CLASSES, DigitsConfig, build_dataset, default_data_root
from fcos_from_scratch.data.transforms import affine, affine_matrix, crop, hflip
from fcos_from_scratch.visualize.draw import draw_boxes

FAST = os.environ.get("LESSONS_FAST") == "1"
if FAST:  # a handful of small images in a throw-away folder (never the real cache)
    scratch = tempfile.TemporaryDirectory(prefix="lesson_digits_")
    root, config = scratch.name, DigitsConfig(num_train=8, num_val=1, num_test=8, min_side=64,
                                              max_side=128, max_digits=3, digit_height=(16, 48))
else:  # the real cache, shared with `python -m fcos_from_scratch.train` (~3 s for the test split)
    root, config = default_data_root(), DigitsConfig()
torch.manual_seed(0)

# %% [markdown]
# ## One sample
# A dataset item is `(image, target)`: the image is a `(3, H, W)` float tensor in
# [0, 1]; the target holds `boxes` `(M, 4)` xyxy pixels and `labels` `(M,)` with
# label $d$ = digit $d$.

# %%
test_set = build_dataset("digits", "test", root=root, config=config, augment=False)
image, target = test_set[0]
print("image", tuple(image.shape), image.dtype, f"[{image.min():.2f}, {image.max():.2f}]")
for key, value in target.items():
    print(f"  {key:9s}", value.tolist() if torch.is_tensor(value) else value)

# %%
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for ax, index in zip(axes.flat, range(len(axes.flat))):
    image, target = test_set[index % len(test_set)]
    ax.imshow(draw_boxes(image, target["boxes"], target["labels"], class_names=DIGIT_CLASSES))
    ax.set_title(f"{len(target['boxes'])} digits, {tuple(image.shape[1:])}", fontsize=9)
    ax.axis("off")
plt.suptitle("digits test images with their ground truth")
plt.show()

# %% [markdown]
# ## Horizontal flip, by hand
# Mirroring maps $x \mapsto W - x$. A box's left edge becomes its right edge:
# $(x_1, x_2) \mapsto (W - x_2, W - x_1)$. (Flipping digits is not label-preserving
# for a reader -- a mirrored "2" is not a "2" -- which is why the digits preset
# keeps it off; it is here because every natural-image detector uses it.)

# %%
image, target = test_set[1]
height, width = image.shape[1:]
boxes = target["boxes"]
flipped_by_hand = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
flipped_image, flipped_target = hflip(image, target)
assert torch.equal(flipped_by_hand, flipped_target["boxes"])
assert torch.equal(hflip(flipped_image, flipped_target)[1]["boxes"], boxes)  # flip twice = identity
print("hflip by hand == data.transforms.hflip, and flipping twice gives the boxes back")

# %% [markdown]
# ## Rotation and shear
# An affine map $p' = A p + t$ sends a box to a parallelogram; the new box is the
# rectangle that encloses the four mapped corners (slightly larger than the digit:
# the price of keeping axis-aligned boxes). A box whose centre leaves the image is
# dropped; a crop keeps the boxes whose centre it contains and clips them.

# %%
matrix = affine_matrix(angle=15.0, translate=(0.0, 0.0), shear=(5.0, 0.0), centre=(width / 2, height / 2))
corners = torch.tensor([[x, y, 1.0] for x1, y1, x2, y2 in boxes[:1].tolist()
                        for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], dtype=torch.float64)
mapped = (matrix @ corners.T).T[:, :2]  # (4, 2)
enclosing = torch.cat([mapped.min(dim=0).values, mapped.max(dim=0).values])
warped_image, warped_target = affine(image, target, matrix)
torch.testing.assert_close(enclosing.float().clamp(min=0), warped_target["boxes"][0].clamp(min=0))
print("enclosing box of the mapped corners == data.transforms.affine:", enclosing.round().tolist())

top, left = height // 4, width // 4
cropped_image, cropped_target = crop(image, target, top, left, height // 2 + 8, width // 2 + 8)

fig, axes = plt.subplots(1, 4, figsize=(13, 3.5))
for ax, (title, img, tgt) in zip(axes, [("original", image, target), ("hflip", flipped_image, flipped_target),
                                        ("rotate 15°, shear 5°", warped_image, warped_target),
                                        ("crop", cropped_image, cropped_target)]):
    ax.imshow(draw_boxes(img, tgt["boxes"], tgt["labels"], class_names=DIGIT_CLASSES))
    ax.set_title(title)
    ax.axis("off")
ax = axes[2]
ax.plot(*torch.cat([mapped[[0, 1, 3, 2, 0]]], 0).T.numpy(), "y--", lw=1)  # the parallelogram
plt.show()

# %% [markdown]
# ## The training pipeline
# `build_dataset("digits", "train")` applies the preset's random augmentations; the
# same index gives a different view each time it is read.

# %%
train_set = build_dataset("digits", "train", root=root, config=config)
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for ax in axes:
    image, target = train_set[0]
    ax.imshow(draw_boxes(image, target["boxes"], target["labels"], class_names=DIGIT_CLASSES))
    ax.axis("off")
plt.suptitle("four augmented views of train image 0")
plt.show()

# %% [markdown]
# ## Exercise
# Box conventions and conversions (`box_convert`, `box_area`, clipping) are the first
# part of the boxes unit:
#
#     python -m assignments start boxes_iou --out my_work

# %%
print("LESSON COMPLETE: 05_digits_data")
