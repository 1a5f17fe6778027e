"""fcos_from_scratch: object detection written out in plain PyTorch tensor ops.

Every primitive a modern detector needs (box formats, the IoU family, NMS and
Soft-NMS, RoIAlign, focal and IoU losses, mAP) is hand-written here and checked
against frozen reference values from torchvision, pycocotools and the VOC devkit.

Conventions (the full list, with every deliberate difference from a reference,
is in ``docs/CONVENTIONS.md``):

* boxes are ``xyxy``, float, absolute pixels, continuous coordinates:
  ``width = x2 - x1`` (no ``+ 1``);
* points are ``(x, y)``; image sizes are ``(H, W)``;
* ops keep the dtype and device of their inputs.
"""

__version__ = "0.1.0"
