"""Evaluate a saved checkpoint on a dataset split (used by ``python -m fcos_from_scratch.evaluate``).

The checkpoint carries its :class:`RunConfig` (the detector's name and config),
so any detector is rebuilt exactly as it was trained; only the data can be
overridden (another split, another root).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch.utils.data import Dataset

from ..config import RunConfig, TrainConfig, field_names
from ..evaluation.io import detections_to_coco
from . import builders
from . import checkpoint as ckpt
from .loop import flatten_metrics, predict_batches


# Fields that checkpoints written before the detector configs existed kept in
# their flat training config, with the detector option each became.
_LEGACY_MODEL_KEYS = ("num_classes", "backbone", "pretrained", "frozen_bn", "fpn_channels",
                      "num_levels", "head_convs", "sizes_of_interest", "centerness_weight",
                      "per_class_topk")


def run_config_from_checkpoint(state: Dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` stored in a checkpoint (also the older flat layout)."""
    config = state.get("config") or {}
    if "train" in config:
        return RunConfig.from_dict(config)
    train = {k: v for k, v in config.items() if k in field_names(TrainConfig)}
    model = {k: v for k, v in config.items() if k in _LEGACY_MODEL_KEYS}
    if "frozen_bn" in model:
        model["frozen_bn"] = {"auto": None, "true": True, "false": False}[model["frozen_bn"]]
    return RunConfig.from_dict({"train": train, "model": model})


def load_model(
    checkpoint: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu"
) -> "tuple[torch.nn.Module, RunConfig, Dict[str, Any]]":
    """Rebuild the detector of a checkpoint and load its weights, in eval mode.

    Returns:
        ``(model, config, extra)``; ``extra`` holds e.g. ``class_names``.
    """
    device = builders.resolve_device(str(device))
    try:
        state = ckpt.load_checkpoint(checkpoint, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: no such file") from None
    config = run_config_from_checkpoint(state)
    if config.model is None:
        raise ValueError(f"checkpoint {checkpoint} has no detector config: it was trained with a "
                         "model passed in by code, so it cannot be rebuilt by name")
    changes: Dict[str, Any] = {"init_from": ""}  # the checkpoint has the weights
    if "pretrained" in field_names(type(config.model)) and config.model.pretrained:
        changes["pretrained"] = ""  # no download
        if getattr(config.model, "frozen_bn", False) is None:  # None froze BN because of the weights
            changes["frozen_bn"] = True
    config = config.replace(**changes)
    model = builders.build_run_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # torch lists every mismatched tensor over many lines
        first = [line.strip() for line in str(err).splitlines() if line.strip()][1:2]
        raise ValueError(f"checkpoint {checkpoint}: its weights do not fit the detector its config "
                         f"describes ({first[0] if first else err}); was it written by another "
                         "version of this code?") from None
    model.to(device).eval()
    return model, config, dict(state.get("extra") or {})


def evaluate_checkpoint(
    checkpoint: Union[str, os.PathLike],
    dataset: Union[str, Dataset, None] = None,
    split: Optional[str] = None,
    **options: Any,
) -> Dict[str, float]:
    """COCO and VOC metrics of a checkpoint on one split.

    Args:
        checkpoint: a ``last.pt``/``best.pt`` written by the trainer.
        dataset: "digits", "voc" or "coco" (default: the one it was trained on), or
            a ready dataset object (then ``split`` and ``root`` are ignored).
        split: default: the config's ``test_split``.
        **options: ``root``, ``device``, ``batch_size``, ``num_workers``,
            ``max_batches``, ``progress``, as for :func:`checkpoint_detections`.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
        "ARs", "ARm", "ARl", "VOC_mAP"}`` as floats.
    """
    return checkpoint_detections(checkpoint, dataset, split, **options)[0]


def checkpoint_detections(
    checkpoint: Union[str, os.PathLike],
    dataset: Union[str, Dataset, None] = None,
    split: Optional[str] = None,
    *,
    root: Optional[str] = None,
    device: str = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    max_batches: int = 0,
    progress: bool = True,
) -> Tuple[Dict[str, float], Dataset, List[dict]]:
    """Metrics of a checkpoint on one split, and its detections as COCO results.

    Args:
        checkpoint, dataset, split: as for :func:`evaluate_checkpoint`.
        root: dataset root (default: the training config's).
        max_batches: evaluate only the first N batches (0 = all; for smoke tests).

    Returns:
        ``(metrics, dataset, results)``: the metrics, the evaluated dataset (its
        ``coco_gt()`` is the matching ground truth, if it has one) and one COCO result
        per detection (``image_id``, ``category_id``, ``bbox`` xywh, ``score``), for
        the reports of ``python -m fcos_from_scratch.evaluate --plots/--voc``.
    """
    model, config, _ = load_model(checkpoint, device)
    if isinstance(dataset, Dataset):
        test_set = dataset
    else:
        changes: Dict[str, Any] = {}
        if dataset is not None and dataset != config.dataset:
            changes.update(dataset=dataset, data_root="")
        if root is not None:
            changes["data_root"] = root
        config = config.replace(**changes) if changes else config
        hint = (f"the checkpoint predicts {config.num_classes} classes: evaluate it on a dataset "
                f"with as many (e.g. the one it was trained on, --dataset={config.dataset})")
        test_set = builders.build_split(config, split or config.test_split, train=False, class_hint=hint)
    loader = builders.build_loader(test_set, batch_size, num_workers=num_workers)
    device_ = next(model.parameters()).device
    evaluator = builders.build_evaluator(test_set, config)
    results: List[dict] = []
    category_ids = tuple(getattr(test_set, "category_ids", ()) or ())
    label_to_category = dict(enumerate(category_ids)) if category_ids else None
    for preds, targets in predict_batches(model, loader, device_, max_batches=max_batches, progress=progress):
        evaluator.update(preds, targets)
        results += detections_to_coco(preds, [int(t["image_id"]) for t in targets], label_to_category)
    stats = flatten_metrics(evaluator.compute())
    return {k: float(v) for k, v in stats.items()}, test_set, results
