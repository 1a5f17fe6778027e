"""RoIAlign: pool a fixed-size feature grid out of every region of interest.

[mask-rcnn] He et al., "Mask R-CNN", ICCV 2017, Sec. 3 ("RoIAlign").

Each RoI (a box in image pixels, multiplied by ``spatial_scale`` to reach the
feature map) is cut into ``PH × PW`` equal bins. Inside every bin a regular
``grid_h × grid_w`` lattice of sample points is read from the feature map by
bilinear interpolation, and the bin's output is their average::

    out[k, c, ph, pw] = 1 / (grid_h * grid_w) * sum_{iy, ix} bilinear(F[b_k, c], y, x)
    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h      (x likewise)

No coordinate is ever rounded -- that is the whole point of RoIAlign over
RoIPool. Names, signature and every sampling rule follow
``torchvision.ops.roi_align`` (its CPU kernel), so the values agree to
rounding error; see ``roi_align`` for the rules.

How it is vectorised (no Python loop over RoIs, bins or samples):

1. per RoI: start, bin size and grid size (the grid differs per RoI when it
   is adaptive, so the samples form a *ragged* list);
2. per RoI and output row (column): the 1-D sample coordinates and their two
   bilinear neighbours and weights -- bilinear interpolation is separable, a
   2-D weight is the product of a y weight and an x weight;
3. per sample: the 4 neighbours' flat indices into the channels-last map
   ``F.permute(0, 2, 3, 1).reshape(B * H * W, C)`` and their weights;
4. per bin: the weighted sum of the gathered rows, ``sum_e w_e * F_flat[i_e]``,
   done by ``torch.nn.functional.embedding_bag`` (a fused gather + weighted sum,
   so the (#samples × 4, C) gathered tensor is never materialised). Autograd
   turns the gather into a scatter-add, which is the input gradient.
   ``summation="kernel"`` replaces this step by ``_sum_in_kernel_order``, which
   gathers the taps in chunks and adds them in torchvision's order (same bits).
"""

import numbers
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ._checks import NonFiniteBoxError, OpInputError, RoIBoxesError

__all__ = ["roi_align"]


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _output_size_pair(output_size) -> Tuple[int, int]:
    """``int`` or ``(PH, PW)`` → ``(PH, PW)``, both positive integers."""
    if _is_int(output_size):
        pair = (int(output_size), int(output_size))
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2 and all(
        _is_int(v) for v in output_size
    ):
        pair = (int(output_size[0]), int(output_size[1]))
    else:
        raise ValueError(
            f"output_size must be an int or a pair of ints (PH, PW), got {output_size!r}"
        )
    if min(pair) < 1:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    return pair


def _check_input(input) -> None:
    """torchvision's kernel rejects these with ``RuntimeError``: ours is also one."""
    if not isinstance(input, torch.Tensor):
        raise OpInputError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise OpInputError(f"input must have shape (B, C, H, W), got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise OpInputError(f"input must be a floating-point tensor, got dtype {input.dtype}")
    if input.shape[2] < 1 or input.shape[3] < 1:
        raise OpInputError(f"input must have H >= 1 and W >= 1, got {tuple(input.shape)}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are sampled and accumulated in float32 and rounded once at the end."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _list_to_rois(boxes: Sequence[torch.Tensor], input: torch.Tensor) -> torch.Tensor:
    """Per-image (L, 4) boxes → one (K, 5) tensor ``[batch_index, x1, y1, x2, y2]``."""
    batch_size = input.shape[0]
    if len(boxes) != batch_size:
        raise ValueError(
            f"boxes is a list of {len(boxes)} tensors but input has batch size "
            f"{batch_size}; pass one (L, 4) tensor per image"
        )
    rows = []
    for i, b in enumerate(boxes):
        if not isinstance(b, torch.Tensor):
            raise RoIBoxesError(
                "boxes is expected to be a Tensor[L, 5] or a List[Tensor[K, 4]]: "
                f"boxes[{i}] must be a torch.Tensor of shape (L, 4), got {type(b).__name__}"
            )
        if b.dim() != 2 or b.shape[1] != 4:
            raise RoIBoxesError(
                "The shape of the tensor in the boxes list is not correct as "
                f"List[Tensor[L, 4]]: boxes[{i}] must have shape (L, 4), got {tuple(b.shape)}"
            )
        if b.device != input.device:
            raise ValueError(f"boxes[{i}] is on {b.device} but input is on {input.device}")
        index = torch.full_like(b[:, :1], i, dtype=torch.float64)  # (L, 1)
        rows.append(torch.cat([index, b.to(torch.float64)], dim=1))  # (L, 5)
    return torch.cat(rows, dim=0)  # (K, 5)


def _rois_from_boxes(boxes, input: torch.Tensor) -> torch.Tensor:
    """Validate ``boxes`` (tensor or list) and return (K, 5) RoIs in the working dtype.

    Shape and type errors are :class:`RoIBoxesError` (also an ``AssertionError``,
    with torchvision's wording); the rest are plain ``ValueError``.
    """
    batch_size = input.shape[0]
    if isinstance(boxes, (list, tuple)):
        rois = _list_to_rois(boxes, input)
    elif isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise RoIBoxesError(
                "The boxes tensor shape is not correct as Tensor[K, 5]: boxes must be a "
                "(K, 5) tensor [batch_index, x1, y1, x2, y2] or a list of (L, 4) tensors, "
                f"got a tensor of shape {tuple(boxes.shape)}"
            )
        rois = boxes
    else:
        raise RoIBoxesError(
            "boxes is expected to be a Tensor[L, 5] or a List[Tensor[K, 4]]: boxes must be "
            f"a (K, 5) tensor or a list of (L, 4) tensors, got {type(boxes).__name__}"
        )
    if rois.device != input.device:
        raise ValueError(f"boxes are on {rois.device} but input is on {input.device}")
    if rois.dtype == torch.bool or rois.is_complex():
        raise ValueError(f"boxes must be real-valued, got dtype {rois.dtype}")
    rois = rois.detach()  # like torchvision: no gradient flows to the boxes
    if not torch.isfinite(rois).all():
        raise NonFiniteBoxError("boxes must be finite (no NaN or inf coordinates)")
    index = rois[:, 0]
    if ((index != index.floor()) | (index < 0) | (index >= batch_size)).any():
        raise ValueError(
            f"boxes[:, 0] must hold whole batch indices in [0, {batch_size - 1}], "
            f"got values {index.unique().tolist()[:8]}"
        )
    return rois.to(_work_dtype(input.dtype))


# ---------------------------------------------------------------------------
# Sampling geometry (torchvision CPU kernel rules)
# ---------------------------------------------------------------------------

def _segment_ids(counts: torch.Tensor) -> torch.Tensor:
    """``i`` repeated ``counts[i]`` times: the parent of every item of a ragged list.

    Equal to ``torch.repeat_interleave(counts)``, whose CPU kernel opens a thread
    pool even for a few elements (milliseconds each on a busy machine). Here: put
    a 1 where each segment ends (empty segments stack their 1s), then cumsum.

    Args:
        counts: (N,) int64 >= 0.

    Returns:
        (counts.sum(),) int64 segment ids, nondecreasing.
    """
    ends = torch.cumsum(counts, 0)  # (N,)
    total = int(ends[-1]) if ends.numel() else 0
    marks = torch.zeros(total + 1, dtype=torch.int64, device=counts.device)
    marks.index_add_(0, ends[:-1], torch.ones_like(ends[:-1]))  # (total + 1,)
    return torch.cumsum(marks[:-1], 0)  # (total,)


def _roi_geometry(start: torch.Tensor, end: torch.Tensor, pooled: int,
                  sampling_ratio: int, aligned: bool):
    """Bin size and sample-grid size along one axis, for every RoI.

    Args:
        start, end: (K,) RoI edges on the feature map (already scaled and shifted).
        pooled: number of output bins along the axis (PH or PW).

    Returns:
        bin_size: (K,) float; grid: (K,) int64 samples per bin along the axis.
    """
    length = end - start  # (K,)
    if not aligned:
        length = length.clamp(min=1.0)  # legacy: malformed RoIs become 1 pixel
    bin_size = length / pooled  # (K,)
    if sampling_ratio > 0:
        grid = torch.full_like(bin_size, sampling_ratio, dtype=torch.int64)
    else:
        # adaptive: about one sample per feature-map pixel; an empty or inverted
        # (aligned) RoI gets grid 0 -> no samples -> output 0, as in torchvision
        grid = torch.ceil(length / pooled).clamp(min=0).to(torch.int64)
    return bin_size, grid


def _axis_samples(start, bin_size, grid, pooled: int, size: int, average: bool = True):
    """All 1-D sample coordinates along one axis and their bilinear neighbours.

    Samples are ragged: RoI k has ``pooled * grid[k]`` of them, ordered
    (k, bin, i). Rules (torchvision ``bilinear_interpolate``): a sample with
    coordinate < -1 or > size contributes 0; otherwise it is clamped to >= 0,
    and one whose floor is >= size - 1 reads the last pixel only.

    Args:
        start, bin_size: (K,) float; grid: (K,) int64.
        pooled: bins along the axis; size: feature-map length along the axis (H or W).
        average: divide the weights by the grid (False: the kernel divides the sum).

    Returns:
        pixels: (R, 2) int64 neighbour indices [low, high];
        weights: (R, 2) float [1 - frac, frac] / grid, zeroed for samples off the map
            (dividing by the grid here, on both axes, averages the bin; not divided
            when ``average`` is False);
        roi: (R,) int64 the RoI of every sample;
        first: (K,) int64 index of RoI k's first sample.
    """
    per_roi = pooled * grid  # (K,)
    first = torch.cumsum(per_roi, 0) - per_roi  # (K,)
    roi = _segment_ids(per_roi)  # (R,)
    j = torch.arange(roi.shape[0], device=start.device) - first.index_select(0, roi)  # (R,)
    g = grid.index_select(0, roi)  # (R,)
    bin_index = j // g  # (R,)
    i = j - bin_index * g  # (R,) sample index inside the bin
    dtype, b = start.dtype, bin_size.index_select(0, roi)
    # same operation order as the reference kernel, so the rounding agrees too
    coord = (start.index_select(0, roi) + bin_index.to(dtype) * b
             + (i.to(dtype) + 0.5) * b / g.to(dtype))  # (R,)
    inside = (coord >= -1.0) & (coord <= size)  # NaN would count as outside
    coord = torch.where(inside, coord.clamp(min=0.0), torch.zeros_like(coord))
    low = coord.to(torch.int64)  # floor, since coord >= 0
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(dtype))  # (R,)
    weights = torch.stack([1.0 - frac, frac], dim=1) * inside.unsqueeze(1).to(dtype)  # (R, 2)
    if average:
        # the bin average 1 / (grid_h * grid_w) is split over the two axes (the kernel
        # divides the sum instead: same value up to rounding, and far cheaper)
        weights = weights / g.to(dtype).unsqueeze(1)  # (R, 2)
    return torch.stack([low, high], dim=1), weights, roi, first  # (R, 2), (R, 2), (R,), (K,)


def _samples_per_bin(grid_h, grid_w, first_y, first_x, PH: int, PW: int):
    """Enumerate the 2-D samples bin by bin, as pairs (row-sample, column-sample).

    Sample order is (k, ph, pw, iy, ix): bin ``(k * PH + ph) * PW + pw`` holds
    ``grid_h[k] * grid_w[k]`` consecutive samples; sample (iy, ix) of it combines
    row-sample ``first_y[k] + ph * grid_h[k] + iy`` with column-sample
    ``first_x[k] + pw * grid_w[k] + ix`` (see ``_axis_samples``).

    Returns:
        ry, rx: (S,) int64 row- and column-sample ids;
        offsets: (K * PH * PW,) int64 index of every bin's first sample.
    """
    K, device = grid_h.shape[0], grid_h.device
    bins = torch.arange(K * PH * PW, device=device)
    k, ph, pw = bins // (PH * PW), (bins // PW) % PH, bins % PW  # (K*PH*PW,) each
    gh, gw = grid_h.index_select(0, k), grid_w.index_select(0, k)  # (K*PH*PW,)
    count = gh * gw  # (K*PH*PW,)
    offsets = torch.cumsum(count, 0) - count
    row0 = first_y.index_select(0, k) + ph * gh  # (K*PH*PW,) first row-sample of the bin
    col0 = first_x.index_select(0, k) + pw * gw
    # copy every bin's (row0, col0, gw, offset) to each of its samples in one go
    # (few, large ops: each one costs a thread synchronisation)
    table = torch.stack([row0, col0, gw, offsets], dim=1)  # (K*PH*PW, 4)
    per_sample = table.index_select(0, _segment_ids(count))  # (S, 4)
    row0, col0, gw, first = per_sample.unbind(1)  # (S,) each
    j = torch.arange(per_sample.shape[0], device=device) - first  # (S,) index in the bin
    ry = row0 + torch.div(j, gw, rounding_mode="floor")  # (S,) row0 + iy
    rx = col0 + torch.remainder(j, gw)  # (S,) col0 + ix
    return ry, rx, offsets


def _bilinear_taps(rois, map_size, output_size, spatial_scale, sampling_ratio, aligned, average=True):
    """Every bin's bilinear taps: flat pixel indices and weights that average to the bin.

    Args:
        rois: (K, 5) ``[batch_index, x1, y1, x2, y2]`` image pixels.
        map_size: (H, W) of the feature map; output_size: (PH, PW).

    Returns:
        index: (S, 2, 2) int64 row of the (B*H*W, C) channels-last map read by
            neighbour (y_low | y_high, x_low | x_high) of each of the S samples;
        weight: (S, 2, 2) float bilinear weight / samples in the bin (0 off the map;
            not divided by the samples when ``average`` is False);
        offsets: (K*PH*PW,) int64 first sample of each bin (samples are grouped by bin).
    """
    (H, W), (PH, PW) = map_size, output_size
    offset = 0.5 if aligned else 0.0  # aligned: pixel centres land on integers
    batch, x1, y1, x2, y2 = rois.unbind(1)  # (K,) each
    start_x, start_y = x1 * spatial_scale - offset, y1 * spatial_scale - offset
    end_x, end_y = x2 * spatial_scale - offset, y2 * spatial_scale - offset
    bin_h, grid_h = _roi_geometry(start_y, end_y, PH, sampling_ratio, aligned)
    bin_w, grid_w = _roi_geometry(start_x, end_x, PW, sampling_ratio, aligned)

    rows, wy, roi_y, first_y = _axis_samples(start_y, bin_h, grid_h, PH, H, average)  # (Ry, 2) x2, ...
    cols, wx, _, first_x = _axis_samples(start_x, bin_w, grid_w, PW, W, average)  # (Rx, 2) x2, ...
    # fold the image index into the row: row r of image b is row b * H + r of the stack
    image = batch.to(torch.int64).index_select(0, roi_y)  # (Ry,)
    rows = (rows + (image * H)[:, None]) * W  # (Ry, 2) first flat index of the pixel row
    ry, rx, offsets = _samples_per_bin(grid_h, grid_w, first_y, first_x, PH, PW)  # (S,) x2

    # neighbour (a, b) of a sample: flat index row_a * W + col_b, weight wy_a * wx_b
    # (separable bilinear interpolation; torchvision's w1 = hy * hx, w2 = hy * lx, ...)
    index = rows.index_select(0, ry)[:, :, None] + cols.index_select(0, rx)[:, None, :]
    weight = wy.index_select(0, ry)[:, :, None] * wx.index_select(0, rx)[:, None, :]
    return index, weight, offsets  # (S, 2, 2), (S, 2, 2), (K*PH*PW,)


SUMMATIONS = ("fused", "kernel")
_KERNEL_CHUNK = 1 << 22  # gathered values per chunk of the kernel-order sum (16 MiB of float32)


def _sum_in_kernel_order(flat: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                         offsets: torch.Tensor) -> torch.Tensor:
    """Every bin's average, rounded exactly as torchvision's CPU kernel rounds it.

    Floating-point addition is not associative, so the fused sum (one weighted sum
    of a bin's taps) and the kernel's loop differ in the last bits. The kernel
    computes, per bin, with unscaled bilinear weights::

        acc = 0
        for each sample (iy, ix), in order:
            acc += ((w1 * v1 + w2 * v2) + w3 * v3) + w4 * v4
        out = acc / count

    Here the same expression, vectorised over bins and channels: gather the four
    taps of every sample slot (bins padded to the largest sample count with
    zeros), multiply, add the taps left to right, then the samples one slot at a
    time. It materialises the gathered taps chunk by chunk: 1.7x the fused sum's
    time for 1000 RoIs on a 256-channel P2-P5 pyramid (README, the parity paragraph).

    Args:
        flat: (B*H*W, C) channels-last feature rows.
        index, weight: (S, 2, 2) taps of ``_bilinear_taps(..., average=False)``.
        offsets: (N,) first sample of each of the N bins (samples grouped by bin).

    Returns:
        (N, C) bin averages.
    """
    num_bins, num_samples, channels = offsets.shape[0], index.shape[0], flat.shape[1]
    ends = torch.cat([offsets[1:], offsets.new_tensor([num_samples])])  # (N,)
    count = ends - offsets  # (N,) samples per bin
    slots = int(count.max()) if num_bins else 0
    if slots == 0:  # no bin has a sample: all zeros, still on the autograd graph
        return flat.sum() * flat.new_zeros((num_bins, channels))
    slot = torch.arange(slots, device=offsets.device)  # (G,)
    valid = slot[None, :] < count[:, None]  # (N, G)
    sample = torch.where(valid, offsets[:, None] + slot[None, :], 0)  # (N, G)
    taps = index.reshape(-1, 4)[sample]  # (N, G, 4) rows of flat
    weights = weight.reshape(-1, 4)[sample]  # (N, G, 4); padding slots are masked below
    step = max(1, _KERNEL_CHUNK // (slots * 4 * max(channels, 1)))
    sums = []
    for start in range(0, num_bins, step):
        products = flat[taps[start:start + step]] * weights[start:start + step, ..., None]  # (n, G, 4, C)
        per_sample = ((products[:, :, 0] + products[:, :, 1]) + products[:, :, 2]) + products[:, :, 3]
        if not bool(valid[start:start + step].all()):  # padding adds exactly 0, even for inf taps
            per_sample = torch.where(valid[start:start + step, :, None], per_sample, 0.0)
        total = per_sample[:, 0]  # (n, C): 0 + s_0 = s_0
        for g in range(1, slots):
            total = total + per_sample[:, g]
        sums.append(total)
    return torch.cat(sums) / count.clamp(min=1).to(flat.dtype)[:, None]  # (N, C)


# ---------------------------------------------------------------------------
# Public op
# ---------------------------------------------------------------------------

def roi_align(
    input: torch.Tensor,
    boxes: Union[torch.Tensor, Sequence[torch.Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    summation: str = "fused",
) -> torch.Tensor:
    """RoIAlign with average pooling [mask-rcnn] Sec. 3, with torchvision's rules.

    Rules, exactly as torchvision's CPU kernel:

    * RoI edges on the map: ``x * spatial_scale - offset``, ``offset = 0.5`` when
      ``aligned`` (so pixel centres sit at integers), else 0.
    * ``aligned=False`` (legacy): RoI width and height are clamped to >= 1.
      ``aligned=True``: no clamp; a RoI of size <= 0 gets no samples -> zeros.
    * ``bin = roi_size / pooled``; samples per bin per axis
      ``grid = sampling_ratio`` if > 0, else adaptive ``ceil(roi_size / pooled)``.
    * Sample ``y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h`` (x likewise).
      A sample with y < -1 or y > H (or x < -1 or x > W) reads 0; otherwise
      y <= 0 is clamped to 0, and if ``floor(y) >= H - 1`` it reads row H - 1.
    * Bin value = sum of samples / ``max(grid_h * grid_w, 1)``.

    Stricter than torchvision (``ValueError`` instead of undefined behaviour):
    batch indices must be whole numbers in [0, B), coordinates finite, and a list
    of boxes must have exactly one entry per image. Boxes get no gradient.

    Args:
        input: (B, C, H, W) float feature maps.
        boxes: (K, 5) ``[batch_index, x1, y1, x2, y2]`` or a list of B (L_b, 4)
            tensors, xyxy in image pixels; cast to ``input``'s dtype (float32 for
            float16/bfloat16 input). A box with ``x2 < x1`` follows the rules
            above (legacy: width 1; aligned: zeros).
        output_size: ``PH`` for a square output, or ``(PH, PW)``.
        spatial_scale: feature-map pixels per image pixel (1/8 for stride 8).
        sampling_ratio: samples per bin per axis; <= 0 means adaptive.
        aligned: apply the half-pixel shift (Detectron2 convention).
        summation: "fused" (default): each bin's taps in one fused weighted sum
            (``embedding_bag``), equal to torchvision up to float32 rounding (a few
            ulps); "kernel": the taps and samples added in the order of
            torchvision's CPU kernel, so float32 results are bit-identical to it
            (``_sum_in_kernel_order``), at ~1.7x the cost. Models loaded
            with ``from_torchvision`` use "kernel" to reproduce its detections.

    Returns:
        (K, C, PH, PW) contiguous pooled features, dtype and device of ``input``;
        RoIs in the order of ``boxes`` (list input: image 0's boxes first).
        A ``channels_last`` input saves one copy. float16/bfloat16 input is
        sampled and summed in float32 and rounded once, as torchvision's CUDA
        kernel accumulates (its CPU kernel has no bfloat16).

    Raises:
        ValueError: every bad argument. Also an ``AssertionError`` for boxes of the
            wrong shape or type and a ``RuntimeError`` for a bad ``input``, the
            types torchvision raises there.
    """
    _check_input(input)
    PH, PW = _output_size_pair(output_size)
    if not _is_int(sampling_ratio):
        raise ValueError(f"sampling_ratio must be an int, got {sampling_ratio!r}")
    if not (isinstance(spatial_scale, numbers.Real) and 0 < spatial_scale < float("inf")):
        raise ValueError(f"spatial_scale must be a positive finite number, got {spatial_scale!r}")
    if summation not in SUMMATIONS:
        raise ValueError(f"summation must be one of {SUMMATIONS}, got {summation!r}")
    rois = _rois_from_boxes(boxes, input)  # (K, 5)
    B, C, H, W = input.shape
    K = rois.shape[0]

    kernel_order = summation == "kernel"
    index, weight, offsets = _bilinear_taps(rois, (H, W), (PH, PW), spatial_scale, sampling_ratio,
                                            aligned, average=not kernel_order)  # (S, 2, 2) x2, (K*PH*PW,)
    flat = input.permute(0, 2, 3, 1).reshape(B * H * W, C)  # (B*H*W, C) channels-last
    if C == 0:  # embedding_bag rejects zero-width rows; the result is empty anyway
        return flat.sum() * input.new_zeros((K, C, PH, PW))  # keeps the autograd graph
    flat = flat.to(weight.dtype)  # float16/bfloat16: one float32 copy, summed in float32
    if kernel_order:
        pooled = _sum_in_kernel_order(flat, index, weight, offsets)  # (K*PH*PW, C)
    else:
        pooled = F.embedding_bag(
            index.reshape(-1), flat, 4 * offsets, mode="sum",
            per_sample_weights=weight.reshape(-1),
        )  # (K*PH*PW, C): row n = sum of weight_e * flat[index_e] over bin n's taps
    pooled = pooled.to(input.dtype)  # the one rounding of a low-precision result
    return pooled.reshape(K, PH, PW, C).permute(0, 3, 1, 2).contiguous()  # (K, C, PH, PW)


# ---------------------------------------------------------------------------
# The plain loop: the definition, for teaching and as a test oracle
# ---------------------------------------------------------------------------

__all__.append("roi_align_reference")


def _bilinear_taps_at(y: float, x: float, height: int, width: int):
    """The (up to) four pixels a sample at (x, y) reads and their bilinear weights.

    torchvision's ``bilinear_interpolate`` rules (docs/CONVENTIONS.md "roi_align"):
    a sample more than one pixel off the map reads nothing (0); otherwise negative
    coordinates are clamped to 0, and a sample at or past the last row (column)
    reads that row (column) only.

    Returns:
        A list of ``(row, col, weight)``; empty for a sample off the map.
    """
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)  # floor, since y, x >= 0
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low  # distance past the low neighbour
    hy, hx = 1.0 - ly, 1.0 - lx
    return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
            (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]


def _bilinear_interpolate(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Bilinear interpolation of a (C, H, W) map at one point (x, y): a (C,) vector."""
    _, height, width = feature.shape
    value = feature.new_zeros(feature.shape[0])  # (C,)
    for row, col, weight in _bilinear_taps_at(y, x, height, width):
        value = value + weight * feature[:, row, col]
    return value


def _roi_axis(start: float, end: float, pooled: int, sampling_ratio: int, aligned: bool):
    """Bin size and samples per bin along one axis of one RoI (CONVENTIONS rules)."""
    import math

    length = end - start
    if not aligned:
        length = max(length, 1.0)  # legacy: malformed RoIs are forced to 1 pixel
    bin_size = length / pooled
    grid = sampling_ratio if sampling_ratio > 0 else max(math.ceil(length / pooled), 0)
    return bin_size, grid


def _pool_one_roi(feature, roi, output_size, spatial_scale, sampling_ratio, aligned):
    """(C, PH, PW) RoIAlign of one RoI ``[x1, y1, x2, y2]`` (Python floats) on (C, H, W)."""
    PH, PW = output_size
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi)
    bin_h, grid_h = _roi_axis(y1, y2, PH, sampling_ratio, aligned)
    bin_w, grid_w = _roi_axis(x1, x2, PW, sampling_ratio, aligned)
    count = max(grid_h * grid_w, 1)
    bins = []
    for ph in range(PH):
        for pw in range(PW):
            total = feature.new_zeros(feature.shape[0])  # (C,)
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    total = total + _bilinear_interpolate(feature, y, x)
            bins.append(total / count)  # the bin's average
    return torch.stack(bins, dim=1).reshape(feature.shape[0], PH, PW)  # (C, PH, PW)


def roi_align_reference(
    input: torch.Tensor,
    boxes: Union[torch.Tensor, Sequence[torch.Tensor]],
    output_size: Union[int, Tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    summation: str = "fused",
) -> torch.Tensor:
    """RoIAlign as plain loops over RoIs, bins and sample points, [mask-rcnn] Sec. 3.

    Same arguments, rules and result as :func:`roi_align` (see there and
    docs/CONVENTIONS.md "roi_align"), written as the definition::

        for each RoI k, bin (ph, pw):
            out[k, :, ph, pw] = mean over the grid_h x grid_w samples (y, x) of
                                bilinear(F[b_k], y, x)

    The sampling geometry is computed on Python floats; the features are read
    with tensor indexing, so ``input`` receives a gradient (boxes do not). One
    Python step per sample and tap: use it on a handful of RoIs on tiny maps.

    Args:
        input: (B, C, H, W) float feature maps.
        boxes: (K, 5) ``[batch_index, x1, y1, x2, y2]`` or a list of B (L_b, 4)
            tensors, xyxy in image pixels.
        output_size: ``PH`` or ``(PH, PW)``.
        spatial_scale: feature-map pixels per image pixel.
        sampling_ratio: samples per bin per axis; <= 0 means adaptive.
        aligned: apply the half-pixel shift.
        summation: accepted for :func:`roi_align`'s signature; the loop always adds
            each sample's taps left to right and the samples in order, which is the
            kernel's order ("kernel").

    Returns:
        (K, C, PH, PW) pooled features, dtype and device of ``input``.
    """
    _check_input(input)
    if summation not in SUMMATIONS:
        raise ValueError(f"summation must be one of {SUMMATIONS}, got {summation!r}")
    PH, PW = _output_size_pair(output_size)
    if not _is_int(sampling_ratio):
        raise ValueError(f"sampling_ratio must be an int, got {sampling_ratio!r}")
    if not (isinstance(spatial_scale, numbers.Real) and 0 < spatial_scale < float("inf")):
        raise ValueError(f"spatial_scale must be a positive finite number, got {spatial_scale!r}")
    rois = _rois_from_boxes(boxes, input).tolist()  # K lists [batch_index, x1, y1, x2, y2]
    pooled = [
        _pool_one_roi(input[int(roi[0])], roi[1:], (PH, PW), spatial_scale,
                      int(sampling_ratio), aligned)
        for roi in rois
    ]
    if not pooled:  # no RoIs: an empty result that is still on the autograd graph
        return input.new_zeros((0, input.shape[1], PH, PW)) + 0 * input.sum()
    return torch.stack(pooled)  # (K, C, PH, PW)
