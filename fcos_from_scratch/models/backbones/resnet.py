"""ResNet-18/34/50 ([resnet] He et al. 2016), module for module torchvision's.

Residual learning ([resnet] Sec. 3.1, Eq. (1)): a block computes y = F(x) + x, so
it only has to learn the residual F; when the shapes differ the shortcut is a
strided 1×1 convolution plus BatchNorm (option B, [resnet] Sec. 3.3).

Layout ([resnet] Table 1), for a 224×224 input:

    conv1  7×7, 64, stride 2          -> 112×112   (stride 2)
    maxpool 3×3, stride 2             ->  56×56    (stride 4)
    layer1 blocks, 64 wide            ->  56×56    (stride 4)  C2
    layer2 blocks, 128 wide, stride 2 ->  28×28    (stride 8)  C3
    layer3 blocks, 256 wide, stride 2 ->  14×14    (stride 16) C4
    layer4 blocks, 512 wide, stride 2 ->   7×7     (stride 32) C5
    global average pool, fc 1000

ResNet-18/34 use the two-3×3 :class:`BasicBlock`; ResNet-50 the 1×1-3×3-1×1
:class:`Bottleneck` with 4× wider output. As in torchvision (and Caffe2's
"ResNet v1.5"), the bottleneck downsamples in its 3×3 conv, not the first 1×1.

Module names, registration order and therefore the state dict are torchvision's,
so ``model.load_state_dict(torch.load("resnet18-f37072fd.pth"), strict=True)``
works; tests pin keys, shapes and outputs against torchvision 0.29.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Type, Union

import torch
from torch import nn

from .trunk import TrunkLayout

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias (the BatchNorm after it has one)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution, no bias."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions plus a shortcut ([resnet] Fig. 2 left / Fig. 5 left)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1,
                 downsample: nn.Module = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, width, H/stride, W/stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)  # [resnet] Eq. (1): y = F(x) + x


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand ×4, plus a shortcut ([resnet] Fig. 5 right)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1,
                 downsample: nn.Module = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, 4 * width, H/stride, W/stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)  # [resnet] Eq. (1)


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Module):
    """ImageNet ResNet classifier with torchvision's module names.

    Args:
        block: BasicBlock (ResNet-18/34) or Bottleneck (ResNet-50).
        blocks_per_stage: blocks in layer1..layer4, e.g. [2, 2, 2, 2] for ResNet-18.
        num_classes: outputs of the final fc layer.
    """

    def __init__(self, block: Block, blocks_per_stage: List[int], num_classes: int = 1000) -> None:
        super().__init__()
        if len(blocks_per_stage) != 4 or min(blocks_per_stage) < 1:
            raise ValueError(f"blocks_per_stage must be 4 positive ints, got {blocks_per_stage}")
        self.block = block
        self.in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(64, blocks_per_stage[0], stride=1)
        self.layer2 = self._make_stage(128, blocks_per_stage[1], stride=2)
        self.layer3 = self._make_stage(256, blocks_per_stage[2], stride=2)
        self.layer4 = self._make_stage(512, blocks_per_stage[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._init_weights()

    def _make_stage(self, width: int, num_blocks: int, stride: int) -> nn.Sequential:
        out_channels = width * self.block.expansion
        downsample = None
        if stride != 1 or self.in_channels != out_channels:
            # Projection shortcut, [resnet] Sec. 3.3 option (B).
            downsample = nn.Sequential(
                conv1x1(self.in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
            )
        blocks = [self.block(self.in_channels, width, stride, downsample)]
        self.in_channels = out_channels
        blocks += [self.block(out_channels, width) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        # He initialisation for convolutions ([resnet] Sec. 3.4, torchvision's fan_out
        # variant); BatchNorm starts as the identity; fc keeps PyTorch's default.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits.

        Args:
            images: (B, 3, H, W) float, ImageNet-normalised.

        Returns:
            (B, num_classes) logits.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # (B, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512 * e, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512 * e)
        return self.fc(x)  # (B, num_classes)

    def trunk_layout(self) -> TrunkLayout:
        """C2, C3, C4, C5 = outputs of layer1..layer4 (strides 4, 8, 16, 32).

        As torchvision's ``returned_layers=[1, 2, 3, 4]``; C2 is the stride-4
        output of layer1 (after the stem's max-pool), used by [faster-rcnn] with
        an FPN ([fpn] Sec. 4.2).
        """
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        expansion = self.block.expansion
        return TrunkLayout(
            modules=OrderedDict((name, getattr(self, name)) for name in names),
            return_layers={"layer1": "C2", "layer2": "C3", "layer3": "C4", "layer4": "C5"},
            channels={"C2": 64 * expansion, "C3": 128 * expansion, "C4": 256 * expansion,
                      "C5": 512 * expansion},
            # torchvision's trainable_layers order: conv1 (+bn1), layer1, ..., layer4.
            stage_groups=[["conv1", "bn1", "relu", "maxpool"], ["layer1"], ["layer2"],
                          ["layer3"], ["layer4"]],
        )


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18: BasicBlock ×[2, 2, 2, 2], 11.7 M parameters ([resnet] Table 1)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet-34: BasicBlock ×[3, 4, 6, 3], 21.8 M parameters ([resnet] Table 1)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50: Bottleneck ×[3, 4, 6, 3], 25.6 M parameters ([resnet] Table 1)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)
