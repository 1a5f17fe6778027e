"""A classifier turned into a detection trunk that returns any subset of C2..C5.

A detector does not need a classifier's pooling and fully-connected layer; it needs
the feature maps at the end of the stages with strides 4, 8, 16 and 32, named C2,
C3, C4, C5 after their stride 2^2 .. 2^5 ([fpn] Sec. 3). One-stage detectors
(FCOS, RetinaNet [focal] Sec. 4) use C3..C5; Faster R-CNN with an FPN also uses C2
([fpn] Sec. 4.2, torchvision's ``returned_layers=[1, 2, 3, 4]``).

Each classifier in this package describes how to cut it with ``trunk_layout()``:
which child produces each of C2..C5. :class:`Trunk` keeps only the children up to
the coarsest requested feature (asking for C2 and C3 of a ResNet drops layer3 and
layer4: they are neither stored nor run), runs them in order and taps the outputs.

The trunk's children keep the classifier's names, so its state-dict keys are the
classifier's minus the classification head and the dropped stages
(``conv1.weight``, ``layer1.0.bn1.bias`` for ResNet, as in torchvision's detection
backbones).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "ALL_FEATURE_NAMES",
    "FEATURE_STRIDE",
    "FEATURE_NAMES",
    "FEATURE_STRIDES",
    "check_feature_names",
    "TrunkLayout",
    "Trunk",
]

ALL_FEATURE_NAMES = ("C2", "C3", "C4", "C5")  # finest first
FEATURE_STRIDE = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}  # C_i has stride 2^i: [fpn] Sec. 3
# The default subset, what one-stage detectors use ([fcos] Sec. 3.2, [focal] Sec. 4).
FEATURE_NAMES = ("C3", "C4", "C5")
FEATURE_STRIDES = tuple(FEATURE_STRIDE[name] for name in FEATURE_NAMES)  # (8, 16, 32)


def check_feature_names(feature_names: Sequence[str],
                        available: Sequence[str] = ALL_FEATURE_NAMES) -> Tuple[str, ...]:
    """Validate a requested subset of feature names and order it finest first.

    Args:
        feature_names: a non-empty sequence of distinct names from ``available``,
            in any order, e.g. ``("C2", "C3", "C4", "C5")``.
        available: the names the trunk can return.

    Returns:
        The names as a tuple, finest (smallest stride) first.

    Raises:
        ValueError: for a bare string, an empty sequence, an unknown or a repeated name.
    """
    if isinstance(feature_names, str) or not isinstance(feature_names, (list, tuple)):
        raise ValueError(
            f"feature_names must be a list or tuple of names from {tuple(available)}, "
            f"got {feature_names!r}"
        )
    if not feature_names:
        raise ValueError(f"feature_names must name at least one of {tuple(available)}, got ()")
    unknown = [name for name in feature_names if name not in available]
    if unknown:
        raise ValueError(
            f"feature_names has unknown names {unknown}; available: {tuple(available)}"
        )
    repeated = sorted({name for name in feature_names if list(feature_names).count(name) > 1})
    if repeated:
        raise ValueError(f"feature_names repeats {repeated}: each feature can be returned once")
    return tuple(name for name in ALL_FEATURE_NAMES if name in feature_names)


@dataclass
class TrunkLayout:
    """How to cut a classifier into a trunk.

    Attributes:
        modules: the modules from the input to C5, in execution order, by name.
        return_layers: child name -> feature name (each of C2..C5 once): the
            output of that child is the feature.
        channels: feature name -> its channel count, e.g. ``{"C2": 64, ...}``.
        stage_groups: child names grouped into stages, first (stem) to last;
            ``trainable_layers = k`` trains the last k groups (torchvision's rule).
    """

    modules: "OrderedDict[str, nn.Module]"
    return_layers: Dict[str, str]
    channels: Dict[str, int]
    stage_groups: List[List[str]]


def _check_layout(layout: TrunkLayout) -> None:
    names = list(layout.modules)
    tapped = sorted(layout.return_layers.values())
    unknown = [n for n in layout.return_layers if n not in names]
    grouped = [n for group in layout.stage_groups for n in group]
    if tapped != sorted(ALL_FEATURE_NAMES) or sorted(layout.channels) != tapped:
        raise ValueError(
            f"layout.return_layers and layout.channels must cover {ALL_FEATURE_NAMES} once "
            f"each, got return_layers={layout.return_layers}, channels={layout.channels}"
        )
    if unknown or sorted(grouped) != sorted(names):
        raise ValueError(
            "layout is inconsistent: return_layers must name modules and stage_groups "
            f"must cover every module once; modules={names}, "
            f"return_layers={layout.return_layers}, stage_groups={layout.stage_groups}"
        )


class Trunk(nn.Module):
    """Runs a classifier's layers up to the coarsest requested feature and taps them.

    Args:
        layout: the classifier's :class:`TrunkLayout`.
        feature_names: which of C2..C5 to return (any order; see
            :func:`check_feature_names`). Default C3, C4, C5.

    Attributes:
        feature_names: the returned names, finest first, e.g. ("C3", "C4", "C5").
        out_channels: their channel counts, e.g. [128, 256, 512] for ResNet-18.
        strides: their strides, e.g. [8, 16, 32].
        stage_groups: child names per stage, stem first. Groups of dropped stages
            stay as empty lists, so ``trainable_layers`` counts from the
            classifier's last stage whatever is returned, as torchvision does.
    """

    def __init__(self, layout: TrunkLayout, feature_names: Sequence[str] = FEATURE_NAMES) -> None:
        super().__init__()
        _check_layout(layout)
        self.feature_names = check_feature_names(feature_names)
        self.return_layers = {child: feature for child, feature in layout.return_layers.items()
                              if feature in self.feature_names}
        names = list(layout.modules)
        last = max(names.index(child) for child in self.return_layers)
        kept = names[: last + 1]  # everything after the coarsest tap is dropped
        for name in kept:
            self.add_module(name, layout.modules[name])
        self.out_channels = [layout.channels[name] for name in self.feature_names]
        self.strides = [FEATURE_STRIDE[name] for name in self.feature_names]
        self.stage_groups = [[n for n in group if n in kept] for group in layout.stage_groups]

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Compute the requested feature maps.

        Args:
            images: (B, 3, H, W) float, normalised as the backbone was trained.

        Returns:
            OrderedDict ``{name: (B, C_name, ceil(H/s), ceil(W/s))}`` in
            ``feature_names`` order (finest first), s = the name's stride; sizes
            are exact when H and W are multiples of 32.
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
        return OrderedDict((key, features[key]) for key in self.feature_names)

    def freeze_stages(self, trainable_layers: int) -> None:
        """Stop gradients in all but the last ``trainable_layers`` stage groups.

        Torchvision's rule for detection backbones: 0 freezes every parameter,
        ``len(stage_groups)`` trains them all (ResNet: 5 groups, conv1+bn1 then
        layer1..layer4; MobileNetV2: 6; VoVNet: 5). Groups count from the
        classifier's last stage even when the trunk dropped it (ResNet up to C3 with
        ``trainable_layers=3`` trains layer2 only). Frozen BatchNorm layers have no
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
