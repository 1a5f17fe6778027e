"""``build_dataset(name, split, ...)``: one entry point for "digits", "digits_imbalanced",
"voc" and "coco".

Default locations (``root=None`` or ``""``): ``$FCOS_DATA_ROOT`` if set, else
``~/.cache/fcos_from_scratch``. There ``digits`` (and ``digits_imbalanced``, the same
generator with digit d drawn with probability ∝ 0.6^d, in its own folder) is
generated on first use; ``voc``
expects ``VOCdevkit/`` and ``coco`` expects ``annotations/instances_<split>2017.json``
plus ``<split>2017/`` (the download scripts in ``data_scripts/`` put them there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

from .coco import CocoDetection
from .color import ColorJitter, SVHNColorPolicy
from .digits import IMBALANCED_DIGITS, DigitsConfig, DigitsDetection
from .ssd_augment import fixed_size_resize, ssd_augmentation
from .transforms import AugmentSchedule, HorizontalFlip, Normalize, RandomAffine, RandomCrop, Resize
from .voc import VOC_SPLITS, VOCDetection

DATASETS = ("digits", "digits_imbalanced", "voc", "coco")
DIGITS_DATASETS = ("digits", "digits_imbalanced")  # drawn digits: never mirrored
# name -> generator settings of the drawn datasets (each cached in root/<name>/<split>)
DIGITS_CONFIGS = {"digits": DigitsConfig(), "digits_imbalanced": IMBALANCED_DIGITS}
AUGMENTATIONS = ("default", "ssd")
AUGMENT_P = 0.3  # [fcos-light]: each augmentation fires for 30 % of the images


def default_data_root() -> Path:
    """``$FCOS_DATA_ROOT`` or ``~/.cache/fcos_from_scratch``."""
    return Path(os.environ.get("FCOS_DATA_ROOT") or "~/.cache/fcos_from_scratch").expanduser()


def allows_flip(name: str) -> bool:
    """Whether a mirrored image is still a sample of dataset ``name`` (not for digits)."""
    return name not in DIGITS_DATASETS


def build_transforms(name: str, train: bool, augment: bool = True, min_size: Union[int, Tuple[int, ...]] = 0,
                     max_size: int = 0, epochs: int = 0, no_aug_epochs: int = 0,
                     normalize: bool = False, augmentation: str = "default",
                     input_size: int = 0) -> AugmentSchedule:
    """The pipeline of a dataset.

    ``augmentation="default"``, training with ``augment``: SVHN colour policy (digits)
    or colour jitter, random crop (VOC/COCO), resize, horizontal flip (not for digits:
    a mirrored digit is not a digit) and random affine (digits), each with
    probability 0.3. ``augmentation="ssd"``: SSD's photometric distortion, zoom out,
    min-IoU crop and flip where allowed (``data/ssd_augment.py``, [ssd]); it needs
    ``input_size``. Augmentation stops for the last ``no_aug_epochs`` of ``epochs``
    (as in [digits-lab]).

    Then, for training and evaluation alike: ``input_size > 0`` resizes every image
    to ``input_size`` × ``input_size`` (boxes scaled; [refinedetlite] uses 320);
    otherwise ``min_size > 0`` resizes the shorter side, and ``min_size = 0`` keeps
    the image size ([digits-lab] kept the lab's native resolution). ``normalize`` adds
    ImageNet normalisation at the end. Evaluation is a pure resize, so detections
    map back to the original image exactly.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 0:
        raise ValueError(f"input_size must be an int >= 0 (0 = the dataset's own sizes), got {input_size!r}")
    if input_size and min_size:
        raise ValueError(f"input_size={input_size} and min_size={min_size} both resize: set one of them")
    if augmentation == "ssd" and not input_size:
        raise ValueError("augmentation='ssd' needs input_size > 0: zoom out and crops change the "
                         "image size, and SSD trains at a fixed size (e.g. input_size=320)")
    always = []
    if input_size:
        always.append(fixed_size_resize(input_size))
    elif min_size:
        always.append(Resize(min_size, max_size or 1333))
    if normalize:
        always.append(Normalize())
    if not (train and augment):
        return AugmentSchedule([], always)
    if augmentation == "ssd":
        steps = [ssd_augmentation(allow_flip=allows_flip(name))]
    elif name in DIGITS_DATASETS:
        steps = [SVHNColorPolicy(p=AUGMENT_P), ColorJitter(p=AUGMENT_P), RandomAffine(p=AUGMENT_P)]
    else:
        steps = [ColorJitter(p=AUGMENT_P), RandomCrop(p=AUGMENT_P), HorizontalFlip(p=AUGMENT_P)]
    return AugmentSchedule(steps, always, total_epochs=epochs, off_last_epochs=no_aug_epochs)


def build_dataset(name: str, split: str, root: Optional[Union[str, Path]] = None, *,
                  train: Optional[bool] = None, transforms=None, augment: bool = True,
                  min_size=0, max_size: int = 0, epochs: int = 0, no_aug_epochs: int = 0,
                  normalize: bool = False, skip_bad: bool = False, augmentation: str = "default",
                  input_size: int = 0, **kwargs):
    """Build a dataset by name.

    Args:
        name: ``"digits"``, ``"digits_imbalanced"``, ``"voc"`` or ``"coco"``.
        split: digits ``train``/``val``/``test``; VOC ``train`` (= 07+12 trainval) or
            ``test`` (= 07 test); COCO ``train``/``val`` (= ``train2017``/``val2017``)
            or any ``<name>`` with ``annotations/instances_<name>.json``.
        root: data folder (default :func:`default_data_root`).
        train: training mode (augmentation; VOC drops difficult, COCO drops crowd);
            default ``split.startswith("train")``.
        transforms: override the default pipeline from :func:`build_transforms`.
        augmentation, input_size: see :func:`build_transforms`.
        kwargs: passed to the dataset class (digits: ``config=DigitsConfig(...)``;
            VOC: ``image_sets=...``; COCO: ``ann_file=``, ``image_dir=``).

    Returns:
        A :class:`~fcos_from_scratch.data.common.DetectionDataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    root = Path(root).expanduser() if root else default_data_root()
    train = split.startswith("train") if train is None else train
    if transforms is None:
        transforms = build_transforms(name, train, augment, min_size, max_size, epochs, no_aug_epochs,
                                      normalize, augmentation, input_size)
    if name in DIGITS_DATASETS:
        config = kwargs.pop("config", DIGITS_CONFIGS[name])
        return DigitsDetection(root, split, config, transforms, skip_bad, name=name, **kwargs)
    if name == "voc":
        image_sets = kwargs.pop("image_sets", None)
        if image_sets is None:
            if split not in VOC_SPLITS:
                raise ValueError(f"VOC split must be one of {tuple(VOC_SPLITS)}, got {split!r}")
            image_sets = VOC_SPLITS[split]
        return VOCDetection(root, image_sets, transforms, skip_bad, keep_difficult=not train, **kwargs)
    folder = {"train": "train2017", "val": "val2017", "test": "val2017"}.get(split, split)
    ann_file = kwargs.pop("ann_file", root / "annotations" / f"instances_{folder}.json")
    image_dir = kwargs.pop("image_dir", root / folder)
    return CocoDetection(image_dir, ann_file, transforms, skip_bad, keep_crowd=not train,
                         name=f"coco {folder}", **kwargs)
