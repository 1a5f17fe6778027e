"""Detection models: backbones, shared detection parts and the detectors.

Every detector is built by name and follows torchvision's call convention::

    from fcos_from_scratch.models import build_model
    model = build_model("fcos", backbone="resnet18", num_classes=20)
    model.train(); losses = model(images, targets)   # dict of scalar losses, the "loss*" keys summed
    model.eval();  detections = model(images)        # list of {"boxes", "scores", "labels"}

Layout (three tiers; ``tests/test_layering.py`` enforces it):

* ``fcos_from_scratch.ops``: pure tensor functions (box ops, NMS, RoIAlign, box coders).
* shared parts, one module per concept: ``backbones/``, ``images``, ``fpn``,
  ``heads``, ``anchors``, ``matching``, ``sampling``, ``postprocess``.
* one module per detector in ``detectors/``, reached through ``registry``
  (``torchvision_weights`` maps torchvision's detectors onto them, same tier).

The shared parts have torchvision's names and semantics (a torchvision user
changes one import).
"""

from .anchors import grid_points
from .detectors.fcos import FCOS, FCOSConfig
from .fpn import FPN
from .registry import DETECTORS, build_detector, build_model, config_fields, detector_config
from .torchvision_weights import TORCHVISION_MODELS, from_torchvision

MODELS = DETECTORS  # the name used before the registry had its own module

__all__ = [
    "DETECTORS",
    "MODELS",
    "build_model",
    "build_detector",
    "config_fields",
    "detector_config",
    "TORCHVISION_MODELS",
    "from_torchvision",
    "FCOS",
    "FCOSConfig",
    "FPN",
    "grid_points",
]
