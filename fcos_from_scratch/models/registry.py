"""The detector registry: every detector, its config class and its digits preset.

The engine, ``predict`` and ``evaluate`` reach detectors only through this table,
so adding a detector is one module in ``detectors/`` plus one line here::

    model = build_model("fcos", backbone="resnet18", num_classes=20)
    config = detector_config("fcos", num_classes=20)     # the frozen FCOSConfig
    model = build_detector("fcos", config)

A misspelt name or option is a ``ValueError`` that lists the close matches.
"""

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

from torch import nn

from .detectors import faster_rcnn, fcos, nas_fcos, refinedet_lite


@dataclass(frozen=True)
class Detector:
    """One registry entry.

    Attributes:
        config_class: the detector's frozen config dataclass.
        build: config -> ``nn.Module`` with the call convention of every detector.
        digits_preset: the training preset that ``--model NAME`` starts from.
    """

    config_class: type
    build: Callable[[Any], nn.Module]
    digits_preset: str


DETECTORS: Dict[str, Detector] = {
    "fcos": Detector(fcos.FCOSConfig, fcos.FCOS, digits_preset="digits"),
    "faster_rcnn": Detector(faster_rcnn.FasterRCNNConfig, faster_rcnn.FasterRCNN,
                            digits_preset="digits_faster_rcnn"),
    "refinedet_lite": Detector(refinedet_lite.RefineDetLiteConfig, refinedet_lite.RefineDetLite,
                               digits_preset="digits_refinedet_lite"),
    "nas_fcos": Detector(nas_fcos.NASFCOSConfig, nas_fcos.NASFCOS, digits_preset="digits_nas_fcos"),
}


def _close(name: str, options: List[str]) -> str:
    matches = difflib.get_close_matches(str(name), options, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def get_detector(name: str) -> Detector:
    """The registry entry of ``name`` (a ``ValueError`` with close matches if unknown)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown model {name!r}{_close(name, list(DETECTORS))} "
                         f"(models: {', '.join(DETECTORS)})")
    return DETECTORS[name]


def config_fields(name: str) -> List[str]:
    """The option names of detector ``name``, in declaration order."""
    return [f.name for f in dataclasses.fields(get_detector(name).config_class)]


def detector_config(name: str, **options: Any):
    """The frozen config of detector ``name`` from keyword options (checked)."""
    known = config_fields(name)
    unknown = [key for key in options if key not in known]
    if unknown:
        key = unknown[0]
        raise ValueError(f"unknown {name} option {key!r}{_close(key, known)} (options: {', '.join(known)})")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return get_detector(name).config_class(**options)


def build_detector(name: str, config) -> nn.Module:
    """Detector ``name`` built from its config object."""
    entry = get_detector(name)
    if not isinstance(config, entry.config_class):
        raise ValueError(f"model {name!r} needs a {entry.config_class.__name__}, "
                         f"got {type(config).__name__}")
    return entry.build(config)


def build_model(name: str, **options: Any) -> nn.Module:
    """Build the detector registered as ``name`` with keyword options.

    Args:
        name: a key of :data:`DETECTORS` (``"fcos"``).
        **options: the detector's config fields, e.g. ``backbone="resnet18", num_classes=20``.

    Raises:
        ValueError: unknown name or option (the message lists close matches).
    """
    return build_detector(name, detector_config(name, **options))
