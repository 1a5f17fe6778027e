"""Frozen BatchNorm: batch normalisation with fixed statistics and fixed affine terms.

Detectors fine-tune ImageNet backbones with a few images per GPU. Batch statistics
of 2-8 images are too noisy to update BatchNorm, so the usual practice (Detectron,
torchvision's detection models, and [fcos-light], which "froze BN throughout") replaces
every ``BatchNorm2d`` by a fixed per-channel affine map built from the pretrained
running statistics ([bn] Ioffe & Szegedy 2015, Eq. (1) and Alg. 2 at inference):

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias
      = x * scale + shift,   scale = weight / sqrt(running_var + eps),
                             shift = bias - running_mean * scale

:class:`FrozenBatchNorm2d` has torchvision's semantics: the four tensors are
*buffers* (never trained, but saved in the state dict under the same names as
``BatchNorm2d``'s), ``eps = 1e-5`` like ``BatchNorm2d``, and a checkpoint's
``num_batches_tracked`` entry is accepted and ignored when loading.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FrozenBatchNorm2d", "convert_frozen_batchnorm"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are constants.

    Equal, to float rounding, to an ``nn.BatchNorm2d`` in eval mode with the same
    tensors, in train and eval mode alike.

    Args:
        num_features: C, the number of channels of the (B, C, H, W) input.
        eps: added to the variance before the square root; 1e-5 as in
            ``nn.BatchNorm2d`` and torchvision's ``FrozenBatchNorm2d``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        if int(num_features) != num_features or num_features <= 0:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        # Registration order fixes the state-dict order: the same as BatchNorm2d's
        # (weight, bias, running_mean, running_var), minus num_batches_tracked.
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A BatchNorm2d checkpoint also carries num_batches_tracked; a frozen layer
        # has no use for it, so it is dropped instead of reported as unexpected.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``x * scale + shift`` per channel.

        Args:
            x: (B, C, H, W) float.

        Returns:
            (B, C, H, W), same dtype as ``x``.
        """
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"x must have shape (B, {self.num_features}, H, W), got {tuple(x.shape)}"
            )
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # (C,)
        shift = self.bias - self.running_mean * scale  # (C,)
        # Computed in the buffers' precision, applied in the input's: under float16
        # autocast the output stays float16 (torchvision's would become float32).
        scale = scale.to(x.dtype).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
        shift = shift.to(x.dtype).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _frozen_from(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    """A FrozenBatchNorm2d holding copies of ``bn``'s tensors (its eval-mode map)."""
    stats = bn.running_mean  # sets the device and dtype of the frozen copy
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps).to(stats.device, stats.dtype)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a FrozenBatchNorm2d.

    The replacement keeps the child's name, so state-dict keys do not change
    (only ``num_batches_tracked`` disappears). A BatchNorm without running
    statistics (``track_running_stats=False``) has no eval-mode map to freeze and
    is rejected.

    Args:
        module: any module; converted in place.

    Returns:
        ``module`` itself, or a new FrozenBatchNorm2d when ``module`` is a BatchNorm2d.
    """
    if isinstance(module, nn.BatchNorm2d):
        if not module.track_running_stats:
            raise ValueError(
                "cannot freeze a BatchNorm2d with track_running_stats=False: it has no "
                "running statistics"
            )
        return _frozen_from(module)
    for name, child in module.named_children():
        converted = convert_frozen_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
