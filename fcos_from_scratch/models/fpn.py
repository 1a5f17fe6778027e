"""Feature Pyramid Network: C3..C5 from a trunk -> P3..P7, all with the same width.

[fpn] Sec. 3: a 1x1 *lateral* conv brings every C_i to ``out_channels``; a
*top-down* pass adds to each lateral the coarser merged map, upsampled 2x by
nearest neighbour; a 3x3 conv on each merged map gives P_i (it smooths the
aliasing of the upsampling). [fcos] Sec. 3.2 (after RetinaNet, [focal] Sec. 4)
adds P6 and P7 by stride-2 3x3 convs: P6 from P5 (seed 000; the FCOS code and
torchvision's ``LastLevelP6P7`` when widths agree) or from C5 (RetinaNet), and P7
from ReLU(P6).

    C5 --1x1--> M5 ---------------3x3--> P5 --3x3/2--> P6 --ReLU, 3x3/2--> P7
                 | up x2
    C4 --1x1--> (+) = M4 ---------3x3--> P4
                 | up x2
    C3 --1x1--> (+) = M3 ---------3x3--> P3

Papers:
    [fpn] Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017.
    [focal] Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    [fcos] Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019.
"""

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

EXTRA_SOURCES = ("p5", "c5")


class FPN(nn.Module):
    """Top-down feature pyramid with optional extra stride-2 levels.

    Args:
        in_channels: channels of the J trunk features, finest first (C3, C4, C5).
        out_channels: width of every pyramid level ([fpn]: 256).
        num_levels: pyramid levels to return, >= J; the J - num_levels extra
            levels are stride-2 convs (5 = P3..P7 as [fcos]; 3 = P3..P5 only).
        extra_source: "p5" (seed 000, FCOS code) or "c5" (RetinaNet) feeds P6.

    Attributes:
        out_channels: int, the width of every output level.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        num_levels: int = 5,
        extra_source: str = "p5",
    ) -> None:
        super().__init__()
        in_channels = list(in_channels)
        if not in_channels or any(int(c) < 1 for c in in_channels):
            raise ValueError(f"in_channels must be positive channel counts, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        if num_levels < len(in_channels):
            raise ValueError(
                f"num_levels must be >= the {len(in_channels)} input features, got {num_levels}"
            )
        if extra_source not in EXTRA_SOURCES:
            raise ValueError(f"extra_source must be one of {EXTRA_SOURCES}, got {extra_source!r}")
        self.out_channels = out_channels
        self.extra_source = extra_source
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )
        extra_in = [in_channels[-1] if extra_source == "c5" else out_channels]
        extra_in += [out_channels] * (num_levels - len(in_channels) - 1)
        self.extra = nn.ModuleList(
            nn.Conv2d(c, out_channels, 3, stride=2, padding=1)
            for c in extra_in[: num_levels - len(in_channels)]
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # torchvision's FPN initialisation
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Build the pyramid.

        Args:
            features: J tensors (B, C_j, H_j, W_j), finest first, each level half the
                size of the previous (rounded up).

        Returns:
            num_levels tensors (B, out_channels, H_l, W_l), finest first; the extra
            levels have ``H_l = ceil(H_{l-1} / 2)``.
        """
        features = list(features)
        if len(features) != len(self.lateral):
            raise ValueError(f"expected {len(self.lateral)} feature maps, got {len(features)}")
        merged = self.lateral[-1](features[-1])  # M5: (B, C, H5, W5)
        outputs = [self.output[-1](merged)]
        for index in range(len(features) - 2, -1, -1):  # top-down: C4, then C3
            lateral = self.lateral[index](features[index])  # (B, C, H_i, W_i)
            upsampled = F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            merged = lateral + upsampled
            outputs.insert(0, self.output[index](merged))
        previous = features[-1] if self.extra_source == "c5" else outputs[-1]
        for index, conv in enumerate(self.extra):
            previous = conv(previous if index == 0 else F.relu(previous))  # P6, then P7
            outputs.append(previous)
        return outputs
