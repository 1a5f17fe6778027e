"""Deformable convolution: a convolution whose taps move.

[dcn] Dai et al., "Deformable Convolutional Networks", ICCV 2017, Sec. 2.1;
[dcnv2] Zhu et al., "Deformable ConvNets v2", CVPR 2019, Sec. 3.1 (the mask).

An ordinary k_h × k_w convolution reads its input at the fixed taps
``p_0 + p_k`` around every output position ``p_0``. A deformable one reads at
``p_0 + p_k + Δp_k``, where the offsets ``Δp_k`` (fractional, one (dy, dx) pair
per tap and output position) come from another layer; the fractional samples
are read by bilinear interpolation. DCNv2 also multiplies each sample by a
modulation scalar ``m_k`` (usually a sigmoid)::

    out[b, o, p_0] = bias[o] + sum_k w[o, :, k] · m_k(p_0) · x[b, :, p_0 + p_k + Δp_k(p_0)]
                                                                  [dcnv2] Eq. (1)

Names, signature, tensor layouts and every sampling rule follow
``torchvision.ops.deform_conv2d`` (its CPU kernel), so values and all five
gradients agree to rounding error (docs/CONVENTIONS.md "deform_conv2d"):

* output size ``(H + 2 pad - dil (k - 1) - 1) // stride + 1``, like ``conv2d``;
* tap ``(i, j)`` of output ``(oy, ox)`` samples at
  ``y = oy * stride_h - pad_h + i * dil_h + dy``, ``x = ox * stride_w - pad_w + j * dil_w + dx``;
* ``offset`` is (B, 2 · G_off · k_h · k_w, OH, OW) ordered (group, tap row-major, [dy, dx]);
  ``mask`` is (B, G_off · k_h · k_w, OH, OW) ordered (group, tap); input channel c
  belongs to offset group ``c // (C / G_off)``;
* bilinear sampling with zero padding: a sample with y <= -1, y >= H (or x likewise)
  reads 0, and of the four neighbours ``(floor(y) + {0, 1}, floor(x) + {0, 1})`` those
  off the map read 0. That is exactly torchvision's ``bilinear_interpolate`` and its
  gradients (``get_coordinate_weight``, ``deformable_col2im``), also at integer
  coordinates, where the offset gradient is the forward difference.

How it is vectorised (no Python loop over images, positions or taps):

1. every sample's coordinates, (B, G_off, K, OH·OW), from the base grid plus the offsets;
2. its four neighbours' flat pixel indices and bilinear weights (zero off the map);
3. the bilinear samples of every channel, by one ``grid_sample`` (or, equivalently, one
   ``gather`` of all 4 · K · OH·OW neighbours, weighted and summed): the *columns*
   (B, C, K, OH·OW) -- im2col of sampled values, times the mask;
4. one batched matmul per weight group: (C_out/g, C_in/g · K) @ (C_in/g · K, OH·OW).

Autograd turns the sampling into a scatter-add (the input gradient) and
differentiates the weights ``1 - frac`` / ``frac`` (the offset gradient).
"""

import math
import numbers
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import OpInputError

__all__ = ["deform_conv2d", "deform_conv2d_reference", "DeformConv2d"]

IntPair = Union[int, Tuple[int, int]]
SAMPLERS = ("gather", "grid_sample")  # how the bilinear samples are read (see deform_conv2d)


# ---------------------------------------------------------------------------
# Argument checks (torchvision raises RuntimeError from TORCH_CHECK: ours is one too)
# ---------------------------------------------------------------------------

def _pair(name: str, value, minimum: int) -> Tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        raise OpInputError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise OpInputError(f"{name} must be >= {minimum}, got {tuple(value)}")
    return int(value[0]), int(value[1])


def _check_4d(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise OpInputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 4:
        raise OpInputError(f"{name} must be a 4-D tensor, got shape {tuple(value.shape)}")
    return value


def _check_args(input, offset, weight, bias, stride, padding, dilation, mask):
    """Validate everything; return (stride, padding, dilation, G_w, G_off, (OH, OW))."""
    for name, value in (("input", input), ("offset", offset), ("weight", weight)):
        _check_4d(name, value)
    if mask is not None:
        _check_4d("mask", mask)
    if not input.is_floating_point():
        raise OpInputError(f"input must be a floating-point tensor, got dtype {input.dtype}")
    stride, padding, dilation = (_pair("stride", stride, 1), _pair("padding", padding, 0),
                                 _pair("dilation", dilation, 1))
    B, C, H, W = input.shape
    C_out, C_in_g, kh, kw = weight.shape
    K = kh * kw
    if K == 0 or C_in_g == 0 or C % C_in_g:
        raise OpInputError(
            f"weight of shape {tuple(weight.shape)} does not fit input channels {C}: "
            "the input channels should be a multiple of weight.size(1)")
    groups = C // C_in_g
    if C_out % groups:
        raise OpInputError(f"weight.size(0) = {C_out} must be a multiple of the groups {groups}")
    if offset.shape[1] % (2 * K) or offset.shape[1] == 0:
        raise OpInputError(
            "the shape of the offset tensor at dimension 1 is not valid. It should be a "
            f"multiple of 2 * weight.size[2] * weight.size[3]. Got offset.shape[1]="
            f"{offset.shape[1]}, while 2 * weight.size[2] * weight.size[3]={2 * K}")
    offset_groups = offset.shape[1] // (2 * K)
    if C % offset_groups:
        raise OpInputError(f"input channels {C} must be a multiple of the offset groups {offset_groups}")
    OH = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    OW = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if OH < 1 or OW < 1:
        raise OpInputError(f"calculated output size ({OH}, {OW}) is too small for input {tuple(input.shape)}")
    if offset.shape[0] != B or tuple(offset.shape[2:]) != (OH, OW):
        raise OpInputError(
            f"offset must have shape (B, 2*G*kh*kw, OH, OW) = ({B}, {offset.shape[1]}, {OH}, {OW}), "
            f"got {tuple(offset.shape)}: invalid offset shape")
    if mask is not None and tuple(mask.shape) != (B, offset_groups * K, OH, OW):
        raise OpInputError(
            f"mask must have shape ({B}, {offset_groups * K}, {OH}, {OW}), got {tuple(mask.shape)}: "
            "mask.shape[1] is not valid")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (C_out,)):
        got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise OpInputError(f"bias must have shape ({C_out},), got {got}")
    return stride, padding, dilation, groups, offset_groups, (OH, OW)


# ---------------------------------------------------------------------------
# Vectorised op
# ---------------------------------------------------------------------------

def _sample_points(offset, kernel, stride, padding, dilation, out_size, offset_groups):
    """Sample coordinates of every tap: y, x each (B, G_off, K, OH*OW)."""
    (kh, kw), (OH, OW) = kernel, out_size
    B, dtype, device = offset.shape[0], offset.dtype, offset.device
    tap_i = torch.arange(kh, device=device).repeat_interleave(kw)  # (K,) tap row
    tap_j = torch.arange(kw, device=device).repeat(kh)  # (K,) tap column
    out_y = torch.arange(OH, device=device).repeat_interleave(OW)  # (L,) L = OH*OW
    out_x = torch.arange(OW, device=device).repeat(OH)  # (L,)
    base_y = (out_y * stride[0] - padding[0])[None, :] + (tap_i * dilation[0])[:, None]  # (K, L)
    base_x = (out_x * stride[1] - padding[1])[None, :] + (tap_j * dilation[1])[:, None]  # (K, L)
    delta = offset.reshape(B, offset_groups, kh * kw, 2, OH * OW)  # (B, G, K, [dy, dx], L)
    return base_y.to(dtype) + delta[:, :, :, 0], base_x.to(dtype) + delta[:, :, :, 1]


def _bilinear_neighbours(y, x, height: int, width: int):
    """The four neighbours of every sample: flat indices and weights, zero off the map.

    Args:
        y, x: (...) float sample coordinates.

    Returns:
        index: (..., 4) int64 ``row * W + col`` (clamped into the map where the weight is 0);
        weight: (..., 4) float, neighbours ordered (y0 x0, y0 x1, y1 x0, y1 x1).
    """
    y0, x0 = torch.floor(y), torch.floor(x)
    fy, fx = y - y0, x - x0  # fractional parts: the only differentiable part
    rows = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=-1).to(torch.int64)  # (..., 4)
    cols = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=-1).to(torch.int64)  # (..., 4)
    wy = torch.stack([1 - fy, 1 - fy, fy, fy], dim=-1)  # (..., 4)
    wx = torch.stack([1 - fx, fx, 1 - fx, fx], dim=-1)  # (..., 4)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # zero padding
    index = torch.where(inside, rows * width + cols, torch.zeros_like(rows))
    return index, wy * wx * inside.to(y.dtype)


def _sampled_columns_grid(input, y, x, mask, offset_groups):
    """:func:`_sampled_columns` by ``grid_sample``: (B, C, K, L), the mask applied.

    align_corners=True makes -1 and +1 the centres of the first and last pixels, so
    pixel ``x`` is ``2 x / (W - 1) - 1``; zero padding reads 0 per off-map neighbour:
    the bilinear rule above, about 3x faster on a CPU than the gather (measured on
    (32, 32, 16, 16), forward + backward). The normalisation rounds in float32, so
    at *exactly integer* coordinates the offset gradient may be the backward instead
    of the forward difference (torchvision's); values agree to rounding. A map one
    pixel high or wide has no such normalisation and takes the gather.
    """
    B, C, H, W = input.shape
    if H == 1 or W == 1:
        return _sampled_columns(input, y, x, mask, offset_groups)
    G, K, L = offset_groups, y.shape[2], y.shape[3]
    grid = torch.stack([x * (2.0 / (W - 1)) - 1.0, y * (2.0 / (H - 1)) - 1.0], dim=-1)  # (B, G, K, L, 2)
    samples = F.grid_sample(input.reshape(B * G, C // G, H, W), grid.reshape(B * G, K, L, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=True)  # (B*G, C/G, K, L)
    samples = samples.reshape(B, G, C // G, K, L)
    if mask is not None:  # DCNv2 modulation
        samples = samples * mask.reshape(B, G, 1, K, L)
    return samples.reshape(B, C, K, L)


def _sampled_columns(input, y, x, mask, offset_groups):
    """im2col of the deformed samples: (B, C, K, L), the mask already applied."""
    B, C, H, W = input.shape
    G, K, L = offset_groups, y.shape[2], y.shape[3]
    index, weight = _bilinear_neighbours(y, x, H, W)  # (B, G, K, L, 4) each
    flat = input.reshape(B, G, C // G, H * W)  # (B, G, C/G, H*W)
    index = index.reshape(B, G, 1, K * L * 4).expand(B, G, C // G, K * L * 4)
    taps = torch.gather(flat, 3, index).reshape(B, G, C // G, K, L, 4)  # (B, G, C/G, K, L, 4)
    if mask is not None:  # DCNv2 modulation: fold m_k into the bilinear weights
        weight = weight * mask.reshape(B, G, K, L, 1)
    cols = (taps * weight.unsqueeze(2)).sum(dim=-1)  # (B, G, C/G, K, L)
    return cols.reshape(B, C, K, L)


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[torch.Tensor] = None,
    sampler: str = "gather",
) -> torch.Tensor:
    """Deformable convolution, [dcn] Sec. 2.1, modulated when ``mask`` is given, [dcnv2] Eq. (1).

    Same arguments, layouts and results as ``torchvision.ops.deform_conv2d``
    (module docstring for the sampling rules). The offset groups G_off are
    ``offset.shape[1] // (2 k_h k_w)``; the weight groups are ``C // weight.shape[1]``.

    Args:
        input: (B, C, H, W) float.
        offset: (B, 2 * G_off * kh * kw, OH, OW), per tap ``(dy, dx)`` in input pixels.
        weight: (C_out, C / groups, kh, kw).
        bias: (C_out,) or None.
        stride, padding, dilation: int or (h, w).
        mask: (B, G_off * kh * kw, OH, OW) modulation scalars, or None (DCNv1).
        sampler: "gather" (torchvision's values and gradients, also at integer
            coordinates) or "grid_sample" (~3x faster on a CPU; see ``_sampled_columns_grid``).

    Returns:
        (B, C_out, OH, OW), dtype of ``input``.
    """
    stride, padding, dilation, groups, offset_groups, (OH, OW) = _check_args(
        input, offset, weight, bias, stride, padding, dilation, mask)
    B, C = input.shape[:2]
    C_out, C_in_g, kh, kw = weight.shape
    y, x = _sample_points(offset.to(input.dtype), (kh, kw), stride, padding, dilation,
                          (OH, OW), offset_groups)  # (B, G_off, K, L) each
    if sampler not in SAMPLERS:
        raise OpInputError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    sample = _sampled_columns if sampler == "gather" else _sampled_columns_grid
    cols = sample(input, y, x, mask, offset_groups)  # (B, C, K, L)
    cols = cols.reshape(B, groups, C_in_g * kh * kw, OH * OW)  # (B, g, C/g * K, L)
    w = weight.reshape(groups, C_out // groups, C_in_g * kh * kw)  # (g, C_out/g, C/g * K)
    out = torch.matmul(w, cols).reshape(B, C_out, OH, OW)  # (B, C_out, OH, OW)
    if bias is not None:
        out = out + bias.reshape(1, C_out, 1, 1)
    return out


# ---------------------------------------------------------------------------
# Plain loop, for lessons and tests
# ---------------------------------------------------------------------------

def _bilinear_at(feature: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Zero-padded bilinear read of a (C, H, W) map at one point (0-d tensors y, x): (C,)."""
    _, height, width = feature.shape
    value = feature.new_zeros(feature.shape[0])
    # torchvision returns 0 at once for y <= -1 or y >= H; neighbour by neighbour
    # zero padding gives the same value, and at y = -1 exactly it also gives
    # torchvision's offset gradient (get_coordinate_weight has no early exit)
    y0, x0 = math.floor(float(y.detach())), math.floor(float(x.detach()))
    fy, fx = y - y0, x - x0  # tensors, so the offsets get a gradient
    for row, col, w in ((y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
                        (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)):
        if 0 <= row < height and 0 <= col < width:
            value = value + w * feature[:, row, col]
    return value


def deform_conv2d_reference(input, offset, weight, bias=None, stride=1, padding=0,
                            dilation=1, mask=None):
    """Deformable convolution as plain loops over images, positions, groups and taps.

    Same arguments and result as :func:`deform_conv2d`; written as the definition
    ([dcnv2] Eq. (1)), one Python step per tap: use it on tiny maps only. Every
    argument receives its gradient through autograd.
    """
    (sh, sw), (ph, pw), (dh, dw), groups, offset_groups, (OH, OW) = _check_args(
        input, offset, weight, bias, stride, padding, dilation, mask)
    B, C = input.shape[:2]
    C_out, C_in_g, kh, kw = weight.shape
    per_offset_group, out_per_group = C // offset_groups, C_out // groups
    images = []
    for b in range(B):
        positions = []
        for oy in range(OH):
            for ox in range(OW):
                # 1. the deformed receptive field: column[c, i, j] = m * x(sample of tap (i, j))
                column = [[None] * kw for _ in range(kh)]
                for i in range(kh):
                    for j in range(kw):
                        samples = []
                        for g in range(offset_groups):  # each offset group moves its own taps
                            k = g * kh * kw + i * kw + j
                            y = oy * sh - ph + i * dh + offset[b, 2 * k, oy, ox]
                            x = ox * sw - pw + j * dw + offset[b, 2 * k + 1, oy, ox]
                            channels = input[b, g * per_offset_group:(g + 1) * per_offset_group]
                            sample = _bilinear_at(channels, y, x)  # (C / G_off,)
                            samples.append(sample if mask is None else sample * mask[b, k, oy, ox])
                        column[i][j] = torch.cat(samples)  # (C,)
                column = torch.stack([torch.stack(row, dim=1) for row in column], dim=1)  # (C, kh, kw)
                # 2. an ordinary convolution of that field, weight group by weight group
                outputs = []
                for wg in range(groups):
                    field = column[wg * C_in_g:(wg + 1) * C_in_g]  # (C / groups, kh, kw)
                    kernels = weight[wg * out_per_group:(wg + 1) * out_per_group]  # (C_out / groups, ...)
                    outputs.append((kernels * field).sum(dim=(1, 2, 3)))  # (C_out / groups,)
                total = torch.cat(outputs)  # (C_out,)
                positions.append(total if bias is None else total + bias)
        images.append(torch.stack(positions, dim=1).reshape(C_out, OH, OW))
    return torch.stack(images)  # (B, C_out, OH, OW)


# ---------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------

class DeformConv2d(nn.Module):
    """``torchvision.ops.DeformConv2d``: a conv layer whose forward also takes offsets (and a mask).

    Same constructor and initialisation as torchvision (weights Kaiming-uniform
    with a = sqrt(5), bias uniform in ±1/sqrt(fan_in): ``nn.Conv2d``'s defaults).
    The offsets come from elsewhere, usually a plain conv on the same input.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True, sampler: str = "gather"):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.sampler = sampler
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.stride = _pair("stride", stride, 1)
        self.padding = _pair("padding", padding, 0)
        self.dilation = _pair("dilation", dilation, 1)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor, offset: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return deform_conv2d(input, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask, sampler=self.sampler)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")
