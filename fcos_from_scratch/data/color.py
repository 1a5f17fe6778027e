"""Photometric transforms: colour jitter and the SVHN colour policy.

They change pixel values only, never geometry, so the target passes through. Images
are (3, H, W) float tensors in [0, 1]; every op returns a new tensor in [0, 1].

Papers:
    [autoaugment] Cubuk et al., "AutoAugment: Learning Augmentation Policies from
        Data", CVPR 2019 (the SVHN policy, Appendix table).
"""

from __future__ import annotations

import random
from typing import Sequence, Tuple

import torch

# ITU-R 601 luma weights, the ones PIL's convert("L") uses.
LUMA = (0.299, 0.587, 0.114)


def _blend(image: torch.Tensor, other, factor: float) -> torch.Tensor:
    """``factor * image + (1 - factor) * other``, clamped to [0, 1]."""
    return (factor * image + (1.0 - factor) * other).clamp_(0.0, 1.0)


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) luma."""
    r, g, b = image.unbind(0)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(0)  # (1, H, W)


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(image, 0.0, factor)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the mean grey level (PIL ``ImageEnhance.Contrast``)."""
    return _blend(image, grayscale(image).mean(), factor)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(image, grayscale(image), factor)


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(0)
    maxc, _ = image.max(dim=0)
    minc, _ = image.min(dim=0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, (g - b) / safe % 6.0,
                      torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc])  # (3, H, W)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, sat, val = hsv.unbind(0)
    # Standard construction: f(n) = v - v s max(0, min(k, 4 - k, 1)), k = (n + 6 h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + hue * 6.0) % 6.0
        channels.append(val - val * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels)  # (3, H, W)


def adjust_hue(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (``shift`` in [-0.5, 0.5])."""
    hsv = _rgb_to_hsv(image)
    hsv[0] = (hsv[0] + shift) % 1.0
    return _hsv_to_rgb(hsv).clamp_(0.0, 1.0)


def invert(image: torch.Tensor) -> torch.Tensor:
    return 1.0 - image


def solarize(image: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` (in [0, 1])."""
    return torch.where(image >= threshold, 1.0 - image, image)


def autocontrast(image: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to span [0, 1] (flat channels are left alone)."""
    low = image.amin(dim=(1, 2), keepdim=True)  # (3, 1, 1)
    high = image.amax(dim=(1, 2), keepdim=True)
    span = high - low
    stretched = (image - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, stretched, image)


def equalize(image: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 256 levels (PIL ``ImageOps.equalize``)."""
    levels = (image * 255.0).round().long().clamp_(0, 255)  # (3, H, W)
    out = []
    for channel in levels:
        hist = torch.bincount(channel.flatten(), minlength=256)
        nonzero = hist[hist > 0]
        step = (hist.sum() - nonzero[-1]) // 255
        if step == 0:  # one grey level (or almost): nothing to spread
            out.append(channel.float() / 255.0)
            continue
        lut = (torch.cumsum(hist, 0) + step // 2) // step
        lut = torch.cat([lut.new_zeros(1), lut[:-1]]).clamp_(0, 255)
        out.append(lut[channel].float() / 255.0)
    return torch.stack(out)


class ColorJitter:
    """Random brightness, contrast, saturation and hue, in random order.

    Each factor is drawn uniformly from ``[1 - x, 1 + x]`` (hue: ``[-x, x]`` turns);
    the whole transform runs with probability ``p`` ([fcos-light] used 0.3).
    """

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p: float = 0.3):
        for name, value, limit in (("brightness", brightness, 1.0), ("contrast", contrast, 1.0),
                                   ("saturation", saturation, 1.0), ("hue", hue, 0.5)):
            if not 0.0 <= value <= limit:
                raise ValueError(f"{name} must be in [0, {limit}], got {value}")
        self.strengths = (brightness, contrast, saturation, hue)
        self.p = check_probability(p)

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
        order = list(range(4))
        random.shuffle(order)
        for index in order:
            strength = self.strengths[index]
            if strength == 0:
                continue
            centre = 0.0 if index == 3 else 1.0
            image = ops[index](image, random.uniform(centre - strength, centre + strength))
        return image, target


# Magnitude scales of [autoaugment] as torchvision spells them (10 levels, 0..9).
def _solarize_threshold(level: int) -> float:
    return (256.0 - 256.0 * level / 9.0) / 256.0  # linspace(256, 0, 10) on a 0..1 scale


def _contrast_factor(level: int) -> float:
    return 0.9 * level / 9.0  # linspace(0, 0.9, 10); signed, factor 1 +- m


# [autoaugment] SVHN policy, colour operations only: its 25 sub-policies with the
# geometric ops (ShearX/Y, TranslateX/Y, Rotate) removed, because those would move
# boxes (our RandomAffine does geometry). Two sub-policies were purely geometric
# and are gone; 23 remain. Entries: (op, probability, magnitude level or None).
SVHN_COLOR_POLICY: Tuple[Tuple[Tuple[str, float, object], ...], ...] = (
    (("Invert", 0.2, None),), (("Invert", 0.7, None),),
    (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
    (("Invert", 0.9, None), ("Equalize", 0.6, None)), (("Equalize", 0.6, None),),
    (("AutoContrast", 0.8, None),), (("Invert", 0.4, None),), (("Solarize", 0.2, 6),),
    (("Invert", 0.9, None), ("AutoContrast", 0.8, None)), (("Equalize", 0.6, None),),
    (("Solarize", 0.3, 3),), (("Invert", 0.7, None),), (("Equalize", 0.9, None),),
    (("Invert", 0.9, None), ("Equalize", 0.6, None)), (("Contrast", 0.3, 3),),
    (("Invert", 0.8, None),), (("Solarize", 0.4, 8),), (("Invert", 0.6, None),),
    (("Invert", 0.6, None),), (("Solarize", 0.7, 2),), (("Invert", 0.8, None),),
    (("AutoContrast", 0.7, None),), (("Invert", 0.1, None),),
)


def apply_color_op(image: torch.Tensor, op: str, level, sign: float = 1.0) -> torch.Tensor:
    """Apply one named policy operation at magnitude ``level``."""
    if op == "Invert":
        return invert(image)
    if op == "Equalize":
        return equalize(image)
    if op == "AutoContrast":
        return autocontrast(image)
    if op == "Solarize":
        return solarize(image, _solarize_threshold(level))
    if op == "Contrast":
        return adjust_contrast(image, 1.0 + sign * _contrast_factor(level))
    raise ValueError(f"unknown colour op {op!r}")


class SVHNColorPolicy:
    """Pick one sub-policy of :data:`SVHN_COLOR_POLICY` and apply it (as [digits-lab] did).

    The whole policy runs with probability ``p``; inside it each operation fires
    with its own probability, as in [autoaugment].
    """

    def __init__(self, p: float = 0.3, policy: Sequence = SVHN_COLOR_POLICY):
        self.p = check_probability(p)
        self.policy = tuple(policy)

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        for op, prob, level in random.choice(self.policy):
            if random.random() < prob:
                image = apply_color_op(image, op, level, sign=random.choice((-1.0, 1.0)))
        return image, target


def check_probability(p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"probability p must be in [0, 1], got {p}")
    return float(p)
