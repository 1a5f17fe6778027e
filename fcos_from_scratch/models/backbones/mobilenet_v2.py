"""MobileNetV2 ([mobilenetv2] Sandler et al. 2018), module for module torchvision's.

The building block is the *inverted residual with linear bottleneck*
([mobilenetv2] Sec. 3.3, Table 1): a thin tensor of c channels is expanded by a
factor t with a 1×1 conv + ReLU6, filtered by a 3×3 depthwise conv + ReLU6, then
projected back to c' channels by a 1×1 conv with *no* non-linearity (a ReLU on a
low-dimensional tensor would destroy information, Sec. 3.2). The shortcut joins the
thin ends, and only when stride is 1 and c = c'.

Network ([mobilenetv2] Table 2), rows (t, c, n, s): expansion t, output channels c,
n repeats, the first with stride s; preceded by a 3×3 stride-2 conv to 32 channels
and followed by a 1×1 conv to 1280 channels::

    (1, 16, 1, 1) (6, 24, 2, 2) (6, 32, 3, 2) (6, 64, 4, 2)
    (6, 96, 3, 1) (6, 160, 3, 2) (6, 320, 1, 1)

As a trunk, each C_i is the output of the *last* block at its stride: C2 =
features[3] (24 channels, stride 4), C3 = features[6] (32, stride 8), C4 =
features[13] (96, stride 16), C5 = features[18], the final 1×1 conv (1280,
stride 32). Module names
and order are torchvision's, so its ImageNet checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List

import torch
from torch import nn

from .trunk import FEATURE_STRIDE, TrunkLayout

__all__ = ["make_divisible", "ConvBNReLU6", "InvertedResidual", "MobileNetV2", "mobilenet_v2"]

# (t, c, n, s) rows of [mobilenetv2] Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, losing at most 10 %.

    The TensorFlow reference's rule, kept by torchvision, for width multipliers.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU6; children named 0, 1, 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """Expand 1×1 (t×) -> depthwise 3×3 -> linear project 1×1 ([mobilenetv2] Table 1).

    Args:
        in_channels: c, channels of the thin input.
        out_channels: c', channels of the thin output.
        stride: 1 or 2, applied by the depthwise conv.
        expand_ratio: t; with t = 1 the expansion conv is left out.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))  # expansion
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # linear bottleneck: no ReLU
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c, H, W) -> (B, c', H/stride, W/stride)."""
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """ImageNet MobileNetV2 classifier with torchvision's module names.

    Args:
        num_classes: outputs of the final linear layer.
        width_mult: α, scales every layer's channels ([mobilenetv2] Sec. 6.1);
            the last conv is never made narrower than 1280.
        dropout: dropout probability before the classifier (torchvision: 0.2).
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        in_channels = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: List[nn.Module] = [ConvBNReLU6(3, in_channels, stride=2)]
        strides = [2]  # cumulative stride after each entry of `features`
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                features.append(InvertedResidual(in_channels, out_channels, stride, t))
                strides.append(strides[-1] * stride)
                in_channels = out_channels
        features.append(ConvBNReLU6(in_channels, self.last_channel, kernel_size=1))
        strides.append(strides[-1])
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes)
        )
        self.feature_strides = strides
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's choices: He (fan_out) convs, identity BatchNorm, N(0, 0.01) fc.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits: (B, 3, H, W) ImageNet-normalised -> (B, num_classes)."""
        x = self.features(images)  # (B, 1280, H/32, W/32)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)  # (B, 1280)
        return self.classifier(x)  # (B, num_classes)

    def trunk_layout(self) -> TrunkLayout:
        """C2..C5 = the last feature of stride 4/8/16/32; stages split at strided blocks."""
        last_at = {stride: i for i, stride in enumerate(self.feature_strides)}
        taps = {name: last_at[stride] for name, stride in FEATURE_STRIDE.items()}
        c5 = taps["C5"]
        # torchvision's stage starts: the stem, every strided block, and the last conv.
        strides = self.feature_strides
        starts = [0] + [i for i in range(1, c5) if strides[i] > strides[i - 1]]
        starts = sorted(set(starts + [c5]))
        bounds = starts + [c5 + 1]
        groups = [[str(i) for i in range(a, b)] for a, b in zip(bounds[:-1], bounds[1:])]
        return TrunkLayout(
            modules=OrderedDict((str(i), self.features[i]) for i in range(c5 + 1)),
            return_layers={str(index): name for name, index in taps.items()},
            channels={name: self.features[index].out_channels for name, index in taps.items()},
            stage_groups=groups,
        )


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 1.0: 3.5 M parameters ([mobilenetv2] Table 4)."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult)
