"""VoVNet-27-slim ([vovnet] Lee et al. 2019), a light backbone tried by [fcos-light].

DenseNet concatenates every earlier feature map into every later layer; the input
of layer k grows with k, which costs memory traffic (MAC) and GPU time. VoVNet's
*One-Shot Aggregation* (OSA) module ([vovnet] Sec. 3.2, Fig. 2b) chains a few 3×3
conv layers and concatenates *all* their outputs, plus the module input, only
once, at the end; a 1×1 conv then mixes the concatenation down to the output:

    x_0 = input,  x_k = conv3x3_k(x_{k-1})  for k = 1..L
    y   = conv1x1([x_0, x_1, ..., x_L])       # one aggregation per module

Every conv is Conv-BN-ReLU. The network ([vovnet] Table 1; the official
``stigma0617/VoVNet.pytorch`` config ``vovnet27_slim``):

    stem    3×3/2 64, 3×3 64, 3×3/2 128            stride 4
    stage2  OSA: 5 × 3×3 64,  concat 1×1 -> 128      stride 4   C2
    stage3  max-pool 3×3/2, OSA: 5 × 80,  -> 256    stride 8   C3
    stage4  max-pool 3×3/2, OSA: 5 × 96,  -> 384    stride 16  C4
    stage5  max-pool 3×3/2, OSA: 5 × 112, -> 512    stride 32  C5

One OSA module per stage; the max-pools use ``ceil_mode=True`` as in the
official code. There are no official ImageNet weights for V-27-slim in
torchvision format, so module names here are plain (``stage3.block1.layers.0.conv``);
``--pretrained`` accepts checkpoints saved from this module.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from .trunk import TrunkLayout

__all__ = ["ConvBNReLU", "OSAModule", "OSAStage", "VoVNet", "vovnet27_slim"]


class ConvBNReLU(nn.Sequential):
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU; children conv, bn, relu."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1) -> None:
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                           padding=(kernel_size - 1) // 2, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(inplace=True),
        ))


class OSAModule(nn.Module):
    """One-Shot Aggregation ([vovnet] Fig. 2b): L chained 3×3 convs, one concat, 1×1 mix.

    Args:
        in_channels: C_in of the input x_0.
        stage_channels: channels of each 3×3 conv output x_1..x_L.
        out_channels: channels after the 1×1 aggregation conv.
        num_layers: L, the number of 3×3 convs (5 in VoVNet-27/39/57).
        identity: add the input to the output (used by repeated modules of a stage;
            needs ``in_channels == out_channels``).
    """

    def __init__(self, in_channels: int, stage_channels: int, out_channels: int,
                 num_layers: int, identity: bool = False) -> None:
        super().__init__()
        if identity and in_channels != out_channels:
            raise ValueError(
                f"identity needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        self.identity = identity
        widths = [in_channels] + [stage_channels] * num_layers
        self.layers = nn.ModuleList(ConvBNReLU(widths[k], widths[k + 1]) for k in range(num_layers))
        self.concat = ConvBNReLU(sum(widths), out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, out_channels, H, W)."""
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        stacked = torch.cat(outputs, dim=1)  # (B, C_in + L * stage_channels, H, W)
        y = self.concat(stacked)  # (B, out_channels, H, W)
        return y + x if self.identity else y


class OSAStage(nn.Sequential):
    """An optional 3×3/2 max-pool followed by ``num_blocks`` OSA modules."""

    def __init__(self, in_channels: int, stage_channels: int, out_channels: int,
                 num_blocks: int, num_layers: int, downsample: bool) -> None:
        modules = OrderedDict()
        if downsample:
            modules["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        for i in range(num_blocks):
            modules[f"block{i + 1}"] = OSAModule(
                in_channels if i == 0 else out_channels, stage_channels, out_channels,
                num_layers, identity=i > 0,
            )
        super().__init__(modules)


class VoVNet(nn.Module):
    """VoVNet classifier ([vovnet] Table 1).

    Args:
        stage_channels: 3×3 conv width of stages 2..5.
        out_channels: concat (1×1) output width of stages 2..5.
        blocks_per_stage: OSA modules per stage.
        num_layers: 3×3 convs per OSA module.
        num_classes: outputs of the final linear layer.
    """

    def __init__(self, stage_channels: Sequence[int], out_channels: Sequence[int],
                 blocks_per_stage: Sequence[int], num_layers: int, num_classes: int = 1000) -> None:
        super().__init__()
        if not len(stage_channels) == len(out_channels) == len(blocks_per_stage) == 4:
            raise ValueError(
                "stage_channels, out_channels and blocks_per_stage need 4 entries each"
            )
        self.stem = nn.Sequential(
            ConvBNReLU(3, 64, stride=2), ConvBNReLU(64, 64), ConvBNReLU(64, 128, stride=2)
        )
        in_channels = [128] + list(out_channels[:-1])
        for i in range(4):
            self.add_module(f"stage{i + 2}", OSAStage(
                in_channels[i], stage_channels[i], out_channels[i], blocks_per_stage[i],
                num_layers, downsample=i > 0,  # stage2 keeps the stem's stride 4
            ))
        self.stage_out_channels = list(out_channels)
        self.classifier = nn.Linear(out_channels[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The official code: He-normal convs (fan_in), identity BatchNorm, zero fc bias.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits: (B, 3, H, W) -> (B, num_classes)."""
        x = self.stem(images)  # (B, 128, H/4, W/4)
        x = self.stage5(self.stage4(self.stage3(self.stage2(x))))  # (B, 512, H/32, W/32)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)  # (B, 512)
        return self.classifier(x)  # (B, num_classes)

    def trunk_layout(self) -> TrunkLayout:
        """C2, C3, C4, C5 = outputs of stage2..stage5 (strides 4, 8, 16, 32)."""
        names = ["stem", "stage2", "stage3", "stage4", "stage5"]
        features = ("C2", "C3", "C4", "C5")
        return TrunkLayout(
            modules=OrderedDict((name, getattr(self, name)) for name in names),
            return_layers=dict(zip(names[1:], features)),
            channels=dict(zip(features, self.stage_out_channels)),
            stage_groups=[[name] for name in names],
        )


def vovnet27_slim(num_classes: int = 1000) -> VoVNet:
    """VoVNet-27-slim: stages 64/80/96/112 wide, concat 128/256/384/512, 5 layers per OSA."""
    return VoVNet([64, 80, 96, 112], [128, 256, 384, 512], [1, 1, 1, 1], 5, num_classes)
