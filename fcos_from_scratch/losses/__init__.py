"""Detector training losses, composed from the primitives in ``fcos_from_scratch.ops``."""

from .fcos_loss import FCOSLossConfig, fcos_loss

__all__ = ["FCOSLossConfig", "fcos_loss"]
