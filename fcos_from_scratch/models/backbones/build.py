"""``build_backbone``: a named classifier, optionally pretrained, cut into a trunk (C2..C5)."""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import nn

from ..pretrained import load_pretrained
from .frozen_bn import convert_frozen_batchnorm
from .mobilenet_v2 import mobilenet_v2
from .res2netlite import res2netlite72
from .resnet import resnet18, resnet34, resnet50
from .trunk import FEATURE_NAMES, Trunk
from .vovnet import vovnet27_slim

__all__ = ["BACKBONES", "IMAGENET_URLS", "build_classifier", "build_backbone"]

# name -> constructor of the ImageNet classifier (1000 classes).
BACKBONES: Dict[str, Callable[[], nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "vovnet27_slim": vovnet27_slim,
    "res2netlite72": res2netlite72,  # [refinedetlite] Table 1, c = 72
}

# torchvision's ImageNet weights (the IMAGENET1K_V1 sets), used for --pretrained=imagenet.
# The 8 hex digits are the SHA-256 prefix checked after download.
IMAGENET_URLS: Dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        close = difflib.get_close_matches(str(name), BACKBONES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}.{hint}"
        )


def _weights_source(name: str, pretrained: Union[str, Path, None]) -> Optional[str]:
    """None for no weights; ``"imagenet"`` becomes torchvision's URL for ``name``."""
    if pretrained is None or str(pretrained) == "":
        return None
    if str(pretrained) == "imagenet":
        if name not in IMAGENET_URLS:
            raise ValueError(
                f"pretrained='imagenet' has no download for backbone {name!r} (available for "
                f"{', '.join(IMAGENET_URLS)}); pass a local path or URL of a checkpoint instead"
            )
        return IMAGENET_URLS[name]
    return str(pretrained)


def build_classifier(name: str, pretrained: Union[str, Path, None] = None,
                     **load_kwargs) -> nn.Module:
    """The ImageNet classifier ``name``, with weights loaded strictly from ``pretrained``.

    Args:
        name: one of :data:`BACKBONES`.
        pretrained: None/"" (random init), "imagenet" (torchvision's weights), or a
            local path or URL of a ``.pth`` state dict.
        **load_kwargs: ``cache_dir``, ``sha256``, ``check_hash`` for the download.
    """
    _check_name(name)
    source = _weights_source(name, pretrained)
    if source is None:
        return BACKBONES[name]()
    # Every tensor is about to be overwritten (strict loading): skip the random init
    # by building on the meta device and allocating uninitialised CPU memory.
    with torch.device("meta"):
        model = BACKBONES[name]()
    model = model.to_empty(device="cpu")
    load_pretrained(model, source, strict=True, **load_kwargs)
    return model


def build_backbone(name: str, pretrained: Union[str, Path, None] = None, frozen_bn: bool = True,
                   trainable_layers: Optional[int] = None,
                   feature_names: Sequence[str] = FEATURE_NAMES, **load_kwargs) -> Trunk:
    """A detection trunk returning the requested features of C2..C5 (strides 4..32).

    Args:
        name: "resnet18", "resnet34", "resnet50", "mobilenet_v2", "vovnet27_slim" or
            "res2netlite72".
        pretrained: None/"" (random init), "imagenet", or PATH_OR_URL of the
            classifier's state dict (torchvision format for ResNet/MobileNetV2).
        frozen_bn: replace BatchNorm by :class:`FrozenBatchNorm2d` ([fcos-light] froze
            BN throughout). Frozen BN without pretrained statistics is a constant
            per-channel affine map, i.e. *no* normalisation: train from scratch with
            ``frozen_bn=False``.
        trainable_layers: stages (counted from the classifier's top) whose parameters
            train; default as torchvision: 3 with pretrained weights, all without.
        feature_names: which of "C2", "C3", "C4", "C5" to return, any order (they
            come back finest first). Default ("C3", "C4", "C5") for one-stage
            detectors; ("C2", "C3", "C4", "C5") for [faster-rcnn] with an FPN.
            Stages after the coarsest requested feature are dropped.
        **load_kwargs: ``cache_dir``, ``sha256``, ``check_hash`` for the download.

    Returns:
        :class:`Trunk` with ``feature_names``, ``out_channels`` and ``strides`` of
        the returned features.
    """
    classifier = build_classifier(name, pretrained, **load_kwargs)
    # Drops the pooling and fc head, and the stages after the coarsest feature.
    trunk = Trunk(classifier.trunk_layout(), feature_names)
    has_weights = _weights_source(name, pretrained) is not None
    if frozen_bn:
        if not has_weights:
            warnings.warn(
                f"build_backbone({name!r}): frozen BatchNorm without pretrained weights "
                "freezes the initial statistics (mean 0, var 1); pass frozen_bn=False to "
                "train the backbone from scratch",
                stacklevel=2,
            )
        convert_frozen_batchnorm(trunk)
    if trainable_layers is None:
        trainable_layers = 3 if has_weights else len(trunk.stage_groups)
    trunk.freeze_stages(trainable_layers)
    return trunk
