"""Detection primitives in plain tensor ops, with torchvision's names and semantics.

A torchvision user changes one import::

    from fcos_from_scratch.ops import box_iou, nms, roi_align   # was: torchvision.ops

Every op is device- and dtype-agnostic and differentiable where that makes sense;
``docs/CONVENTIONS.md`` lists the few places where we deliberately differ. Beside
each fast op lives its plain, obviously-correct loop (``*_reference``), which the
tests compare with it and the lessons teach from.
"""

from .box_coders import BoxCoder, BoxLinearCoder, decode_ltrb, encode_ltrb
from .boxes import (
    box_area,
    box_convert,
    box_iou,
    box_iou_reference,
    elementwise_box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
    generalized_box_iou_reference,
    remove_small_boxes,
    scale_boxes,
)
from .deform_conv import DeformConv2d, deform_conv2d, deform_conv2d_reference
from .label_weighting import (
    class_weights_from_counts,
    iou_guided_sample_weights,
    iou_guided_soft_labels,
)
from .losses import (
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    soft_label_cross_entropy,
)
from .nms import batched_nms, batched_nms_reference, nms, nms_reference
from .poolers import MultiScaleRoIAlign, map_levels
from .roi_align import roi_align, roi_align_reference
from .soft_nms import batched_soft_nms, soft_nms, soft_nms_reference

__all__ = [
    # boxes and the IoU family
    "box_area",
    "box_convert",
    "box_iou",
    "box_iou_reference",
    "elementwise_box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "distance_box_iou",
    "generalized_box_iou",
    "generalized_box_iou_reference",
    "remove_small_boxes",
    "scale_boxes",
    # losses
    "complete_box_iou_loss",
    "distance_box_iou_loss",
    "generalized_box_iou_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "soft_label_cross_entropy",
    # soft labels, sample and class weights for a softmax loss
    "iou_guided_soft_labels",
    "iou_guided_sample_weights",
    "class_weights_from_counts",
    # suppression
    "nms",
    "batched_nms",
    "nms_reference",
    "batched_nms_reference",
    "soft_nms",
    "batched_soft_nms",
    "soft_nms_reference",
    # pooling
    "roi_align",
    "roi_align_reference",
    "MultiScaleRoIAlign",
    "map_levels",
    # deformable convolution
    "deform_conv2d",
    "deform_conv2d_reference",
    "DeformConv2d",
    # box coding
    "BoxCoder",
    "BoxLinearCoder",
    "encode_ltrb",
    "decode_ltrb",
]
