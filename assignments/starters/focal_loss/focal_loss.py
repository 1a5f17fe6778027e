"""Focal loss and the prior bias -- write `sigmoid_focal_loss`, `prior_bias`.

Starter generated from the library by `python -m assignments start focal_loss`.
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


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
) -> torch.Tensor:
    """Sigmoid focal loss, [focal] Eq. (5): FL(p_t) = -α_t (1 - p_t)^γ log(p_t).

    p = sigmoid(x), p_t = p if t = 1 else 1 - p, α_t = α if t = 1 else 1 - α
    (``alpha = -1`` turns the α weighting off, as torchvision). Soft targets in
    [0, 1] are allowed: p_t and α_t interpolate linearly in t. The cross-entropy
    -log(p_t) is computed from the logits in the stable form
    max(x, 0) - x t + log(1 + exp(-|x|)) by torch's own
    ``binary_cross_entropy_with_logits``, so with γ = 0 and ``alpha = -1`` the loss
    *is* torch's BCE, bit for bit, and with γ >= 0 and α in [0, 1] it is <= it.

    Args:
        inputs: (...) logits, any shape.
        targets: (...) targets in [0, 1], same shape as ``inputs``.
        alpha: α in [0, 1], weight of the positive class ([focal] Sec. 3: 0.25),
            or -1 for no weighting.
        gamma: γ, focusing parameter ([focal] Sec. 3: 2).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        Loss with the shape of ``inputs`` for ``"none"``, else a scalar.
    """
    raise NotImplementedError("write sigmoid_focal_loss: the library's version is 24 lines of code")


def prior_bias(prior_prob: float) -> float:
    """``b = -log((1 - pi) / pi)``, so that ``sigmoid(b) = pi`` ([focal] Sec. 3.3)."""
    raise NotImplementedError("write prior_bias: the library's version is 3 lines of code")
