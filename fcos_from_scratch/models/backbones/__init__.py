"""Backbones: ImageNet classifiers that double as detection trunks (C2..C5).

=================  ============================  =======================  ===============
name               paper                         C2/C3/C4/C5 channels     torchvision keys
=================  ============================  =======================  ===============
``resnet18``       [resnet] He et al. 2016       64 / 128 / 256 / 512     identical
``resnet34``       [resnet] He et al. 2016       64 / 128 / 256 / 512     identical
``resnet50``       [resnet] He et al. 2016       256 / 512 / 1024 / 2048  identical
``mobilenet_v2``   [mobilenetv2] Sandler 2018    24 / 32 / 96 / 1280      identical
``vovnet27_slim``  [vovnet] Lee et al. 2019      128 / 256 / 384 / 512    (none exist)
``res2netlite72``  [refinedetlite] Chen 2020     32 / 288 / 576 / 1152    (none exist)
=================  ============================  =======================  ===============

Where C2 (stride 4) is tapped: ResNet layer1, MobileNetV2 features[3] (the last
block at stride 4), VoVNet stage2, Res2NetLite stage0. Res2NetLite's own
``forward`` returns the four RefineDetLite ARM features instead (stage 2, stage 3
and two extra Bottlenecks; ``res2netlite.Res2NetLite``). A trunk returns C3, C4, C5 unless
``feature_names`` asks for another subset, e.g. C2..C5 for [faster-rcnn] + [fpn].

The classifiers (``resnet18()`` ...) have torchvision's module names, state-dict
order and outputs, so torchvision's ImageNet ``.pth`` files load with
``strict=True``. :func:`build_backbone` turns one into a :class:`Trunk`::

    trunk = build_backbone("resnet18", pretrained="resnet18-f37072fd.pth")
    features = trunk(images)           # {"C3": (B, 128, H/8, W/8), "C4": ..., "C5": ...}
    trunk.out_channels                 # [128, 256, 512]
    trunk.strides                      # [8, 16, 32]
    build_backbone("resnet50", feature_names=("C2", "C3", "C4", "C5")).strides  # [4, 8, 16, 32]
"""

from .build import BACKBONES, IMAGENET_URLS, build_backbone, build_classifier
from .frozen_bn import FrozenBatchNorm2d, convert_frozen_batchnorm
from .mobilenet_v2 import MobileNetV2, mobilenet_v2
from .res2netlite import Res2NetLite, res2netlite72
from .resnet import ResNet, resnet18, resnet34, resnet50
from .trunk import (
    ALL_FEATURE_NAMES,
    FEATURE_NAMES,
    FEATURE_STRIDE,
    FEATURE_STRIDES,
    Trunk,
    TrunkLayout,
    check_feature_names,
)
from .vovnet import VoVNet, vovnet27_slim

__all__ = [
    "BACKBONES",
    "IMAGENET_URLS",
    "ALL_FEATURE_NAMES",
    "FEATURE_NAMES",
    "FEATURE_STRIDE",
    "FEATURE_STRIDES",
    "check_feature_names",
    "build_backbone",
    "build_classifier",
    "FrozenBatchNorm2d",
    "convert_frozen_batchnorm",
    "MobileNetV2",
    "mobilenet_v2",
    "Res2NetLite",
    "res2netlite72",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "Trunk",
    "TrunkLayout",
    "VoVNet",
    "vovnet27_slim",
]
