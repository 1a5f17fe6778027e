# %% [markdown]
# # 09 · RoIAlign by hand
#
# A two-stage detector crops every proposal out of the feature map and resizes the
# crop to a fixed grid (say 7 x 7) for the second stage. RoIAlign ([mask-rcnn]
# Sec. 3) does this without rounding anything: it splits the RoI into
# $PH \times PW$ bins, samples a few points in each bin by **bilinear
# interpolation**, and averages them. RoI pooling ([fast-rcnn]) rounded the box and
# the bins to whole cells, which shifts small objects by up to half a stride.

# %%
import os

import matplotlib.pyplot as plt
import torch

from fcos_from_scratch.ops import roi_align, roi_align_reference

FAST = os.environ.get("LESSONS_FAST") == "1"
torch.manual_seed(0)

# %% [markdown]
# ## Bilinear interpolation
# Feature value $F[i, j]$ describes feature cell $j$, whose centre is at $j + 0.5$ in
# continuous coordinates. With `aligned=True` an image coordinate $x$ therefore maps
# to the sampling coordinate $x \cdot \text{scale} - 0.5$ (this half-pixel shift is
# what `aligned` means; `False` is the legacy rule, which omits it).
# Then, with $x_0 = \lfloor x \rfloor$, $l_x = x - x_0$:
# $$F(y, x) = (1-l_y)(1-l_x)F_{y_0 x_0} + (1-l_y)\,l_x F_{y_0 x_1} + l_y (1-l_x) F_{y_1 x_0} + l_y l_x F_{y_1 x_1}$$

# %%
def bilinear(feature, y, x):
    """feature: (C, H, W); (y, x) feature coordinates. Zero outside [-1, H] x [-1, W]."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(feature.shape[0], dtype=feature.dtype)
    y, x = min(max(y, 0.0), height - 1), min(max(x, 0.0), width - 1)
    y0, x0 = int(y), int(x)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * feature[:, y0, x0] + (1 - ly) * lx * feature[:, y0, x1]
            + ly * (1 - lx) * feature[:, y1, x0] + ly * lx * feature[:, y1, x1])


def roi_align_by_hand(feature, box, output_size, spatial_scale, sampling_ratio):
    """One RoI, aligned=True. box: (x1, y1, x2, y2) image pixels -> (C, PH, PW)."""
    ph_count, pw_count = output_size
    x1, y1, x2, y2 = [v * spatial_scale - 0.5 for v in box]
    bin_h, bin_w = (y2 - y1) / ph_count, (x2 - x1) / pw_count
    out = torch.zeros(feature.shape[0], ph_count, pw_count, dtype=feature.dtype)
    for ph in range(ph_count):
        for pw in range(pw_count):
            samples = [bilinear(feature, y1 + ph * bin_h + (iy + 0.5) * bin_h / sampling_ratio,
                                x1 + pw * bin_w + (ix + 0.5) * bin_w / sampling_ratio)
                       for iy in range(sampling_ratio) for ix in range(sampling_ratio)]
            out[:, ph, pw] = torch.stack(samples).mean(dim=0)
    return out


feature = torch.randn(1, 3, 12, 16, dtype=torch.float64)  # (B, C, H, W), stride 4 -> a 48 x 64 image
rois = torch.tensor([[0, 6.0, 5.0, 41.0, 30.0], [0, 20.3, 2.7, 33.9, 44.1]], dtype=torch.float64)
for roi in rois:
    by_hand = roi_align_by_hand(feature[0], roi[1:].tolist(), (4, 4), spatial_scale=0.25, sampling_ratio=2)
    library = roi_align(feature, roi[None], (4, 4), spatial_scale=0.25, sampling_ratio=2, aligned=True)[0]
    loops = roi_align_reference(feature, roi[None], (4, 4), spatial_scale=0.25, sampling_ratio=2, aligned=True)[0]
    torch.testing.assert_close(by_hand, library)
    torch.testing.assert_close(by_hand, loops)
print("by hand == roi_align == roi_align_reference (and roi_align equals torchvision.ops.roi_align:"
      " tests/ops/test_ops_roi_align.py, frozen values)")

# %% [markdown]
# `sampling_ratio <= 0` picks $\lceil \text{bin size} \rceil$ samples per axis
# (adaptive); the library's `roi_align` does all RoIs, bins and samples at once.

# %%
many = torch.cat([torch.zeros(50 if FAST else 500, 1, dtype=torch.float64),
                  torch.rand(50 if FAST else 500, 2, dtype=torch.float64) * 30], dim=1)
many = torch.cat([many, many[:, 1:] + 4 + torch.rand(len(many), 2, dtype=torch.float64) * 30], dim=1)
pooled_all = roi_align(feature, many, 7, 0.25, -1, True)  # (K, C, 7, 7)
torch.testing.assert_close(pooled_all[:10], roi_align_reference(feature, many[:10], 7, 0.25, -1, True))
print(f"adaptive sampling: roi_align == roi_align_reference on 10 RoIs; {tuple(pooled_all.shape)} pooled at once")

# %% [markdown]
# ## Picture
# A smooth "feature map" (a 2-D wave) with one RoI, its 4 x 4 bins and 2 x 2
# sample points per bin (left), and the pooled 4 x 4 output (right). The samples
# never snap to the grid.

# %%
h, w = 12, 16
ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
wave = (torch.sin(xs / 2.5) + torch.cos(ys / 2.0))[None]  # (1, H, W)
box = [6.0, 5.0, 41.0, 30.0]  # image pixels; feature coordinates = box / 4 - 0.5
pooled = roi_align_by_hand(wave, box, (4, 4), 0.25, 2)[0]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.imshow(wave[0], cmap="viridis", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
x1, y1, x2, y2 = [v * 0.25 - 0.5 for v in box]
for k in range(5):
    left.plot([x1 + k * (x2 - x1) / 4] * 2, [y1, y2], "w-", lw=1)
    left.plot([x1, x2], [y1 + k * (y2 - y1) / 4] * 2, "w-", lw=1)
samples = [(x1 + (i + 0.5) * (x2 - x1) / 8, y1 + (j + 0.5) * (y2 - y1) / 8) for i in range(8) for j in range(8)]
left.scatter(*zip(*samples), s=8, c="r")
left.set_title("RoI on the feature map: 4x4 bins, 2x2 samples each")
right.imshow(pooled, cmap="viridis")
right.set_title("RoIAlign output (4 x 4)")
plt.show()

# %% [markdown]
# ## Exercise
# Implement `roi_align` (sampling grid, `aligned`, `spatial_scale`, adaptive
# `sampling_ratio`, batch-index rows):
#
#     python -m assignments start roi_align --out my_work

# %%
print("LESSON COMPLETE: 09_roi_align")
