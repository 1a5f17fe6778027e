"""The FCOS head: two conv towers shared by all pyramid levels ([fcos] Sec. 3.1-3.3).

For every level P_l the same weights compute::

    P_l --[3x3 conv, GroupNorm, ReLU] x num_convs--> cls tower --3x3--> K class logits
    P_l --[3x3 conv, GroupNorm, ReLU] x num_convs--> reg tower --3x3--> 4 ltrb distances
                                                               \\--3x3--> 1 centerness logit

* Class logits start at the prior probability pi = 0.01 ([focal] Sec. 3.3): the
  bias is ``-log((1 - pi) / pi)`` so the focal loss of the ~all-background start
  is small and training is stable.
* Box regression: the distances are in units of the level's stride (see
  ``fcos_targets``). One learnable scalar ``s_l`` per level ([fcos] Sec. 3.2,
  "exp(s_i x)") lets shared weights serve different ranges. Two activations:
  ``"relu"`` = ``relu(s_l * x)`` (the FCOS code with normalised targets and
  torchvision, the default) or ``"exp"`` = ``exp(s_l * x)`` (the paper; positive
  by construction, never stuck at 0).
* Centerness sits on the regression tower ([fcos-imp]; it was on the
  classification tower in [fcos]); its bias starts at 0 (seed 001 found this
  helped its loss converge), i.e. predicted centerness 0.5.

Papers:
    [fcos] Tian et al., ICCV 2019.  [fcos-imp] Tian et al., TPAMI 2022.
    [focal] Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
"""

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

REG_ACTIVATIONS = ("relu", "exp")
MAX_EXP_INPUT = math.log(1e4)  # exp regression is capped at 10^4 strides (no overflow)


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with 32 groups ([gn] default), fewer when ``channels`` is not divisible."""
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


def conv_tower(channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, GroupNorm, ReLU), width-preserving."""
    layers = []
    for _ in range(num_convs):
        # In-place ReLU is safe after GroupNorm (its backward needs its input, not its
        # output) and saves one feature-map-sized tensor per layer.
        layers += [nn.Conv2d(channels, channels, 3, padding=1), group_norm(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def flatten_level(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), points row-major like ``make_points``."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class FCOSHead(nn.Module):
    """Classification, box and centerness predictions for every point of every level.

    Args:
        in_channels: width of the pyramid levels.
        num_classes: K foreground classes (no background logit).
        num_levels: L, one learnable regression scale each.
        num_convs: convs per tower ([fcos]: 4; fewer is faster on a CPU).
        prior_prob: pi of the class-logit bias ([focal] Sec. 3.3: 0.01).
        reg_activation: "relu" or "exp" (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_levels: int,
        num_convs: int = 4,
        prior_prob: float = 0.01,
        reg_activation: str = "relu",
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_levels < 1 or num_convs < 0:
            raise ValueError(
                f"need num_classes >= 1, num_levels >= 1, num_convs >= 0; got "
                f"{num_classes}, {num_levels}, {num_convs}"
            )
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        if reg_activation not in REG_ACTIVATIONS:
            raise ValueError(f"reg_activation must be one of {REG_ACTIVATIONS}, got {reg_activation!r}")
        self.num_classes = num_classes
        self.reg_activation = reg_activation
        self.cls_tower = conv_tower(in_channels, num_convs)
        self.reg_tower = conv_tower(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))  # s_l, [fcos] Sec. 3.2
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # [fcos] Sec. 4: N(0, 0.01), bias 0
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(
        self, features: Sequence[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run both towers on every level and concatenate the levels.

        Args:
            features: L tensors (B, C, H_l, W_l), finest first.

        Returns:
            cls_logits (B, N, K), box_ltrb (B, N, 4) non-negative distances in
            strides, centerness_logits (B, N); N = sum_l H_l * W_l in level order.
        """
        if len(features) != self.scales.numel():
            raise ValueError(f"expected {self.scales.numel()} pyramid levels, got {len(features)}")
        cls_per_level: List[torch.Tensor] = []
        box_per_level: List[torch.Tensor] = []
        ctr_per_level: List[torch.Tensor] = []
        for level, feature in enumerate(features):
            cls_per_level.append(flatten_level(self.cls_logits(self.cls_tower(feature))))  # (B, HW, K)
            reg_feature = self.reg_tower(feature)  # (B, C, H, W)
            raw = self.bbox_pred(reg_feature) * self.scales[level]  # (B, 4, H, W)
            if self.reg_activation == "exp":
                box = torch.exp(raw.clamp(max=MAX_EXP_INPUT))
            else:
                box = torch.relu(raw)
            box_per_level.append(flatten_level(box))  # (B, HW, 4)
            ctr_per_level.append(flatten_level(self.centerness(reg_feature)))  # (B, HW, 1)
        return (
            torch.cat(cls_per_level, dim=1),  # (B, N, K)
            torch.cat(box_per_level, dim=1),  # (B, N, 4)
            torch.cat(ctr_per_level, dim=1).squeeze(-1),  # (B, N)
        )
