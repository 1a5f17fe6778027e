"""Detection evaluation: COCO and VOC mAP that agree with the reference tools.

* :func:`coco_eval` -- pycocotools' ``COCOeval`` (bbox), same numbers, vectorised;
* :func:`voc_eval` -- the PASCAL VOC devkit's rules, 07/all-point, legacy/continuous;
* :class:`DetectionEvaluator` -- update/compute for the training loop;
* :mod:`.io` -- COCO json files and conversions from/to per-image dicts;
* :mod:`.report` -- the 12-line summary, per-class table, PR-curve PNG;
* :mod:`.tide` -- TIDE-style error breakdown for teaching.
"""

from .coco import STAT_KEYS, CocoEvaluation, coco_eval, evaluate_coco
from .io import (
    coco_to_detections,
    detections_to_coco,
    load_coco_gt,
    load_coco_results,
    save_coco_results,
    targets_to_coco,
)
from .streaming import DetectionEvaluator
from .tide import tide_errors
from .voc import voc_eval

__all__ = [
    "STAT_KEYS",
    "CocoEvaluation",
    "DetectionEvaluator",
    "coco_eval",
    "coco_to_detections",
    "detections_to_coco",
    "evaluate_coco",
    "load_coco_gt",
    "load_coco_results",
    "save_coco_results",
    "targets_to_coco",
    "tide_errors",
    "voc_eval",
]
