"""RoIAlign as plain loops: the definition, for teaching and as a test oracle.

[mask-rcnn] He et al., "Mask R-CNN", ICCV 2017, Sec. 3 ("RoIAlign").

:func:`roi_align_reference` computes exactly what :func:`~.roi_align.roi_align`
computes (same arguments, same torchvision rules, docs/CONVENTIONS.md
"roi_align"), one RoI, bin, sample and bilinear tap at a time, so a student can
read the definition and a test can compare the vectorised op with it.
"""

import math
import numbers
from typing import Sequence, Tuple, Union

import torch

from .roi_align import _check_input, _is_int, _output_size_pair, _rois_from_boxes

__all__ = ["roi_align_reference"]


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

    Returns:
        (K, C, PH, PW) pooled features, dtype and device of ``input``.
    """
    _check_input(input)
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
