"""Deterministic weights and images for reference tests: a formula per tensor, no RNG.

A reference script (run with torchvision) and a test (run without it) must fill
the same model with the same numbers, in different PyTorch versions. Random
generators are not promised to agree across versions, and storing real weights
would take ~130 MB, so every entry comes from a formula of its key and index::

    phase[i] = (CHIRP * i^2 + STEP * i + crc32(key)) mod PERIOD     exact int64 arithmetic
    value[i] = centre + amplitude * sin(2 pi phase[i] / PERIOD)

The quadratic term matters: with a linear phase alone (a golden-ratio step) the
values are *too* even -- any run of them sums to almost 0 -- so a conv fed
correlated channels cancels to a small result whose rounding error the next
GroupNorm blows up tenfold per layer. A quadratic phase modulo a prime sums like
noise (a Gauss sum), and the values look like noise (mean 0, variance 1/2) while
being a pure function of ``(key, i)``. Only ``sin`` of a float64 argument below
2 pi is computed in floating point; its result rounds to the same float32 in any
PyTorch build we know of.

:func:`value_rule` chooses ``(centre, amplitude)`` by the role the key names:
variances positive, norm scales near 1, conv weights with variance ``gain^2 /
fan_in`` so activations stay O(1) through fifty layers.
"""

from __future__ import annotations

import math
import zlib
from typing import Dict, Mapping, Sequence, Tuple, Union

import torch

PERIOD = 65521  # the largest prime below 2^16: a tensor's pattern repeats after this many entries
STEP = 40503  # round(PERIOD * 0.618...): the golden-ratio step, coprime with PERIOD
CHIRP = 7919  # quadratic coefficient, coprime with PERIOD (any such prime would do)
CONV_GAIN = 1.0  # weight std = CONV_GAIN / sqrt(fan_in)


def wave(key: str, numel: int) -> torch.Tensor:
    """(numel,) float64 in [-1, 1]: ``sin(2 pi phase[i] / PERIOD)`` (module docstring)."""
    index = torch.arange(numel, dtype=torch.int64) % PERIOD  # the phase has period PERIOD
    phase = (CHIRP * index * index + STEP * index + zlib.crc32(key.encode())) % PERIOD  # < 2^48: exact
    return torch.sin(phase.to(torch.float64) * (2.0 * math.pi / PERIOD))


def value_rule(key: str, shape: Sequence[int]) -> Tuple[float, float]:
    """(centre, amplitude) of the entry ``key`` of ``shape`` (see the module docstring)."""
    if key.endswith("running_var"):
        return 1.0, 0.5  # in [0.5, 1.5]: positive
    if key.endswith("running_mean") or key.endswith("bias"):
        return 0.0, 0.1
    if len(shape) == 1:  # BatchNorm / GroupNorm scale
        return 1.0, 0.25
    fan_in = math.prod(int(size) for size in shape[1:])
    return 0.0, CONV_GAIN * math.sqrt(2.0 / fan_in)  # variance = amplitude^2 / 2 = gain^2 / fan_in


def deterministic_tensor(key: str, shape: Sequence[int], centre: float, amplitude: float,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``shape``: ``centre + amplitude * wave(key)``, in ``dtype``.

    The phase is periodic in the index with period PERIOD, so one period is
    computed and tiled (the same numbers, ~20x faster for ResNet-50's 25 M entries).
    """
    numel = math.prod(int(size) for size in shape)
    period = (centre + amplitude * wave(key, min(numel, PERIOD))).to(dtype)  # (min(numel, PERIOD),)
    repeats = -(-numel // max(period.numel(), 1))  # ceil
    return period.repeat(repeats)[:numel].reshape(tuple(int(size) for size in shape))


def deterministic_state_dict(
    template: Mapping[str, Tuple[Sequence[int], torch.dtype]],
    overrides: Mapping[str, Union[Tuple[float, float], torch.Tensor]] = (),
) -> Dict[str, torch.Tensor]:
    """A state dict with ``template``'s keys, shapes and dtypes, filled by formula.

    Args:
        template: key -> (shape, dtype), e.g. from ``{k: (v.shape, v.dtype) for k, v in sd.items()}``.
        overrides: key -> (centre, amplitude) replacing :func:`value_rule` for that
            key, or key -> tensor used as is (a few values tuned by a reference script).

    Returns:
        key -> tensor; integer entries (BatchNorm's ``num_batches_tracked``) are 0.
    """
    overrides = dict(overrides)
    state = {}
    for key, (shape, dtype) in template.items():
        if not dtype.is_floating_point:
            state[key] = torch.zeros(tuple(shape), dtype=dtype)
            continue
        override = overrides.get(key)
        if torch.is_tensor(override):
            state[key] = override.to(dtype).reshape(tuple(shape)).clone()
            continue
        centre, amplitude = override or value_rule(key, shape)
        state[key] = deterministic_tensor(key, shape, centre, amplitude, dtype)
    return state


def deterministic_image(height: int, width: int, index: int) -> torch.Tensor:
    """(3, H, W) float32 RGB in [0, 1]: smooth stripes and blobs plus fine texture.

    ``0.5 + 0.3 sin(x / a_c + i) cos(y / b_c - i) + 0.15 wave``, with periods that
    differ per channel, so the picture has structure at several scales.
    """
    ys = torch.arange(height, dtype=torch.float64)[:, None]  # (H, 1)
    xs = torch.arange(width, dtype=torch.float64)[None, :]  # (1, W)
    channels = []
    for channel, (a, b) in enumerate(((11.0, 17.0), (23.0, 7.0), (5.0, 29.0))):
        smooth = torch.sin(xs / a + index) * torch.cos(ys / b - index)  # (H, W)
        texture = wave(f"image{index}/{channel}", height * width).reshape(height, width)
        channels.append(0.5 + 0.3 * smooth + 0.15 * texture)
    return torch.stack(channels).clamp(0.0, 1.0).to(torch.float32)  # (3, H, W)
