"""Res2NetLite ([refinedetlite] Sec. 3.2, Table 1): a CPU-first detection backbone.

Two ideas from [refinedetlite] Sec. 3.2 shape the network:

* **wide early features, large receptive fields** (detection needs them,
  classification does not): the stride-16 feature is 8c channels wide (576 for
  c = 72), and every stage is built of Res2Blocks ([res2net] Sec. 3.1), whose
  cascaded 3×3 convolutions give one block several receptive fields;
* **fast on a CPU, not just few FLOPs** ([shufflenetv2] guidelines): Res2Blocks
  keep input width == output width (least memory traffic), group convolutions
  use at most g = 2 groups (depth-wise convs are slow on CPUs), no SE or
  inception fragments.

Layout ([refinedetlite] Table 1), c = ``width``; sizes for a 320×320 input:

    input BN            BatchNorm over the 3 colour channels       320×320
    stage0              conv 3×3/2 (32) + BN + ReLU, max-pool 3×3/2   80×80    stride 4
    stage1              Bottleneck/2 -> 4c,  3 × Res2Block(4c)       40×40    stride 8
    stage2              Bottleneck/2 -> 8c,  7 × Res2Block(8c)       20×20    stride 16  -> ARM 1
    stage3              Bottleneck/2 -> 16c, 3 × Res2Block(16c)      10×10    stride 32  -> ARM 2
    extra1              Bottleneck/2 -> 512                           5×5     stride 64  -> ARM 3
    extra2              Bottleneck/2 -> 512                           3×3     stride ≈107 -> ARM 4
    classifier (stage4) global average pool + 1×1 conv -> num_classes (224 input: 7×7 pool)

The paper states 576 and 1152 channels for the stage-2 and stage-3 features of
Res2NetLite72 and that the width doubles per stage, so stages 1-3 are 4c, 8c and
16c wide (derived: 8 × 72 = 576, 16 × 72 = 1152). Stage 0 is 32 wide whatever c.

What the paper only draws (its Fig. 2), chosen here:

* **Res2Block** ([res2net] Fig. 2, Eq. (1)): 1×1 conv C -> C/4, split into
  ``scale`` = s = 4 groups x_1..x_s of C/(4s) channels; y_1 = x_1,
  y_2 = K_2(x_2), y_i = K_i(x_i + y_{i-1}) for i > 2, each K_i a 3×3 conv with
  ``groups`` = 2; concatenate, 1×1 conv back to C, add the input. The inner width
  C/4 is ResNet's bottleneck ratio ([resnet] Fig. 5) and s = 4 is Res2Net's
  default scale.
* **Bottleneck** (downsampling, and the two extra modules): 1×1 conv to
  C_out/4, 3×3 conv with stride 2 and ``groups`` = 2, 1×1 conv to C_out; the
  shortcut is a strided 1×1 conv + BN ([resnet] option B, Sec. 3.3). The extras
  downsample with padding 1, so 10 -> 5 -> 3 as in [refinedet]'s extra layers.
* **ResBlock** (``block="res"``, the "classical ResBlock" of the paper's Table 3
  baseline): the same 1×1 -> 3×3 (``groups``) -> 1×1 bottleneck without the split,
  i.e. the 3×3 sees all C/4 channels at once. It costs more than a Res2Block
  (one 3×3 over C/4 channels against s - 1 of them over C/(4s)), as the paper says.
* every conv is conv -> BN -> ReLU, except the last BN of a residual branch, whose
  output is added to the shortcut before the ReLU ([resnet] v1); that BN starts at
  γ = 0, so every residual block starts as the identity, which helps training from
  scratch ("zero γ", [bag-of-tricks] Sec. 3.1).
* "Input BN" replaces mean/std normalisation: a BatchNorm2d(3) with affine
  parameters, learned with the network.

Complexity (:func:`fcos_from_scratch.models.complexity.count_macs`, pinned by
``tests/models/test_models_res2netlite.py``): Res2NetLite72 with its two extras on
a 320×320 image costs 1.520 GMACs (multiply-adds) and has 6.98 M parameters; with
``block="res"`` 1.915 GMACs. Fewer MACs are not less time on a CPU: the Res2Block's
s - 1 small sequential convs are the "fragmentation" [shufflenetv2] warns about, and
in a quick single-thread check (loaded machine) the ResBlock variant ran faster. The
latency benchmark measures it properly. Width 24 with extras (128, 128) costs
0.2 GMACs.

Example::

    backbone = Res2NetLite(72)
    features = backbone(torch.zeros(1, 3, 320, 320))
    [tuple(f.shape[1:]) for f in features]
    # [(576, 20, 20), (1152, 10, 10), (512, 5, 5), (512, 3, 3)]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Sequence, Tuple

import torch
from torch import nn

from .trunk import TrunkLayout

__all__ = ["BLOCKS", "Res2Block", "ResBlock", "DownBottleneck", "Res2NetLite", "res2netlite72"]

STAGE0_WIDTH = 32  # [refinedetlite] Sec. 3.2: "expands the feature dimension to 32"
BLOCKS_PER_STAGE = (3, 7, 3)  # [refinedetlite] Table 1: Res2Blocks after each Bottleneck
STAGE_MULTIPLIERS = (4, 8, 16)  # stage widths 4c, 8c, 16c (derived from 576 / 1152 at c = 72)
BOTTLENECK_RATIO = 4  # inner width = C / 4, ResNet's bottleneck ([resnet] Fig. 5)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
            groups: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BN (-> ReLU); children conv, bn[, relu]."""
    layers = OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                       padding=kernel_size // 2, groups=groups, bias=False),
        bn=nn.BatchNorm2d(out_channels),
    )
    if relu:
        layers["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


class Res2Block(nn.Module):
    """Res2Net's hierarchical residual block ([res2net] Sec. 3.1, Eq. (1)), equal in/out width.

    y_1 = x_1,  y_2 = K_2(x_2),  y_i = K_i(x_i + y_{i-1}) for 2 < i <= s

    Args:
        channels: C, input and output width ([refinedetlite]: equal, least memory traffic).
        scale: s, the number of splits of the C/4 inner channels.
        groups: groups of each 3×3 conv K_i (g <= 2 in [refinedetlite]).
    """

    def __init__(self, channels: int, scale: int = 4, groups: int = 2) -> None:
        super().__init__()
        inner = channels // BOTTLENECK_RATIO
        self.split_width = inner // scale
        self.reduce = conv_bn(channels, inner, 1)
        self.convs = nn.ModuleList(
            conv_bn(self.split_width, self.split_width, 3, groups=groups) for _ in range(scale - 1)
        )
        self.expand = conv_bn(inner, channels, 1, relu=False)
        nn.init.zeros_(self.expand.bn.weight)  # zero γ: the block starts as relu(x) ([bag-of-tricks])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        splits = torch.split(self.reduce(x), self.split_width, dim=1)  # s × (B, C/(4s), H, W)
        outputs = [splits[0]]  # y_1 = x_1: the identity split
        previous = None
        for conv, split in zip(self.convs, splits[1:]):
            previous = conv(split if previous is None else split + previous)  # y_i
            outputs.append(previous)
        out = self.expand(torch.cat(outputs, dim=1))  # (B, C, H, W)
        return self.relu(out + x)


class ResBlock(nn.Module):
    """The classical bottleneck ResBlock ([resnet] Fig. 5 right), equal in/out width.

    The Table 3 baseline of [refinedetlite]: Res2Block without the split, so its one
    3×3 conv (``groups`` as in the Res2Block) sees all C/4 inner channels.
    """

    def __init__(self, channels: int, scale: int = 4, groups: int = 2) -> None:
        super().__init__()
        del scale  # same signature as Res2Block; a ResBlock has one split
        inner = channels // BOTTLENECK_RATIO
        self.reduce = conv_bn(channels, inner, 1)
        self.conv = conv_bn(inner, inner, 3, groups=groups)
        self.expand = conv_bn(inner, channels, 1, relu=False)
        nn.init.zeros_(self.expand.bn.weight)  # zero γ: the block starts as relu(x) ([bag-of-tricks])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.relu(self.expand(self.conv(self.reduce(x))) + x)


BLOCKS = {"res2": Res2Block, "res": ResBlock}


class DownBottleneck(nn.Module):
    """Downsampling Bottleneck ([refinedetlite] Fig. 2a as chosen here): stride 2, new width.

    1×1 (C_in -> C_out/4), 3×3 stride 2 (``groups``), 1×1 (-> C_out), plus a strided
    1×1 conv + BN shortcut ([resnet] option B). Output size ceil(H/2) × ceil(W/2).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 2) -> None:
        super().__init__()
        inner = out_channels // BOTTLENECK_RATIO
        self.reduce = conv_bn(in_channels, inner, 1)
        self.conv = conv_bn(inner, inner, 3, stride=2, groups=groups)
        self.expand = conv_bn(inner, out_channels, 1, relu=False)
        nn.init.zeros_(self.expand.bn.weight)  # zero γ: starts as relu(shortcut(x))
        self.shortcut = conv_bn(in_channels, out_channels, 1, stride=2, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))."""
        return self.relu(self.expand(self.conv(self.reduce(x))) + self.shortcut(x))


def _check_args(width, block, scale, groups, extra_channels, num_classes, first_source_stage) -> None:
    if first_source_stage not in (1, 2, 3):
        raise ValueError(f"first_source_stage must be 1, 2 or 3 (stride 8, 16 or 32; [refinedetlite]: 2), "
                         f"got {first_source_stage!r}")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    if not isinstance(groups, int) or groups not in (1, 2):
        raise ValueError(f"groups must be 1 or 2 ([refinedetlite]: g <= 2), got {groups!r}")
    if not isinstance(scale, int) or scale < 2:
        raise ValueError(f"scale must be an int >= 2 (Res2Net splits), got {scale!r}")
    # The narrowest split, stage 1: 4c / 4 / s channels, divisible by the groups.
    if not isinstance(width, int) or width <= 0 or width % (scale * groups) != 0:
        raise ValueError(
            f"width must be a positive int divisible by scale * groups = {scale * groups} "
            f"(stage 1 splits 4c/4 = c channels into {scale} groups of {groups}-group "
            f"convs), got {width!r}"
        )
    if any(not isinstance(c, int) or c <= 0 or c % (BOTTLENECK_RATIO * groups) != 0
           for c in extra_channels):
        raise ValueError(
            f"extra_channels must be positive ints divisible by {BOTTLENECK_RATIO * groups}, "
            f"got {tuple(extra_channels)!r}"
        )
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0 (0: no classifier), got {num_classes!r}")


class Res2NetLite(nn.Module):
    """Res2NetLite-c ([refinedetlite] Table 1): the ARM source features, or ImageNet logits.

    Args:
        width: c; stages 1-3 are 4c, 8c, 16c wide (c = 72: Res2NetLite72).
        block: "res2" (Res2Block) or "res" (the classical ResBlock baseline of
            [refinedetlite] Table 3 row (a)); same stages either way.
        scale: s, Res2Block splits ([res2net] default 4).
        groups: groups of every 3×3 conv, 1 or 2 ([refinedetlite]: g <= 2).
        extra_channels: widths of the extra stride-2 Bottlenecks after stage 3
            ([refinedetlite]: (512, 512)); () for a bare classifier.
        num_classes: > 0 adds the stage-4 classifier used by :meth:`classify`.
        first_source_stage: the stage whose output is the first (finest) source:
            2 ([refinedetlite], stride 16); 1 adds the stride-8 stage-1 feature
            (4c channels) for small objects, as the digits presets do (12 px digits
            get no useful anchor at stride 16).

    Attributes:
        out_channels: channels of the features ``forward`` returns,
            (8c, 16c, *extra_channels), e.g. (576, 1152, 512, 512); with
            ``first_source_stage=1``, (4c, 8c, 16c, *extra_channels).
        strides: their nominal strides (16, 32, 64, 128); a 320 input gives
            20, 10, 5, 3 pixels, so the last is ≈107 in fact (ceil rounding).
    """

    def __init__(self, width: int = 72, block: str = "res2", scale: int = 4, groups: int = 2,
                 extra_channels: Sequence[int] = (512, 512), num_classes: int = 0,
                 first_source_stage: int = 2) -> None:
        super().__init__()
        _check_args(width, block, scale, groups, tuple(extra_channels), num_classes, first_source_stage)
        self.width, self.block, self.num_classes = width, block, num_classes
        self.first_source_stage = first_source_stage
        self.input_bn = nn.BatchNorm2d(3)  # "input BN": learned normalisation of the pixels
        self.stage0 = nn.Sequential(OrderedDict(
            conv=conv_bn(3, STAGE0_WIDTH, 3, stride=2),
            pool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ))
        stage_widths = [m * width for m in STAGE_MULTIPLIERS]
        in_width = STAGE0_WIDTH
        for i, (out_width, num_blocks) in enumerate(zip(stage_widths, BLOCKS_PER_STAGE)):
            layers = [DownBottleneck(in_width, out_width, groups)]
            layers += [BLOCKS[block](out_width, scale, groups) for _ in range(num_blocks)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            in_width = out_width
        self.stage_widths = tuple(stage_widths)
        self.extras = nn.ModuleList()
        for out_width in extra_channels:
            self.extras.append(DownBottleneck(in_width, out_width, groups))
            in_width = out_width
        self.out_channels: Tuple[int, ...] = (*stage_widths[first_source_stage - 1:], *extra_channels)
        first_stride = 4 * 2 ** first_source_stage  # stage s has stride 2^(s + 2)
        self.strides: Tuple[int, ...] = tuple(first_stride * 2 ** i for i in range(len(self.out_channels)))
        if num_classes > 0:  # stage 4: global pool (7×7 at 224) + 1×1 conv
            self.classifier = nn.Conv2d(stage_widths[2], num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init ([resnet]); the blocks zeroed their last BN γ themselves.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")

    def forward_stages(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Outputs of stages 1, 2, 3: (B, 4c, H/8, W/8), (B, 8c, H/16, ..), (B, 16c, H/32, ..)."""
        self._check_images(images)
        x = self.stage0(self.input_bn(images))  # (B, 32, H/4, W/4)
        c3 = self.stage1(x)  # (B, 4c, H/8, W/8)
        c4 = self.stage2(c3)  # (B, 8c, H/16, W/16)
        c5 = self.stage3(c4)  # (B, 16c, H/32, W/32)
        return [c3, c4, c5]

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        """The ARM source features ([refinedetlite] Sec. 3.2, Fig. 1).

        Args:
            images: (B, 3, H, W) float, raw pixel scale (the input BN normalises).

        Returns:
            List of ``len(out_channels)`` tensors, finest first: (stage 1
            (B, 4c, H/8, W/8) when ``first_source_stage=1``), stage 2
            (B, 8c, H/16, W/16), stage 3 (B, 16c, H/32, W/32), then one per extra
            Bottleneck, each half the previous size rounded up. For H = W = 320 and
            c = 72: 576×20×20, 1152×10×10, 512×5×5, 512×3×3.
        """
        stages = self.forward_stages(images)
        features = stages[self.first_source_stage - 1:]
        x = stages[-1]
        for extra in self.extras:
            x = extra(x)  # (B, C_extra, ceil(h/2), ceil(w/2))
            features.append(x)
        return features

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Stage 4: ImageNet logits (B, num_classes) of a (B, 3, 224, 224) image batch."""
        if self.num_classes == 0:
            raise ValueError("classify needs a classifier: build Res2NetLite with num_classes > 0")
        c5 = self.forward_stages(images)[-1]  # (B, 16c, 7, 7) at 224
        pooled = nn.functional.adaptive_avg_pool2d(c5, 1)  # (B, 16c, 1, 1): 7×7 pool at 224
        return torch.flatten(self.classifier(pooled), 1)  # (B, num_classes)

    def trunk_layout(self) -> TrunkLayout:
        """C2..C5 = outputs of stage0..stage3 (strides 4..32), for ``build_backbone``."""
        names = ["input_bn", "stage0", "stage1", "stage2", "stage3"]
        features = ("C2", "C3", "C4", "C5")
        channels = (STAGE0_WIDTH,) + self.stage_widths
        return TrunkLayout(
            modules=OrderedDict((name, getattr(self, name)) for name in names),
            return_layers=dict(zip(names[1:], features)),
            channels=dict(zip(features, channels)),
            stage_groups=[["input_bn", "stage0"], ["stage1"], ["stage2"], ["stage3"]],
        )


def res2netlite72(num_classes: int = 1000) -> Res2NetLite:
    """Res2NetLite72 as an ImageNet classifier (no extras), the ``build_backbone`` entry."""
    return Res2NetLite(72, extra_channels=(), num_classes=num_classes)
