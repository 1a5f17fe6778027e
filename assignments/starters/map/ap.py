"""VOC and COCO average precision -- write `voc_ap`, `average_precision`.

Starter generated from the library by `python -m assignments start map`.
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


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a recall/precision curve, as the devkit's ``voc_ap``.

    Args:
        recall, precision: (n,) float64, detections in score order.
        use_07_metric: 11-point interpolation (VOC2007) instead of the area.
    """
    raise NotImplementedError("write voc_ap: the library's version is 13 lines of code")


def average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point interpolated AP of one class at one IoU threshold.

    Args:
        scores: (n,) float detection scores (any order; stably sorted here).
        is_tp: (n,) bool, the detection is a true positive (others are false positives).
        num_gt: number of GT of the class (> 0).
    """
    raise NotImplementedError("write average_precision: the library's version is 6 lines of code")
