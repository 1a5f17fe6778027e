"""From a :class:`RunConfig` to the objects a run needs: device, model, data, evaluator.

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

from ..config import RunConfig

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


def build_run_model(config: RunConfig) -> torch.nn.Module:
    """The detector ``config.train.model`` built from ``config.model`` (through the registry),
    with the weights of ``init_from`` if set (fine-tuning: weights only)."""
    from ..models import build_detector

    model = build_detector(config.train.model, config.model)
    if config.train.init_from:
        init_weights(model, config.train.init_from)
    return model


def init_weights(model: torch.nn.Module, checkpoint: str) -> Tuple[list, list]:
    """Load the weights of a trainer checkpoint whose names and shapes match ``model``.

    Fine-tuning on another dataset changes the class count, so tensors whose shape
    differs (the class logits) keep their fresh initialisation; both lists are
    returned and printed.

    Returns:
        (loaded keys, skipped keys).
    """
    from .checkpoint import load_checkpoint

    try:
        state = load_checkpoint(checkpoint, map_location="cpu")["model"]
    except FileNotFoundError:
        raise ValueError(f"init_from={checkpoint!r}: no such checkpoint file") from None
    except ValueError as err:
        raise ValueError(f"init_from: {err}") from None
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(loaded))
    if not loaded:
        raise ValueError(f"init_from={checkpoint!r}: no tensor matches this model's names and shapes")
    model.load_state_dict(loaded, strict=False)
    if skipped:
        print(f"init_from: {len(loaded)} tensors loaded, {len(skipped)} kept fresh "
              f"({', '.join(skipped[:6])}{', ...' if len(skipped) > 6 else ''})")
    return sorted(loaded), skipped


def class_box_counts(dataset: Dataset, num_classes: int) -> Tuple[int, ...]:
    """Boxes per class 0..K-1 in ``dataset`` (from its records when it has them, else by loading it).

    The counts M_i of [refinedetlite] Eq. (5): class weights from the training
    split's label frequencies.
    """
    target = getattr(dataset, "dataset", dataset)
    records = getattr(target, "records", None)
    if records is not None and all("target" in r for r in records) and target is dataset:
        labels = [r["target"]["labels"] for r in records]
    else:  # a Subset or a dataset without records: read every sample once
        labels = [dataset[index][1]["labels"] for index in range(len(dataset))]
    labels = torch.cat([torch.as_tensor(label, dtype=torch.int64).reshape(-1) for label in labels]) \
        if labels else torch.zeros(0, dtype=torch.int64)
    return tuple(int(n) for n in torch.bincount(labels, minlength=num_classes)[:num_classes])


def fill_class_counts(config: RunConfig, model: torch.nn.Module, train_set: Dataset) -> RunConfig:
    """Give a detector that weights classes by frequency the training split's box counts.

    A detector config with ``class_weight_max > 0`` and empty ``class_counts`` (e.g.
    RefineDetLite's class weights, [refinedetlite] Eq. (5)) gets them here, from the
    split it trains on; the returned config carries them (so ``config.json`` and the
    checkpoints record them) and ``model.set_class_counts`` receives them.
    """
    detector = config.model
    if detector is None or not getattr(detector, "class_weight_max", 0) or getattr(detector, "class_counts", None):
        return config
    counts = class_box_counts(train_set, detector.num_classes)
    if min(counts) == 0:
        raise ValueError(f"class weights need every class in the training split; box counts per class: {counts}")
    model.set_class_counts(counts)
    return config.replace(class_counts=counts)


def data_root(config: RunConfig) -> Path:
    """``config.data_root``, or the data package's default location."""
    from ..data import default_data_root

    return Path(config.data_root).expanduser() if config.data_root else default_data_root()


def build_split(config: RunConfig, split: str, train: bool, class_hint: str = "") -> Dataset:
    """One split of ``config.dataset``; a missing VOC/COCO prints how to fetch it.

    Args:
        class_hint: what to advise when the class counts differ (default: the
            trainer's ``--num_classes=K``).

    Raises:
        SystemExit: VOC (or COCO) requested but not found on disk.
        ValueError: the dataset has another number of classes than ``num_classes``.
    """
    from .. import data

    root = data_root(config)
    try:
        dataset = data.build_dataset(
            config.dataset, split, root=root, train=train, augment=config.augment and train,
            min_size=config.min_size, max_size=config.max_size, epochs=config.epochs,
            no_aug_epochs=config.no_aug_epochs, skip_bad=config.skip_bad,
            augmentation=config.augmentation, input_size=config.input_size)
    except FileNotFoundError as err:
        if config.dataset == "voc":
            raise SystemExit(VOC_HELP.format(root=root) + f"\n({err})") from err
        if config.dataset == "coco":
            raise SystemExit(COCO_HELP.format(root=root) + f"\n({err})") from err
        raise
    if config.model is not None and len(dataset.class_names) != config.num_classes:
        hint = class_hint or f"pass --num_classes={len(dataset.class_names)}"
        raise ValueError(f"num_classes={config.num_classes} but {config.dataset} has "
                         f"{len(dataset.class_names)} classes; {hint}")
    return dataset


def collate_fn() -> Callable:
    """The data package's collate (pads to a multiple of 32, keeps true sizes)."""
    from ..data import collate_detection

    return collate_detection


def image_sizes(dataset: Dataset) -> Optional[list]:
    """The (H, W) of every image of ``dataset`` before transforms, if it records them."""
    target = getattr(dataset, "dataset", dataset)
    records = getattr(target, "records", None)
    if records is None or (target is not dataset and hasattr(dataset, "indices")):
        return None  # unknown, or a Subset whose indices would need remapping
    try:
        return [tuple(record["size"]) for record in records]
    except (KeyError, TypeError):
        return None


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Any = None,
    shuffle: bool = False,
    num_workers: int = 0,
    collate: Optional[Callable] = None,
    group_by_size: int = 0,
    seed: int = 0,
) -> DataLoader:
    """A ``DataLoader`` with the project's collate.

    With ``group_by_size = k > 0`` (and a dataset that records its image sizes),
    batches hold images of similar size (:class:`~fcos_from_scratch.data.batching.GroupedBatchSampler`
    over windows of k batches), so less of each padded batch is padding. Workers
    are not persistent: each epoch's workers copy the dataset afresh, so
    ``set_epoch`` (augmentation off for the last epochs) reaches them. Workers
    ignore SIGINT: Ctrl-C reaches the training process, which checkpoints and
    stops, instead of killing a worker mid-batch.
    """
    from ..data.batching import GroupedBatchSampler

    sizes = image_sizes(dataset) if group_by_size > 0 else None
    if sizes is not None:
        if sampler is None:
            sampler = (torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
                       if shuffle else torch.utils.data.SequentialSampler(dataset))
        batches = GroupedBatchSampler(sampler, sizes, batch_size, group_by_size, seed=seed)
        return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                          collate_fn=collate or collate_fn(), pin_memory=torch.cuda.is_available(),
                          worker_init_fn=_ignore_sigint if num_workers > 0 else None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=num_workers,
        collate_fn=collate or collate_fn(),
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        worker_init_fn=_ignore_sigint if num_workers > 0 else None,
    )


def _ignore_sigint(worker_id: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_evaluator(dataset: Dataset, config: RunConfig) -> Any:
    """A fresh :class:`fcos_from_scratch.evaluation.DetectionEvaluator` for ``dataset``."""
    from ..evaluation import DetectionEvaluator

    names = class_names(dataset)
    num_classes = len(names) if names else config.num_classes
    return DetectionEvaluator(num_classes=num_classes)  # labels 0..K-1 as categories


def set_epoch(dataset: Dataset, epoch: int, augment: bool) -> None:
    """Tell the dataset which epoch starts (its transforms switch augmentation off
    for the last ``no_aug_epochs``, [digits-lab]); datasets without ``set_epoch`` but
    with an ``augment`` attribute get it set to ``augment``."""
    target = getattr(dataset, "dataset", dataset)  # Subset wrappers
    if callable(getattr(target, "set_epoch", None)):
        target.set_epoch(epoch)
    elif hasattr(target, "augment"):
        target.augment = augment


def set_total_epochs(dataset: Dataset, epochs: int) -> None:
    """Tell the dataset's augmentation schedule how many epochs the run has (it may be
    set by ``max_steps`` rather than ``epochs``), so the last ``no_aug_epochs`` are right."""
    target = getattr(dataset, "dataset", dataset)
    transforms = getattr(target, "transforms", None)
    if transforms is not None and hasattr(transforms, "total_epochs") and transforms.total_epochs:
        transforms.total_epochs = epochs


def class_names(dataset: Dataset) -> Tuple[str, ...]:
    """The dataset's class names, if it has them (saved into checkpoints for predict)."""
    target = getattr(dataset, "dataset", dataset)
    names = getattr(target, "classes", None) or getattr(target, "class_names", None)
    return tuple(str(n) for n in names) if names else ()
