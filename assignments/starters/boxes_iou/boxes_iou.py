"""Box formats and the IoU family -- write `box_convert`, `box_area`, `box_iou`, `generalized_box_iou`.

Starter generated from the library by `python -m assignments start boxes_iou`.
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


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Convert boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    ``xyxy`` = (x1, y1, x2, y2) corners; ``xywh`` = (x1, y1, width, height), the COCO
    format; ``cxcywh`` = (centre x, centre y, width, height).

    Args:
        boxes: (N, 4) boxes in ``in_fmt`` (any leading dimensions are accepted).
        in_fmt: format of ``boxes``.
        out_fmt: format of the result.

    Returns:
        (N, 4) boxes in ``out_fmt``; a copy when the two formats are equal.
    """
    raise NotImplementedError("write box_convert: the library's version is 6 lines of code")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box.

    A box with ``x2 < x1`` or ``y2 < y1`` has area 0 (it is read as an empty box,
    :func:`order_corners`), never a negative number.

    Args:
        boxes: (N, 4) xyxy boxes, finite.

    Returns:
        (N,) areas >= 0; float16/bfloat16 are computed in float32 and small integer
        types in int32 so that areas cannot overflow (as torchvision).

    Raises:
        ValueError: ``boxes`` is not (N, 4) (also an ``IndexError``, as torchvision's),
            or has a NaN or inf coordinate.
    """
    raise NotImplementedError("write box_area: the library's version is 1 lines of code")


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union.

    IoU(A, B) = |A ∩ B| / |A ∪ B|; we define it as 0 where |A ∪ B| = 0 (two
    zero-area boxes), where torchvision returns NaN. Inverted boxes are empty
    (:func:`order_corners`).

    Args:
        boxes1: (N, 4) xyxy boxes, finite.
        boxes2: (M, 4) xyxy boxes, finite.

    Returns:
        (N, M) IoU in [0, 1] (float; integer inputs give float32).

    Raises:
        ValueError: a shape other than (N, 4) (also an ``IndexError``, as
            torchvision's), or a NaN or inf coordinate.
    """
    raise NotImplementedError("write box_iou: the library's version is 2 lines of code")


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU, [giou] Eq. in Alg. 1.

    GIoU = IoU - |C \\ (A ∪ B)| / |C|, with C the smallest box enclosing A and B.
    The penalty is 0 where |C| = 0 (torchvision: NaN).

    Args:
        boxes1: (N, 4) xyxy boxes.
        boxes2: (M, 4) xyxy boxes.

    Returns:
        (N, M) GIoU in [-1, 1].
    """
    raise NotImplementedError("write generalized_box_iou: the library's version is 6 lines of code")
