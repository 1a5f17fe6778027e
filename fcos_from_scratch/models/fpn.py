"""Feature Pyramid Network: trunk features C_i -> pyramid levels P_i, all one width.

[fpn] Sec. 3: a 1x1 *lateral* conv brings every C_i to ``out_channels``; a
*top-down* pass adds to each lateral the coarser merged map, upsampled 2x by
nearest neighbour; a 3x3 conv on each merged map gives P_i (it smooths the
aliasing of the upsampling):

    M_top = lateral(C_top),   M_i = lateral(C_i) + up2(M_{i+1}),   P_i = conv3x3(M_i)

    C5 --1x1--> M5 ---------------3x3--> P5 --extra rule--> P6 (, P7, ...)
                 | up x2
    C4 --1x1--> (+) = M4 ---------3x3--> P4
                 | up x2
    C3 --1x1--> (+) = M3 ---------3x3--> P3        (and C2 -> P2 when given)

Coarser levels beyond the trunk come from one *extra-level rule*
(``extra_source``):

* ``"p5"``: P6 = conv3x3/2(P5), P7 = conv3x3/2(ReLU(P6)) ([fcos] Sec. 3.2,
  [fcos-light], [fcos-code]; torchvision's ``LastLevelP6P7`` when its input and
  output widths agree).
* ``"c5"``: the same convs, but P6 from C5 ([focal] Sec. 4, RetinaNet).
* ``"maxpool"``: P6 = ``max_pool2d(P5, kernel 1, stride 2)``, i.e. every second
  pixel of P5, no parameters; exactly one extra level ([fpn] Sec. 4.1, used for
  the largest RPN anchors of [faster-rcnn]; torchvision's ``LastLevelMaxPool``).
* ``"none"``: no extra level.

With ``norm`` ("bn" or "gn") every lateral and output conv is followed by that
normalisation and loses its bias (torchvision's ``norm_layer`` option; its v2
Faster R-CNN uses BatchNorm). The extra convs are never normalised, as in
torchvision. Initialisation as torchvision: kaiming_uniform(a=1) conv weights,
zero biases, identity norms.
"""

from collections import OrderedDict
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EXTRA_SOURCES", "NORMS", "GN_GROUPS", "extra_levels", "FPN"]

EXTRA_SOURCES = ("p5", "c5", "maxpool", "none")
NORMS = (None, "bn", "gn")
GN_GROUPS = 32  # [gn] Sec. 3.1 default, as detectron2's GN FPN


def extra_levels(extra_source: str, num_inputs: int, num_levels: Optional[int]) -> int:
    """How many levels the rule adds above the coarsest input.

    Args:
        extra_source: one of :data:`EXTRA_SOURCES`.
        num_inputs: J, the number of trunk features.
        num_levels: the requested pyramid size, or None for the rule's default:
            J + 2 for "p5"/"c5" (P6, P7 as [focal]), J + 1 for "maxpool", J for "none".

    Returns:
        num_levels - J, checked against the rule ("maxpool" adds exactly one level,
        "none" none, the conv rules any number >= 0).
    """
    if extra_source not in EXTRA_SOURCES:
        raise ValueError(f"extra_source must be one of {EXTRA_SOURCES}, got {extra_source!r}")
    default = {"p5": 2, "c5": 2, "maxpool": 1, "none": 0}[extra_source]
    if num_levels is None:
        return default
    extra = int(num_levels) - num_inputs
    if extra_source in ("maxpool", "none") and extra != default:
        raise ValueError(
            f"num_levels must be {num_inputs + default} (the {num_inputs} inputs + {default}) "
            f"with extra_source={extra_source!r}, got {num_levels}"
        )
    if extra < 0:
        raise ValueError(f"num_levels must be >= the {num_inputs} input features, got {num_levels}")
    return extra


def conv_norm(in_channels: int, out_channels: int, kernel_size: int,
              norm: Optional[str]) -> nn.Module:
    """A conv ("same" padding), followed by BatchNorm/GroupNorm when ``norm`` is set.

    Without a norm this is a plain ``nn.Conv2d`` (state-dict keys ``weight``,
    ``bias``); with one, a Sequential ``conv`` (no bias: the norm has one) + ``norm``.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                     bias=norm is None)
    if norm is None:
        return conv
    layer = nn.BatchNorm2d(out_channels) if norm == "bn" else nn.GroupNorm(GN_GROUPS, out_channels)
    return nn.Sequential(OrderedDict(conv=conv, norm=layer))


class FPN(nn.Module):
    """Top-down feature pyramid with an extra-level rule and an optional norm.

    Args:
        in_channels: channels of the J trunk features, finest first (e.g. C3, C4, C5
            or C2..C5).
        out_channels: width of every pyramid level ([fpn] Sec. 3: 256).
        num_levels: pyramid levels to return, J + the extra levels; None for the
            rule's default (see :func:`extra_levels`; 5 for C3..C5 with "p5").
        extra_source: the extra-level rule, one of "p5" (default, [fcos]), "c5"
            ([focal]), "maxpool" ([faster-rcnn] + [fpn]) or "none".
        norm: None (default), "bn" (BatchNorm2d) or "gn" (GroupNorm, 32 groups)
            after every lateral and output conv.

    Attributes:
        out_channels: int, the width of every output level.
        lateral, output: J modules each, finest first; ``extra``: the extra convs.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        num_levels: Optional[int] = None,
        extra_source: str = "p5",
        norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        in_channels = list(in_channels)
        if not in_channels or any(int(c) < 1 for c in in_channels):
            raise ValueError(f"in_channels must be positive channel counts, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if norm == "gn" and out_channels % GN_GROUPS:
            raise ValueError(
                f"norm='gn' needs out_channels divisible by {GN_GROUPS} groups, got {out_channels}"
            )
        num_extra = extra_levels(extra_source, len(in_channels), num_levels)
        self.out_channels = out_channels
        self.extra_source = extra_source
        self.num_levels = len(in_channels) + num_extra
        self.lateral = nn.ModuleList(conv_norm(c, out_channels, 1, norm) for c in in_channels)
        self.output = nn.ModuleList(
            conv_norm(out_channels, out_channels, 3, norm) for _ in in_channels
        )
        self.extra = nn.ModuleList()
        if extra_source in ("p5", "c5"):
            first = in_channels[-1] if extra_source == "c5" else out_channels
            self.extra.extend(
                nn.Conv2d(first if i == 0 else out_channels, out_channels, 3, stride=2, padding=1)
                for i in range(num_extra)
            )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # torchvision's FPN initialisation
                nn.init.kaiming_uniform_(module.weight, a=1)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Build the pyramid.

        Args:
            features: J tensors (B, C_j, H_j, W_j), finest first, each level half the
                size of the previous (rounded up); a dict's values are taken in order.

        Returns:
            num_levels tensors (B, out_channels, H_l, W_l), finest first; the extra
            levels have ``H_l = ceil(H_{l-1} / 2)``.
        """
        features = list(features.values()) if isinstance(features, dict) else list(features)
        if len(features) != len(self.lateral):
            raise ValueError(f"expected {len(self.lateral)} feature maps, got {len(features)}")
        merged = self.lateral[-1](features[-1])  # M5: (B, C, H5, W5)
        outputs = [self.output[-1](merged)]
        for index in range(len(features) - 2, -1, -1):  # top-down: C4, then C3 (, C2)
            lateral = self.lateral[index](features[index])  # (B, C, H_i, W_i)
            upsampled = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral + upsampled  # [fpn] Sec. 3: element-wise addition
            outputs.insert(0, self.output[index](merged))
        if self.extra_source == "maxpool":
            # A 1x1 "pool" with stride 2 keeps every second pixel: (B, C, ceil(H/2), ceil(W/2)).
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
        previous = features[-1] if self.extra_source == "c5" else outputs[-1]
        for index, conv in enumerate(self.extra):
            previous = conv(previous if index == 0 else F.relu(previous))  # P6, then P7
            outputs.append(previous)
        return outputs
