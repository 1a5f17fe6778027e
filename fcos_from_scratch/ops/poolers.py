"""Multi-scale RoIAlign: pool every RoI from the pyramid level that suits its size.

With a feature pyramid, a small RoI should be pooled from a fine level and a big
one from a coarse level, so that every pooled grid covers about the same number of
feature cells. [fpn] Eq. (1) assigns an RoI of width w and height h (image
pixels) to level

    k = floor(k0 + log2(sqrt(w h) / 224))

where 224 is the canonical ImageNet size and k0 = 4 the level an RoI of that
size uses, clamped to the levels available. The pooling itself is
:func:`~fcos_from_scratch.ops.roi_align` (legacy ``aligned=False``, as torchvision's
pooler) at the scale of the chosen level.

Names, defaults and rules follow ``torchvision.ops.MultiScaleRoIAlign``
([torchvision]): the eps of 1e-6 in the floor, the level scales inferred from the
feature and image sizes as powers of two, the order of feature maps taken from the
input dict. ``docs/CONVENTIONS.md`` lists where we deliberately differ.
"""

import math
import numbers
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import nn

from ._checks import check_boxes, check_tensor
from .boxes import box_area
from .roi_align import SUMMATIONS, roi_align

__all__ = ["map_levels", "infer_scale", "MultiScaleRoIAlign"]

CANONICAL_SCALE = 224  # [fpn] Eq. (1): the ImageNet pre-training size
CANONICAL_LEVEL = 4  # [fpn] Eq. (1): k0, the level of a 224 x 224 RoI
LEVEL_EPS = 1e-6  # [torchvision]: sqrt(wh) = 224 * 2^j lands on level k0 + j despite rounding


def map_levels(
    boxes: Union[torch.Tensor, Sequence[torch.Tensor]],
    k_min: int,
    k_max: int,
    canonical_scale: float = CANONICAL_SCALE,
    canonical_level: int = CANONICAL_LEVEL,
    eps: float = LEVEL_EPS,
) -> torch.Tensor:
    """The pyramid level of every box, as an index into the levels k_min..k_max.

    ``k = clamp(floor(k0 + log2(sqrt(w h) / s0) + eps), k_min, k_max)`` ([fpn]
    Eq. (1)), computed in the boxes' dtype; a box of zero area goes to ``k_min``.

    Args:
        boxes: (N, 4) xyxy image pixels, or a list of such tensors (concatenated).
        k_min, k_max: the finest and coarsest available levels (e.g. 2 and 5 for P2-P5).
        canonical_scale: s0, the RoI size that maps to ``canonical_level``.
        canonical_level: k0.
        eps: added before the floor, so exact powers of two are not lost to rounding.

    Returns:
        (N,) int64 ``k - k_min`` in [0, k_max - k_min] (torchvision's ``LevelMapper``).
    """
    if isinstance(boxes, (list, tuple)):
        if not boxes:
            raise ValueError("boxes is an empty list; pass an (N, 4) tensor or (N_i, 4) tensors")
        boxes = torch.cat([check_boxes(f"boxes[{i}]", b) for i, b in enumerate(boxes)])
    check_boxes("boxes", boxes)
    if k_min > k_max:
        raise ValueError(f"k_min ({k_min}) must be <= k_max ({k_max})")
    # box_area rejects NaN/inf coordinates and reads an inverted box as empty (area 0,
    # the rule of docs/CONVENTIONS.md), which maps to the finest level, like any empty box.
    areas = box_area(boxes)  # (N,)
    size = torch.sqrt(areas)  # (N,) sqrt(w h)
    eps = torch.tensor(eps, dtype=size.dtype, device=size.device)
    levels = torch.floor(canonical_level + torch.log2(size / canonical_scale) + eps)  # (N,)
    levels = torch.clamp(levels, min=k_min, max=k_max)
    return levels.to(torch.int64) - k_min


def infer_scale(feature_size: Tuple[int, int], image_size: Tuple[int, int]) -> float:
    """The spatial scale of a feature map, assumed to be ``2 ** -k``.

    ``2 ** round(log2(H_feature / H_image))`` (in float32, as torchvision; only the
    heights are used), so a padded or odd-sized map still gets an exact power of two.

    Args:
        feature_size: (H_l, W_l) of the feature map.
        image_size: (H, W) of the (largest) input image.

    Returns:
        The scale, e.g. 0.125 for a stride-8 map.
    """
    ratio = float(feature_size[0]) / float(image_size[0])
    return 2 ** float(torch.tensor(ratio, dtype=torch.float32).log2().round())


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over a feature pyramid, each RoI from its [fpn] Eq. (1) level.

    The scales of the levels are inferred at every call from the feature-map sizes
    and the largest image size (:func:`infer_scale`); their log2 gives k_min and
    k_max. With a single feature map, every RoI is pooled from it.

    Args:
        featmap_names: keys of the input dict to pool from; they are used in the
            order of the dict, finest level first (as torchvision).
        output_size: ``PH`` or ``(PH, PW)``.
        sampling_ratio: samples per bin per axis; <= 0 means adaptive.
        canonical_scale: s0 of [fpn] Eq. (1).
        canonical_level: k0 of [fpn] Eq. (1).
        summation: ``roi_align``'s "fused" (default) or "kernel" (torchvision's
            float32 bits, slower).

    Attributes:
        scales: the scales of the last call, finest first (None before any call).
    """

    def __init__(self, featmap_names: Sequence[str], output_size: Union[int, Sequence[int]],
                 sampling_ratio: int, *, canonical_scale: float = CANONICAL_SCALE,
                 canonical_level: int = CANONICAL_LEVEL, summation: str = "fused") -> None:
        super().__init__()
        if summation not in SUMMATIONS:
            raise ValueError(f"summation must be one of {SUMMATIONS}, got {summation!r}")
        if isinstance(output_size, numbers.Integral):
            output_size = (output_size, output_size)
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair (PH, PW), got {output_size!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = tuple(int(v) for v in output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.summation = summation
        self.scales = None

    def _setup_scales(self, features: List[torch.Tensor],
                      image_shapes: Sequence[Tuple[int, int]]) -> Tuple[List[float], int, int]:
        """Scales of the levels and the level numbers k_min, k_max."""
        if not image_shapes:
            raise ValueError("image_shapes must list the (H, W) of at least one image")
        largest = (max(int(s[0]) for s in image_shapes), max(int(s[1]) for s in image_shapes))
        scales = [infer_scale(f.shape[-2:], largest) for f in features]
        k_min = int(-math.log2(scales[0]))
        k_max = int(-math.log2(scales[-1]))
        if len(features) > 1 and k_max - k_min + 1 != len(features):
            # torchvision would silently return zeros for the RoIs of a missing level.
            raise ValueError(
                f"the feature maps must be consecutive pyramid levels, finest first; their "
                f"inferred scales are {scales} (featmap_names {self.featmap_names})"
            )
        return scales, k_min, k_max

    def forward(self, x: Dict[str, torch.Tensor], boxes: Sequence[torch.Tensor],
                image_shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """Pool every box from its level.

        Args:
            x: feature maps (B, C, H_l, W_l) by name, same C; entries not in
                ``featmap_names`` are skipped.
            boxes: B tensors (N_i, 4) xyxy in image pixels (not feature pixels).
            image_shapes: B sizes (H, W) of the images before the backbone.

        Returns:
            (sum N_i, C, PH, PW) pooled features in the order of ``boxes``, dtype of
            the first feature map.
        """
        if not isinstance(boxes, (list, tuple)):
            raise ValueError("boxes must be a list of (N_i, 4) tensors, one per image, got "
                             f"{type(boxes).__name__}")
        features = [value for name, value in x.items() if name in self.featmap_names]
        if not features:
            raise ValueError(f"x has none of the featmap_names {self.featmap_names}; "
                             f"its keys are {list(x)}")
        for name, value in x.items():
            if name in self.featmap_names:
                check_tensor(f"x[{name!r}]", value)
        scales, k_min, k_max = self._setup_scales(features, image_shapes)
        self.scales = scales

        if not boxes:
            raise ValueError("boxes must hold one (N_i, 4) tensor per image, got an empty list")
        rois = []
        for index, boxes_in_image in enumerate(boxes):
            check_boxes(f"boxes[{index}]", boxes_in_image)
            batch_index = torch.full_like(boxes_in_image[:, :1], index)  # (N_i, 1)
            rois.append(torch.cat([batch_index, boxes_in_image], dim=1))  # (N_i, 5)
        rois = torch.cat(rois)  # (K, 5) [batch_index, x1, y1, x2, y2]
        pool = dict(output_size=self.output_size, sampling_ratio=self.sampling_ratio, summation=self.summation)
        if len(features) == 1:
            return roi_align(features[0], rois, spatial_scale=scales[0], **pool)

        levels = map_levels(rois[:, 1:], k_min, k_max, self.canonical_scale,
                            self.canonical_level)  # (K,)
        first = features[0]
        result = first.new_zeros((len(rois), first.shape[1]) + self.output_size)  # (K, C, PH, PW)
        for level, (feature, scale) in enumerate(zip(features, scales)):
            in_level = torch.where(levels == level)[0]
            pooled = roi_align(feature, rois[in_level], spatial_scale=scale, **pool)
            result[in_level] = pooled.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
                f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})")
