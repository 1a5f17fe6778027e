"""Build a decoder (FPN + class/box/centerness towers) from any architecture of the space.

[nas-fcos] Sec. 3.2; the choices the paper leaves open are listed in
docs/CONVENTIONS.md "NAS-FCOS search space" with their reasons. In short:

* every op but skip is conv -> GroupNorm -> ReLU ([gn]); "separable" is a depthwise
  k x k (dilated) conv followed by a pointwise 1 x 1 conv;
* the deformable op is DCNv2 ([dcnv2], with the modulation mask), 2 offset groups
  as [mmdet]; a zero-initialised 3 x 3 conv predicts offsets and mask logits, so
  it starts as a plain 3 x 3 conv with mask 0.5 ([dcnv2] Sec. 3.1);
* two inputs of different sizes: the smaller is resized bilinearly to the larger
  ([nas-fcos] Sec. 3.2); sum adds, concat is followed by 1 x 1 conv + GroupNorm;
* FPN: x7 -> P3, x6 -> P4, x5 -> P5, each resized to the c3/c4/c5 size ([mmdet]);
  dangling outputs are resized to each level and added ([nas-fcos] Eq. (1));
  P6 = 3 x 3/2 conv of P5, P7 = 3 x 3/2 conv of ReLU(P6) ([fcos]);
* separate class and box towers of the same searched structure ([mmdet]), output
  convs and per-level scales as ``FCOSHead``.
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.heads import concat_levels, group_norm, init_normal_, prior_bias
from ..ops import DeformConv2d
from .space import (CONCAT, DEFORM_3X3, HEAD_LAYERS, INPUTS, NUM_LEVELS, OPS, SEP_3X3,
                    SEP_3X3_DIL3, SEP_5X5_DIL6, SKIP, Architecture, Block, dangling_outputs)

DEFORM_GROUPS = 2  # offset groups of the deformable op, as [mmdet]'s NAS-FCOS config
SEPARABLE = {SEP_3X3: (3, 1), SEP_3X3_DIL3: (3, 3), SEP_5X5_DIL6: (5, 6)}  # op -> (k, dilation)


class SeparableConv(nn.Sequential):
    """Depthwise k x k (dilated, 'same' padding) -> pointwise 1 x 1 -> GroupNorm -> ReLU."""

    def __init__(self, channels: int, kernel: int, dilation: int):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation,
                      groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            group_norm(channels), nn.ReLU(inplace=True))


class DeformableConv(nn.Module):
    """DCNv2 3 x 3 ([dcnv2] Eq. (1)) -> GroupNorm -> ReLU; offsets and mask from a 3 x 3 conv."""

    def __init__(self, channels: int, offset_groups: int = DEFORM_GROUPS):
        super().__init__()
        if channels % offset_groups:
            offset_groups = 1  # the offset groups must divide the width
        self.offset_groups = offset_groups
        # 3 numbers per tap and offset group: (dy, dx) and the mask logit
        self.offset_conv = nn.Conv2d(channels, 3 * 9 * offset_groups, 3, padding=1)
        nn.init.zeros_(self.offset_conv.weight)  # [dcnv2] Sec. 3.1: offsets 0, mask 0.5
        nn.init.zeros_(self.offset_conv.bias)
        # grid_sample: ~3x faster on a CPU than the exact gather (ops/deform_conv.py)
        self.conv = DeformConv2d(channels, channels, 3, padding=1, bias=False, sampler="grid_sample")
        self.norm = group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offset_conv(x).split([2 * 9 * self.offset_groups, 9 * self.offset_groups], 1)
        return F.relu(self.norm(self.conv(x, offset, torch.sigmoid(mask))))


def build_op(op: int, channels: int) -> nn.Module:
    """One unary op of [nas-fcos] Table 1, width-preserving."""
    if op in SEPARABLE:
        return SeparableConv(channels, *SEPARABLE[op])
    if op == SKIP:
        return nn.Identity()
    if op == DEFORM_3X3:
        return DeformableConv(channels)
    raise ValueError(f"op must be one of 0..{len(OPS) - 1}, got {op!r}")


def check_num_levels(num_levels: int) -> int:
    if not (isinstance(num_levels, int) and len(INPUTS) <= num_levels <= NUM_LEVELS):
        raise ValueError(f"num_levels must be an int in [{len(INPUTS)}, {NUM_LEVELS}] (P3..P5 to P3..P7), "
                         f"got {num_levels!r}")
    return num_levels


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, H, W) to ``size``; no-op when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SearchedBlock(nn.Module):
    """``agg(op1(x1), op2(x2))``, the smaller of the two resized to the larger ([nas-fcos] Fig. 1)."""

    def __init__(self, block: Block, channels: int):
        super().__init__()
        self.op1, self.op2 = build_op(block.op1, channels), build_op(block.op2, channels)
        self.merge = (nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False), group_norm(channels))
                      if block.agg == CONCAT else None)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (o1, o2, a): both op outputs (the head's pool keeps them) and the merge."""
        o1, o2 = self.op1(x1), self.op2(x2)
        size = max(o1.shape[-2:], o2.shape[-2:], key=lambda s: s[0] * s[1])
        o1, o2 = resize_to(o1, size), resize_to(o2, size)
        merged = o1 + o2 if self.merge is None else self.merge(torch.cat([o1, o2], dim=1))
        return o1, o2, merged


class SearchedFPN(nn.Module):
    """[nas-fcos] Sec. 3.2.1: 7 searched blocks over {c3, c4, c5}, then P6, P7 by strided convs.

    ``num_levels`` < 5 keeps P3..P(2 + num_levels) and builds no unused extra level
    (the CPU digits presets use P3..P5, as plain FCOS's).
    """

    def __init__(self, arch: Architecture, in_channels: Sequence[int], channels: int,
                 num_levels: int = NUM_LEVELS):
        super().__init__()
        if len(in_channels) != len(INPUTS):
            raise ValueError(f"in_channels must give the widths of {INPUTS}, got {in_channels!r}")
        check_num_levels(num_levels)
        self.num_levels = num_levels
        self.lateral = nn.ModuleList(  # [nas-fcos] Sec. 4.1: c_i to the decoder width by 1 x 1
            nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), group_norm(channels), nn.ReLU(inplace=True))
            for c in in_channels)
        self.blocks = nn.ModuleList(SearchedBlock(b, channels) for b in arch.fpn)
        self.inputs = [(b.id1, b.id2) for b in arch.fpn]
        self.dangling = dangling_outputs(arch)
        extra = num_levels - len(INPUTS)  # 0, 1 or 2 of P6, P7
        self.p6 = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if extra >= 1 else None  # [fcos]: from P5
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if extra >= 2 else None

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """(c3, c4, c5) -> [P3, ..., P(2 + num_levels)], all ``channels`` wide."""
        pool = [lateral(c) for lateral, c in zip(self.lateral, features)]
        for block, (i, j) in zip(self.blocks, self.inputs):
            pool.append(block(pool[i], pool[j])[2])
        last = pool[-3:]  # x5, x6, x7
        outputs = []
        for x, c in zip(reversed(last), features):  # x7 -> P3, x6 -> P4, x5 -> P5 ([mmdet])
            size = c.shape[-2:]
            level = resize_to(x, size)
            for t in self.dangling:  # [nas-fcos] Eq. (1), resized either way
                level = level + resize_to(pool[len(INPUTS) + t], size)
            outputs.append(level)
        if self.p6 is not None:
            outputs.append(self.p6(outputs[-1]))
        if self.p7 is not None:
            outputs.append(self.p7(F.relu(outputs[-1])))
        return outputs[:self.num_levels]


class SearchedTower(nn.Module):
    """[nas-fcos] Sec. 3.2.2-3.2.3: the searched head run on every level, with partial sharing.

    Layer 0 is the first op, layer t the t-th block. Level l uses its own copy of
    layers ``j < share_from[l]`` and the shared copy of the others.
    """

    def __init__(self, arch: Architecture, channels: int, num_levels: int = NUM_LEVELS):
        super().__init__()
        check_num_levels(num_levels)
        self.share_from = arch.share_from[:num_levels]  # the indices of unused levels are ignored
        self.inputs = [(b.id1, b.id2) for b in arch.head]

        def layer(j: int) -> nn.Module:
            return build_op(arch.head_op, channels) if j == 0 else SearchedBlock(arch.head[j - 1], channels)

        # copies[j]["shared"] and copies[j][str(level)] for the levels that own layer j
        self.copies = nn.ModuleList()
        for j in range(HEAD_LAYERS):
            owned = {str(level): layer(j) for level in range(num_levels) if j < self.share_from[level]}
            if any(j >= i for i in self.share_from):
                owned["shared"] = layer(j)
            self.copies.append(nn.ModuleDict(owned))

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        def at(j: int) -> nn.Module:
            return self.copies[j][str(level) if j < self.share_from[level] else "shared"]

        pool = [x, at(0)(x)]  # p, o0
        for j, (i1, i2) in enumerate(self.inputs, start=1):
            pool.extend(at(j)(pool[i1], pool[i2]))  # o1, o2, a
        return pool[-1]  # a5


class SearchedDecoder(nn.Module):
    """FPN + head of one architecture: the outputs of ``FCOSHead`` from (c3, c4, c5).

    Args:
        arch: a point of the search space.
        in_channels: widths of c3, c4, c5.
        num_classes: K.
        channels: decoder width ([nas-fcos] Sec. 4.1's proxy: 64).
        prior_prob: pi of the class-logit bias ([focal] Sec. 3.3).
        num_levels: L, pyramid levels from P3 (3..5; [nas-fcos]: 5).
    """

    def __init__(self, arch: Architecture, in_channels: Sequence[int], num_classes: int,
                 channels: int = 64, prior_prob: float = 0.01, num_levels: int = NUM_LEVELS):
        super().__init__()
        self.arch = arch
        self.fpn = SearchedFPN(arch, in_channels, channels, num_levels)
        self.cls_tower = SearchedTower(arch, channels, num_levels)  # [mmdet]: two towers, same structure
        self.reg_tower = SearchedTower(arch, channels, num_levels)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))  # s_l, [fcos] Sec. 3.2
        for head in (self.cls_logits, self.bbox_pred, self.centerness):
            init_normal_(head, std=0.01)  # [fcos] Sec. 4
        nn.init.constant_(self.cls_logits.bias, prior_bias(prior_prob))

    def forward(self, features: Sequence[torch.Tensor], level_sizes: Optional[List] = None):
        """(c3, c4, c5) -> cls_logits (B, N, K), box_ltrb (B, N, 4) >= 0, centerness_logits (B, N).

        ``level_sizes``, if a list, receives the L pyramid sizes (H_l, W_l) (the points need them).
        """
        cls_per_level, box_per_level, ctr_per_level = [], [], []
        for level, p in enumerate(self.fpn(features)):
            if level_sizes is not None:
                level_sizes.append(tuple(p.shape[-2:]))
            cls_per_level.append(self.cls_logits(self.cls_tower(p, level)))  # (B, K, H, W)
            reg = self.reg_tower(p, level)  # (B, C, H, W)
            box_per_level.append(F.relu(self.bbox_pred(reg) * self.scales[level]))  # (B, 4, H, W)
            ctr_per_level.append(self.centerness(reg))  # (B, 1, H, W)
        return (concat_levels(cls_per_level), concat_levels(box_per_level),
                concat_levels(ctr_per_level).squeeze(-1))
