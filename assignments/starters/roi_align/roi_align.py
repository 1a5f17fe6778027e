"""RoIAlign -- write `roi_align`.

Starter generated from the library by `python -m assignments start roi_align`.
Keep every signature and docstring as they are; replace each
`raise NotImplementedError` with your code. You may import from
`fcos_from_scratch` anything this unit does not ask you to write.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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
    raise NotImplementedError("write roi_align: the library's version is 17 lines of code")
