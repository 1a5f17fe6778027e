"""A tiny plain conv trunk for training a detector from scratch on a CPU.

The ImageNet backbones (``backbones/``) are built for 224-px photos and GPUs; the
embedded ``digits`` data (128-320 px images, one-colour glyphs) needs far less. This
trunk is five stages of (3x3 conv stride 2, BN, ReLU) + (3x3 conv, BN, ReLU), VGG-
style (the stem is the first conv alone). Stage i (0-based) ends at stride 2^(i+1),
so C2..C5 are the outputs of stages 1..4; it returns C3, C4, C5 by default, or any
subset of C2..C5, with the same interface as ``backbones.Trunk`` (``feature_names``,
``out_channels``, ``strides``, an OrderedDict output). Stages after the coarsest
requested feature are not built. It is trained from scratch, so its BatchNorm
layers are ordinary (trainable) ones.
"""

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from .trunk import ALL_FEATURE_NAMES, FEATURE_NAMES, FEATURE_STRIDE, check_feature_names

# Stem (stride 2), then C2, C3, C4, C5 (strides 4..32): about 0.4 M parameters.
TINY_WIDTHS = (16, 32, 64, 128, 192)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyTrunk(nn.Module):
    """Five stride-2 stages; returns the requested ones of C2..C5 (stages 1..4).

    Args:
        widths: channels of the 5 stages (strides 2, 4, 8, 16, 32).
        feature_names: which of "C2", "C3", "C4", "C5" to return (default C3..C5).

    Attributes:
        feature_names: the returned names, finest first.
        out_channels: their channel counts (``widths[2:]`` by default).
        strides: their strides ([8, 16, 32] by default).
    """

    def __init__(self, widths: Sequence[int] = TINY_WIDTHS,
                 feature_names: Sequence[str] = FEATURE_NAMES) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) != 5 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be 5 positive channel counts, got {widths}")
        self.feature_names = check_feature_names(feature_names)
        # C_i is the output of stage i - 1 (stage 0 is the stride-2 stem).
        self.stage_of = {name: ALL_FEATURE_NAMES.index(name) + 1 for name in self.feature_names}
        num_stages = max(self.stage_of.values()) + 1
        stages = []
        previous = 3
        for index, width in enumerate(widths[:num_stages]):
            block = [conv_bn_relu(previous, width, stride=2)]
            if index > 0:  # the stem is a single conv
                block.append(conv_bn_relu(width, width))
            stages.append(nn.Sequential(*block))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = [widths[self.stage_of[name]] for name in self.feature_names]
        self.strides = [FEATURE_STRIDE[name] for name in self.feature_names]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Args: images (B, 3, H, W). Returns: {name: (B, C, H/s, W/s)}, finest first."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {tuple(images.shape)}")
        outputs = []
        x = images
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return OrderedDict((name, outputs[self.stage_of[name]]) for name in self.feature_names)
