"""Datasets, box-aware transforms and batching.

Three datasets behind one factory::

    from fcos_from_scratch.data import build_dataset, collate_detection
    train = build_dataset("digits", "train")          # generated on first use, no download
    voc = build_dataset("voc", "test", root="~/data")  # VOCdevkit/VOC2007 test
    image, target = train[0]                           # (3, H, W) in [0, 1]; target dict

The item contract, bad-input rules and the summary of what was skipped are in
``data/common.py``; coordinate conversions at each edge are in ``voc.py`` and
``coco.py``; ``python -m fcos_from_scratch.data.show --dataset digits`` draws a grid
of augmented samples.
"""

from .batching import DetectionBatch, collate_detection, pad_images
from .coco import CocoDetection
from .common import BadSampleError, DetectionDataset, LoadReport, load_image
from .digits import DIGIT_CLASSES, IMBALANCED_DIGITS, DigitsConfig, DigitsDetection
from .registry import DATASETS, build_dataset, build_transforms, default_data_root
from .ssd_augment import Expand, MinIoURandomCrop, PhotometricDistort, ssd_augmentation
from .voc import VOC_CLASSES, VOCDetection

__all__ = [
    "DetectionBatch", "collate_detection", "pad_images",
    "CocoDetection", "VOCDetection", "DigitsDetection", "DigitsConfig", "IMBALANCED_DIGITS",
    "PhotometricDistort", "Expand", "MinIoURandomCrop", "ssd_augmentation",
    "BadSampleError", "DetectionDataset", "LoadReport", "load_image",
    "DIGIT_CLASSES", "VOC_CLASSES", "DATASETS",
    "build_dataset", "build_transforms", "default_data_root",
]
