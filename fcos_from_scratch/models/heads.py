"""Building blocks of dense prediction heads, shared by every detector.

A dense head runs the same small conv network on every pyramid level and
predicts, for every cell, a few numbers per class and per box. What is common:

* :func:`conv_tower`: ``num_convs`` x (3x3 conv, GroupNorm, ReLU) ([fcos] Fig. 2,
  [focal] Sec. 4.1's RetinaNet subnets);
* :func:`prior_bias`: the classification bias that makes every logit start at the
  prior probability pi ([focal] Sec. 3.3), so the loss of the all-background
  start is small and training is stable;
* :func:`flatten_level` / :func:`concat_levels`: (B, C, H, W) maps of every level
  -> one (B, N, C) tensor, cells row-major and levels finest first, the order of
  :func:`fcos_from_scratch.models.anchors.grid_points` and of the anchors.
"""

import math
from typing import Sequence

import torch
from torch import nn


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with 32 groups ([gn] default), fewer when ``channels`` is not divisible."""
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


def conv_tower(channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, GroupNorm, ReLU), width-preserving."""
    layers = []
    for _ in range(num_convs):
        # In-place ReLU is safe after GroupNorm (its backward needs its input, not its
        # output) and saves one feature-map-sized tensor per layer.
        layers += [nn.Conv2d(channels, channels, 3, padding=1), group_norm(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def prior_bias(prior_prob: float) -> float:
    """``b = -log((1 - pi) / pi)``, so that ``sigmoid(b) = pi`` ([focal] Sec. 3.3)."""
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
    return -math.log((1 - prior_prob) / prior_prob)


def init_normal_(module: nn.Module, std: float = 0.01) -> None:
    """Every conv of ``module``: weights N(0, std), bias 0 ([focal] Sec. 4.1, [fcos] Sec. 4)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def flatten_level(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), cells row-major."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def concat_levels(per_level: Sequence[torch.Tensor]) -> torch.Tensor:
    """L maps (B, C, H_l, W_l) -> (B, N, C) with N = sum H_l * W_l, finest level first."""
    return torch.cat([flatten_level(x) for x in per_level], dim=1)
