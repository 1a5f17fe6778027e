"""A tiny plain conv trunk for training a detector from scratch on a CPU.

The ImageNet backbones (``backbones/``) are built for 224-px photos and GPUs; the
embedded ``digits`` data (128-320 px images, one-colour glyphs) needs far less. This
trunk is five stages of (3x3 conv stride 2, BN, ReLU) + (3x3 conv, BN, ReLU), VGG-
style, returning C3, C4, C5 (strides 8, 16, 32) with the same interface as
``backbones.Trunk`` (``out_channels``, ``strides``, an OrderedDict output).
It is trained from scratch, so its BatchNorm layers are ordinary (trainable) ones.
"""

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

# Stem (stride 2), stage at stride 4, then C3, C4, C5: about 0.4 M parameters.
TINY_WIDTHS = (16, 32, 64, 128, 192)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyTrunk(nn.Module):
    """Five stride-2 stages; returns the last three as C3, C4, C5.

    Args:
        widths: channels of the 5 stages (strides 2, 4, 8, 16, 32).

    Attributes:
        out_channels: [C3, C4, C5] channel counts (``widths[2:]``).
        strides: [8, 16, 32].
    """

    def __init__(self, widths: Sequence[int] = TINY_WIDTHS) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) != 5 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be 5 positive channel counts, got {widths}")
        stages = []
        previous = 3
        for index, width in enumerate(widths):
            block = [conv_bn_relu(previous, width, stride=2)]
            if index > 0:  # the stem is a single conv
                block.append(conv_bn_relu(width, width))
            stages.append(nn.Sequential(*block))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = widths[2:]
        self.strides = [8, 16, 32]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Args: images (B, 3, H, W). Returns: {"C3", "C4", "C5"} at strides 8, 16, 32."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {tuple(images.shape)}")
        features = []
        x = images
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return OrderedDict(zip(("C3", "C4", "C5"), features[2:]))
