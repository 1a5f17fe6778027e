"""From a :class:`TrainConfig` to the objects a run needs: device, model, data, evaluator.

These are the only places where the trainer, ``predict`` and ``evaluate`` touch
the model, data and evaluation packages, so the three entry points build things
the same way.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import TrainConfig

VOC_HELP = """PASCAL VOC was not found under {root} (expected {root}/VOCdevkit/VOC2007 and VOC2012).

Fetch it once (about 2.8 GB; the script resumes and checks MD5 sums):

    python data_scripts/download_voc.py --root {root}

then train with

    python -m fcos_from_scratch.train --preset=voc_r18 --data_root={root}

or start with the embedded digits dataset, which needs no download:

    python -m fcos_from_scratch.train
"""

COCO_HELP = """COCO was not found under {root} (expected annotations/instances_<split>2017.json).

Fetch it with:  python data_scripts/download_coco.py --root {root}
"""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; an unavailable CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:i]' or 'mps', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use --device=cpu")
    return device


def build_model(config: TrainConfig) -> torch.nn.Module:
    """The detector described by ``config`` (``models.build_model`` with its fields)."""
    from ..models import build_model as _build

    frozen_bn = {"auto": None, "true": True, "false": False}[config.frozen_bn]
    kwargs = dict(
        backbone=config.backbone,
        num_classes=config.num_classes,
        fpn_channels=config.fpn_channels,
        num_levels=config.num_levels,
        head_convs=config.head_convs,
        sizes_of_interest=tuple(config.sizes_of_interest),
        centerness_weight=config.centerness_weight,
        per_class_topk=config.per_class_topk,
    )
    if frozen_bn is not None:
        kwargs["frozen_bn"] = frozen_bn
    if config.pretrained:
        kwargs["pretrained"] = config.pretrained
    return _build(config.model, **kwargs)


def data_root(config: TrainConfig) -> Path:
    """``config.data_root``, or the data package's default location."""
    from ..data import default_data_root

    return Path(config.data_root).expanduser() if config.data_root else default_data_root()


def build_dataset(config: TrainConfig, split: str, train: bool) -> Dataset:
    """One split of ``config.dataset``; a missing VOC/COCO prints how to fetch it.

    Raises:
        SystemExit: VOC (or COCO) requested but not found on disk.
    """
    from .. import data

    root = data_root(config)
    try:
        dataset = data.build_dataset(
            config.dataset, split, root=root, train=train, augment=config.augment and train,
            min_size=config.min_size, max_size=config.max_size, epochs=config.epochs,
            no_aug_epochs=config.no_aug_epochs)
    except FileNotFoundError as err:
        if config.dataset == "voc":
            raise SystemExit(VOC_HELP.format(root=root) + f"\n({err})") from err
        if config.dataset == "coco":
            raise SystemExit(COCO_HELP.format(root=root) + f"\n({err})") from err
        raise
    if len(dataset.class_names) != config.num_classes:
        raise ValueError(f"num_classes={config.num_classes} but {config.dataset} has "
                         f"{len(dataset.class_names)} classes; pass --num_classes="
                         f"{len(dataset.class_names)}")
    return dataset


def collate_fn() -> Callable:
    """The data package's collate (pads to a multiple of 32, keeps true sizes)."""
    from ..data import collate_detection

    return collate_detection


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Any = None,
    shuffle: bool = False,
    num_workers: int = 0,
    collate: Optional[Callable] = None,
) -> DataLoader:
    """A ``DataLoader`` with the project's collate.

    Workers are not persistent: each epoch's workers copy the dataset afresh, so
    ``set_epoch`` (augmentation off for the last epochs) reaches them.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=num_workers,
        collate_fn=collate or collate_fn(),
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


def build_evaluator(dataset: Dataset, config: TrainConfig) -> Any:
    """A fresh :class:`fcos_from_scratch.evaluation.DetectionEvaluator` for ``dataset``."""
    from ..evaluation import DetectionEvaluator

    return DetectionEvaluator(num_classes=config.num_classes)  # labels 0..K-1 as categories


def set_epoch(dataset: Dataset, epoch: int, augment: bool) -> None:
    """Tell the dataset which epoch starts (its transforms switch augmentation off
    for the last ``no_aug_epochs``, seed 003); datasets without ``set_epoch`` but
    with an ``augment`` attribute get it set to ``augment``."""
    target = getattr(dataset, "dataset", dataset)  # Subset wrappers
    if callable(getattr(target, "set_epoch", None)):
        target.set_epoch(epoch)
    elif hasattr(target, "augment"):
        target.augment = augment


def class_names(dataset: Dataset) -> Tuple[str, ...]:
    """The dataset's class names, if it has them (saved into checkpoints for predict)."""
    target = getattr(dataset, "dataset", dataset)
    names = getattr(target, "classes", None) or getattr(target, "class_names", None)
    return tuple(str(n) for n in names) if names else ()
