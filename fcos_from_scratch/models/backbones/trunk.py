"""A classifier turned into a detection trunk that returns C3, C4 and C5.

A detector does not need a classifier's pooling and fully-connected layer; it needs
the feature maps at the end of the stages with strides 8, 16 and 32, named C3, C4,
C5 after their stride 2^3, 2^4, 2^5 ([fpn] Lin et al. 2017, Sec. 3). Each classifier
in this package describes how to cut it with :meth:`trunk_layout`; :class:`Trunk`
keeps only the modules up to C5, runs them in order and taps the three outputs.

The trunk's children keep the classifier's names, so its state-dict keys are the
classifier's minus the classification head (``conv1.weight``, ``layer1.0.bn1.bias``
for ResNet, as in torchvision's detection backbones).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import nn

__all__ = ["FEATURE_NAMES", "FEATURE_STRIDES", "TrunkLayout", "Trunk"]

FEATURE_NAMES = ("C3", "C4", "C5")
FEATURE_STRIDES = (8, 16, 32)  # 2^3, 2^4, 2^5: [fpn] Sec. 3


@dataclass
class TrunkLayout:
    """How to cut a classifier into a trunk.

    Attributes:
        modules: the modules from the input to C5, in execution order, by name.
        return_layers: child name -> feature name ("C3", "C4", "C5"): the output
            of that child is the feature.
        out_channels: channels of C3, C4, C5.
        stage_groups: child names grouped into stages, first (stem) to last;
            ``trainable_layers = k`` trains the last k groups (torchvision's rule).
    """

    modules: "OrderedDict[str, nn.Module]"
    return_layers: Dict[str, str]
    out_channels: List[int]
    stage_groups: List[List[str]]


class Trunk(nn.Module):
    """Runs a classifier's layers up to C5 and returns C3, C4, C5.

    Attributes:
        out_channels: [C3, C4, C5] channel counts, e.g. [128, 256, 512] for ResNet-18.
        strides: [8, 16, 32].
        feature_names: ("C3", "C4", "C5"), the keys of the returned dict.
        stage_groups: child names per stage, stem first.
    """

    def __init__(self, layout: TrunkLayout) -> None:
        super().__init__()
        if sorted(layout.return_layers.values()) != sorted(FEATURE_NAMES):
            raise ValueError(
                f"layout.return_layers must map onto {FEATURE_NAMES}, got {layout.return_layers}"
            )
        names = list(layout.modules)
        unknown = [n for n in layout.return_layers if n not in names]
        grouped = [n for group in layout.stage_groups for n in group]
        if unknown or sorted(grouped) != sorted(names):
            raise ValueError(
                "layout is inconsistent: return_layers must name modules and stage_groups "
                f"must cover every module once; modules={names}, "
                f"return_layers={layout.return_layers}, stage_groups={layout.stage_groups}"
            )
        for name, module in layout.modules.items():
            self.add_module(name, module)
        self.return_layers = dict(layout.return_layers)
        self.out_channels = list(layout.out_channels)
        self.strides = list(FEATURE_STRIDES)
        self.feature_names = FEATURE_NAMES
        self.stage_groups = [list(group) for group in layout.stage_groups]

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Compute the C3, C4, C5 feature maps.

        Args:
            images: (B, 3, H, W) float, normalised as the backbone was trained.

        Returns:
            OrderedDict ``{"C3": (B, C3, ceil(H/8), ceil(W/8)), "C4": ... /16,
            "C5": ... /32}`` (sizes are exact when H and W are multiples of 32).
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        features = {}
        x = images
        for name, module in self.named_children():
            x = module(x)
            if name in self.return_layers:
                features[self.return_layers[name]] = x
        return OrderedDict((key, features[key]) for key in FEATURE_NAMES)

    def freeze_stages(self, trainable_layers: int) -> None:
        """Stop gradients in all but the last ``trainable_layers`` stage groups.

        Torchvision's rule for detection backbones: 0 freezes every parameter,
        ``len(stage_groups)`` trains them all (ResNet: 5 groups, conv1+bn1 then
        layer1..layer4; MobileNetV2: 6; VoVNet: 5). Frozen BatchNorm layers have no
        parameters and stay frozen whatever this says.

        Args:
            trainable_layers: int in [0, len(stage_groups)].
        """
        num_groups = len(self.stage_groups)
        if not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= num_groups:
            raise ValueError(
                f"trainable_layers must be an int in [0, {num_groups}], got {trainable_layers!r}"
            )
        frozen = self.stage_groups[: num_groups - trainable_layers]
        for group in frozen:
            for name in group:
                for parameter in getattr(self, name).parameters():
                    parameter.requires_grad_(False)

