"""Detection primitives in plain tensor ops, with torchvision's names and semantics.

A torchvision user changes one import::

    from fcos_from_scratch.ops import box_iou, nms, roi_align   # was: torchvision.ops

Every op is device- and dtype-agnostic and differentiable where that makes sense;
``docs/CONVENTIONS.md`` lists the few places where we deliberately differ.
"""

from .boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)
from .losses import (
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)
from .nms import batched_nms, nms, nms_reference
from .roi_align import roi_align
from .soft_nms import batched_soft_nms, soft_nms

__all__ = [
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "distance_box_iou",
    "generalized_box_iou",
    "remove_small_boxes",
    "complete_box_iou_loss",
    "distance_box_iou_loss",
    "generalized_box_iou_loss",
    "sigmoid_focal_loss",
    "roi_align",
    "nms",
    "batched_nms",
    "nms_reference",
    "soft_nms",
    "batched_soft_nms",
]

# Shared detection machinery (box coding, multi-scale pooling), torchvision names.
from .box_coders import BoxCoder, BoxLinearCoder, decode_ltrb, encode_ltrb
from .poolers import MultiScaleRoIAlign, map_levels

__all__ += [
    "BoxCoder",
    "BoxLinearCoder",
    "encode_ltrb",
    "decode_ltrb",
    "MultiScaleRoIAlign",
    "map_levels",
]
