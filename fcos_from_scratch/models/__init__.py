"""Detection models: backbones, feature pyramids, heads and detectors.

Every detector is built by name and follows torchvision's call convention::

    from fcos_from_scratch.models import build_model
    model = build_model("fcos", backbone="resnet18", num_classes=20)
    model.train(); losses = model(images, targets)   # dict of scalar losses, summed by the trainer
    model.eval();  detections = model(images)        # list of {"boxes", "scores", "labels"}

A misspelt model name or keyword is a ``ValueError`` that lists the close matches.
"""

import difflib
from typing import Callable, Dict, List

from torch import nn

from .fcos import FCOS, FCOSConfig, config_field_names


def _close(name: str, options: List[str]) -> str:
    matches = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def build_fcos(**kwargs) -> FCOS:
    """FCOS from :class:`FCOSConfig` keywords (``num_classes`` is required)."""
    known = config_field_names()
    unknown = [key for key in kwargs if key not in known]
    if unknown:
        key = unknown[0]
        raise ValueError(f"unknown FCOS option {key!r}{_close(key, known)} (options: {', '.join(known)})")
    if isinstance(kwargs.get("sizes_of_interest"), list):
        kwargs["sizes_of_interest"] = tuple(kwargs["sizes_of_interest"])
    return FCOS(FCOSConfig(**kwargs))


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "fcos": build_fcos,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the detector registered as ``name`` with keyword options.

    Args:
        name: a key of :data:`MODELS` (``"fcos"``).
        **kwargs: the detector's options, e.g. ``backbone="resnet18", num_classes=20``.

    Raises:
        ValueError: unknown name or option (the message lists close matches).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}{_close(name, list(MODELS))} (models: {', '.join(MODELS)})")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "build_model", "FCOS", "FCOSConfig"]
