"""Counting multiply-accumulates (MACs) of a network with forward hooks.

Papers that say "FLOPs" for a CNN usually mean multiply-adds: [refinedetlite] (its
footnote 1) and [shufflenetv2] do. :func:`count_macs` runs one forward pass and adds
up, per layer that does the arithmetic,

    Conv2d / ConvTranspose2d   MACs = (input elements feeding one output) × (outputs)
                                    = (C_in / groups) · k_h · k_w × (B · C_out · H_out · W_out)
                               (transposed: per *input* element, (C_out / groups) · k_h · k_w)
    Linear                     MACs = in_features × (output elements)

BatchNorm, activations, pooling, additions and interpolation are not counted: they
are a few operations per element, negligible against the convolutions, and
nobody's MAC figures include them. Biases are not counted either.
"""

from __future__ import annotations

from typing import Dict, Union

import torch
from torch import nn

__all__ = ["count_macs", "count_parameters"]


def _conv_macs(module: nn.Conv2d, inputs, output: torch.Tensor) -> int:
    k_h, k_w = module.kernel_size
    per_output = (module.in_channels // module.groups) * k_h * k_w
    return per_output * output.numel()


def _deconv_macs(module: nn.ConvTranspose2d, inputs, output: torch.Tensor) -> int:
    k_h, k_w = module.kernel_size
    per_input = (module.out_channels // module.groups) * k_h * k_w
    return per_input * inputs[0].numel()


def _linear_macs(module: nn.Linear, inputs, output: torch.Tensor) -> int:
    return module.in_features * output.numel()


_COUNTERS = ((nn.ConvTranspose2d, _deconv_macs), (nn.Conv2d, _conv_macs), (nn.Linear, _linear_macs))


@torch.no_grad()
def count_macs(model: nn.Module, inputs: Union[torch.Tensor, tuple], by_layer: bool = False
               ) -> Union[int, Dict[str, int]]:
    """Multiply-accumulates of one forward pass ``model(*inputs)``.

    The model runs once in its current mode (call ``.eval()`` first for inference
    figures) and without gradients; hooks are removed afterwards. A module called
    twice is counted twice.

    Args:
        model: any ``nn.Module`` made of Conv2d / ConvTranspose2d / Linear layers
            plus uncounted cheap ones.
        inputs: a tensor, e.g. (1, 3, 320, 320), or a tuple of positional arguments.
            MACs scale with the batch size B: pass B = 1 for per-image figures.
        by_layer: return ``{module name: MACs}`` (only layers that did arithmetic)
            instead of the total.

    Returns:
        int total MACs (divide by 1e9 for GMACs), or the per-layer dict.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    counts: Dict[str, int] = {}
    handles = []

    def make_hook(name, counter):
        def hook(module, hook_inputs, output):
            counts[name] = counts.get(name, 0) + counter(module, hook_inputs, output)
        return hook

    for name, module in model.named_modules():
        for kind, counter in _COUNTERS:
            if isinstance(module, kind):
                handles.append(module.register_forward_hook(make_hook(name, counter)))
                break
    try:
        model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return dict(counts) if by_layer else sum(counts.values())


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
