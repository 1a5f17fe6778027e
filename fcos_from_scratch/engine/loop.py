"""One training epoch and one evaluation pass.

Both work with any detector that follows the project's call convention
(torchvision's): in train mode ``model(images, targets)`` returns a dict of
scalars; the entries whose key starts with ``loss`` are summed and minimised, the
others (positives per image, a learned sigma, a recall) are only logged; in eval mode ``model(images)`` returns one dict per
image with ``boxes`` (xyxy), ``scores`` and ``labels``.

A batch is ``(images, targets)``: ``images`` a (B, 3, H, W) tensor or a list of
(3, H, W) tensors, ``targets`` a list of B dicts of tensors.

The non-finite guard: every loss term of every step is checked before the
backward pass (after averaging over processes, so all ranks stop together). A NaN
or inf raises :class:`NonFiniteLossError` naming the step, the epoch, the term and
its value; nothing is written, so the last checkpoint on disk is the last good
one. The trainer also checks the weights themselves before writing any
checkpoint (:func:`check_finite_weights`): the update of an epoch's last step is
never followed by a loss check. [cs771-hw3] met exactly this at LR 0.1 and fixed
it with LR 0.01.

Resuming mid-epoch: :func:`train_one_epoch` can start at batch ``k`` of an epoch
(:class:`EpochProgress`). It draws and discards the first ``k`` batches, so the
data order and every augmentation (also in loader workers) are the ones of the
run that never stopped, then restores the random state saved after step ``k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import distributed as dist_utils
from ..ops import scale_boxes
from .checkpoint import restore_rng_state
from .optim import TimeBudget
from .progress import MetricsWriter, ProgressBar


class NonFiniteLossError(RuntimeError):
    """A loss term (or the gradient norm) became NaN or infinite.

    Attributes:
        step: global optimiser step (0-based) at which it happened.
        epoch: epoch index (0-based).
        term: name of the offending loss term (``"grad_norm"`` for gradients).
        value: the value seen.
    """

    def __init__(self, step: int, epoch: int, term: str, value: float, hint: str = "",
                 grad_clip_norm: float = 0.0) -> None:
        self.step, self.epoch, self.term, self.value = step, epoch, term, value
        clip = (f"a smaller grad_clip_norm (it is {grad_clip_norm})" if grad_clip_norm > 0
                else "grad_clip_norm (e.g. --grad_clip_norm=10)")
        message = (
            f"non-finite {term} = {value} at step {step} (epoch {epoch}); training stopped "
            "and no checkpoint was written with these weights (last.pt, if any, is older and "
            "finite). Try a lower lr ([cs771-hw3] got NaN at lr 0.1 and trained fine at 0.01), "
            f"a longer warm-up or {clip}."
        )
        super().__init__(message + (f" {hint}" if hint else ""))


@dataclass
class EpochResult:
    """What :func:`train_one_epoch` reports.

    Attributes:
        mean: average of every loss term (and ``loss``, their sum) over the epoch
            (including the steps before a mid-epoch resume).
        steps: optimiser steps taken in this call.
        step: global step count after the epoch.
        stopped: True if the time budget or ``on_step`` ended the epoch early.
        history: per-step ``{term: value}`` (averaged over processes) of this call.
        batch: batches of the epoch consumed so far (a mid-epoch checkpoint resumes there).
    """

    mean: Dict[str, float]
    steps: int
    step: int
    stopped: bool = False
    history: List[Dict[str, float]] = field(default_factory=list)
    batch: int = 0


@dataclass
class EpochProgress:
    """Where an unfinished epoch stands: enough to continue it exactly.

    Attributes:
        batch: batches of the epoch already trained on.
        sums, count: running sums of the logged values and the number of steps (epoch mean).
        window_sums, window_counts: values since the last ``metrics.jsonl`` record.
        rng: the random state after step ``batch`` (restored after the skipped batches).
    """

    batch: int = 0
    sums: Dict[str, float] = field(default_factory=dict)
    count: int = 0
    window_sums: Dict[str, float] = field(default_factory=dict)
    window_counts: Dict[str, int] = field(default_factory=dict)
    rng: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        """Plain values for a checkpoint (without ``rng``, which the checkpoint holds)."""
        return {"batch": self.batch, "sums": dict(self.sums), "count": self.count,
                "window_sums": dict(self.window_sums), "window_counts": dict(self.window_counts)}

    @classmethod
    def from_dict(cls, values: Dict[str, Any], rng: Optional[Dict[str, Any]] = None) -> "EpochProgress":
        return cls(int(values["batch"]), dict(values["sums"]), int(values["count"]),
                   dict(values["window_sums"]), dict(values["window_counts"]), rng)


def unpack_batch(batch: Any) -> Tuple[Any, List[Dict[str, Any]]]:
    """``(images, targets)`` from a batch of the data package or a plain pair.

    A :class:`fcos_from_scratch.data.DetectionBatch` (padded images plus each image's
    true size) becomes the padded tensor and targets that carry ``image_size``, so
    the model ignores the padding in both train and eval mode.

    Raises:
        ValueError: if the batch is neither a DetectionBatch nor an (images, targets) pair.
    """
    if hasattr(batch, "images") and hasattr(batch, "targets"):
        sizes = getattr(batch, "image_sizes", None) or [None] * len(batch.targets)
        targets = [dict(t, image_size=tuple(s)) if s is not None else dict(t)
                   for t, s in zip(batch.targets, sizes)]
        return batch.images, targets
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"batch must be a DetectionBatch or (images, targets), got {type(batch).__name__}")
    images, targets = batch
    return images, [dict(t) for t in targets]


def to_device(
    batch: Any, device: torch.device, channels_last: bool = False
) -> Tuple[Any, List[Dict[str, Any]]]:
    """Unpack a batch (:func:`unpack_batch`) and move its tensors to ``device``."""
    images, targets = unpack_batch(batch)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    else:
        images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def targets_in_original_frame(targets: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Scale target boxes from the (resized) input frame back to ``orig_size``.

    The model maps its detections to ``orig_size`` (the image on disk), so the
    evaluator must see ground truth there too; the data pipeline's evaluation
    transform is a pure resize, so this inverse is exact. Targets without both
    ``image_size`` and ``orig_size`` are returned unchanged.
    """
    out = []
    for t in targets:
        if "image_size" in t and "orig_size" in t and tuple(t["image_size"]) != tuple(t["orig_size"]):
            t = dict(t, boxes=scale_boxes(t["boxes"], t["image_size"], t["orig_size"]))
        out.append(t)
    return out


def check_finite(values: Dict[str, float], step: int, epoch: int, grad_clip_norm: float = 0.0) -> None:
    """Raise :class:`NonFiniteLossError` for the first non-finite entry of ``values``.

    The individual terms are checked before the total ``loss`` so the error names
    the term that went bad, not just their sum.
    """
    for name in sorted(values, key=lambda k: k == "loss"):
        if not math.isfinite(values[name]):
            raise NonFiniteLossError(step, epoch, name, values[name], grad_clip_norm=grad_clip_norm)


def check_finite_weights(model: nn.Module, step: int, epoch: int, grad_clip_norm: float = 0.0) -> None:
    """Raise :class:`NonFiniteLossError` if a floating-point weight or buffer is NaN/inf.

    Called before every checkpoint, so no checkpoint ever holds a blown-up model.
    """
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = tensor[~torch.isfinite(tensor)].flatten()[0].item()
            raise NonFiniteLossError(step, epoch, f"weight {name}", bad, grad_clip_norm=grad_clip_norm)


def _clip_and_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    scaler: Optional[Any],
    grad_clip_norm: float,
    where: Tuple[int, int] = (0, 0),
) -> Optional[float]:
    """Backward, optional gradient clipping, optimiser step. Returns the grad norm if clipped.

    ``where`` = (step, epoch) for the error raised on a non-finite gradient norm,
    which happens before the update, so the weights are untouched.
    """
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    norm = None
    if grad_clip_norm > 0:
        params = [p for p in model.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip_norm))
        if not math.isfinite(norm) and scaler is None:  # (AMP skips such steps by itself)
            raise NonFiniteLossError(where[0], where[1], "grad_norm", norm, grad_clip_norm=grad_clip_norm)
    if scaler is not None:
        scaler.step(optimizer)  # skips the update itself when the grads overflowed
        scaler.update()
    else:
        optimizer.step()
    return norm


class _Window:
    """Running sums of the values seen since the last :meth:`pop_means`."""

    def __init__(self, sums: Optional[Dict[str, float]] = None,
                 counts: Optional[Dict[str, int]] = None) -> None:
        self.sums: Dict[str, float] = dict(sums or {})
        self.counts: Dict[str, int] = dict(counts or {})

    def add(self, values: Dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop_means(self) -> Dict[str, float]:
        means = {k: v / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means


def is_loss_key(name: str) -> bool:
    """Only the model's outputs named ``loss*`` are summed into the objective."""
    return name.startswith("loss")


def _train_step(model, optimizer, batch, scaler, grad_clip_norm: float, step: int, epoch: int):
    """Forward, non-finite guard, backward, clip, update. Returns (logged values, grad norm)."""
    images, targets = batch
    with torch.autocast(device_type=images.device.type if isinstance(images, torch.Tensor)
                        else images[0].device.type, enabled=scaler is not None):
        outputs = model(images, targets)
    losses = {k: v for k, v in outputs.items() if is_loss_key(k)}
    if not losses:
        raise ValueError(f"the model returned no 'loss*' entry in train mode (keys: {sorted(outputs)})")
    loss = sum(losses.values())
    logged = {k: torch.as_tensor(v, device=loss.device).detach().float().mean() for k, v in outputs.items()
              if not is_loss_key(k)}
    values = dist_utils.reduce_dict({**losses, "loss": loss, **logged})  # same on every rank
    check_finite({k: v for k, v in values.items() if is_loss_key(k)}, step, epoch,  # before backward
                 grad_clip_norm)
    norm = _clip_and_step(model, optimizer, loss, scaler, grad_clip_norm, (step, epoch))
    return values, norm


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: Any,
    device: torch.device,
    *,
    scheduler: Optional[Any] = None,
    scaler: Optional[Any] = None,
    epoch: int = 0,
    num_epochs: int = 1,
    start_step: int = 0,
    grad_clip_norm: float = 0.0,
    channels_last: bool = False,
    max_steps: int = 0,
    budget: Optional[TimeBudget] = None,
    ema: Optional[Any] = None,
    metrics: Optional[MetricsWriter] = None,
    log_every: int = 10,
    progress: bool = True,
    resume_at: Optional[EpochProgress] = None,
    on_step: Optional[Callable[[int, EpochProgress], bool]] = None,
) -> EpochResult:
    """Train ``model`` for one pass over ``data_loader``.

    Args:
        scheduler: stepped after every optimiser step (per-step schedule).
        scaler: a ``torch.amp.GradScaler`` for mixed precision (CUDA), else None.
        start_step: global step count before this call (for logs and errors).
        grad_clip_norm: clip the global L2 gradient norm to this (0 = off).
        max_steps: the epoch ends after this many batches (0 = the whole loader).
        budget: a :class:`TimeBudget`; the epoch stops early when it has expired
            (and it may advance the LR schedule, see there).
        ema: a :class:`~fcos_from_scratch.engine.ema.ModelEMA` updated after every step.
        metrics: writer for ``kind="train"`` records every ``log_every`` steps (each
            the mean of the loss terms and grad norm over those steps, and the LR).
        resume_at: continue an unfinished epoch (see :class:`EpochProgress`); the
            caller has restored the random state of the epoch's start.
        on_step: called after every step with ``(global step, progress)``; returning
            True ends the epoch there (the trainer checkpoints in it).

    Returns:
        An :class:`EpochResult`.

    Raises:
        NonFiniteLossError: on a NaN/inf loss term or gradient norm.
    """
    model.train()
    total = len(data_loader) if max_steps <= 0 else min(max_steps, len(data_loader))
    state = resume_at or EpochProgress()
    bar = ProgressBar(total, f"epoch {epoch + 1}/{num_epochs}", every=log_every,
                      enabled=progress and dist_utils.is_main_process())
    bar.count = state.batch
    window = _Window(state.window_sums, state.window_counts)  # metrics.jsonl: means since the last record
    history: List[Dict[str, float]] = []
    step, stopped, index = start_step, False, state.batch - 1
    for index, batch in enumerate(data_loader):
        if index >= total:
            index -= 1
            break
        if index < state.batch:  # already trained on before the interruption
            if index + 1 == state.batch and state.rng is not None:
                restore_rng_state(state.rng)  # as it was right after that step
            continue
        lr = optimizer.param_groups[0]["lr"]
        values, norm = _train_step(model, optimizer, to_device(batch, device, channels_last),
                                   scaler, grad_clip_norm, step, epoch)
        if ema is not None:
            ema.update(model.module if hasattr(model, "module") else model)
        elapsed = dist_utils.broadcast_float(budget.elapsed()) if budget is not None else 0.0
        if scheduler is not None:
            scheduler.step()
            if budget is not None:
                budget.advance(scheduler, elapsed, steps_done=step + 1)
        step += 1
        history.append(values)
        for k, v in values.items():
            state.sums[k] = state.sums.get(k, 0.0) + v
        state.count += 1
        window.add({**values, **({"grad_norm": norm} if norm is not None else {})})
        bar.update({**values, "lr": lr})
        if metrics is not None and (step % log_every == 0 or index + 1 == total):
            metrics.write("train", step=step, epoch=epoch, lr=lr, **window.pop_means())
        state.batch, state.window_sums, state.window_counts = index + 1, window.sums, window.counts
        if budget is not None and budget.expired(elapsed):  # same decision on every rank
            stopped = True
        if on_step is not None and on_step(step, state) and index + 1 < total:
            stopped = True
        if stopped:
            break
    bar.close()
    count = max(state.count, 1)
    return EpochResult({k: v / count for k, v in state.sums.items()}, len(history), step, stopped,
                       history, batch=min(index + 1, total))


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    data_loader: Any,
    device: torch.device,
    *,
    channels_last: bool = False,
    amp: bool = False,
    progress: bool = True,
    max_batches: int = 0,
):
    """Yield ``(predictions, targets)`` per batch, both on the CPU, in eval mode."""
    model.eval()
    total = len(data_loader) if max_batches <= 0 else min(max_batches, len(data_loader))
    bar = ProgressBar(total, "eval", enabled=progress and dist_utils.is_main_process())
    for index, batch in enumerate(data_loader):
        if index >= total:
            break
        images, targets = to_device(batch, device, channels_last)
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            preds = model(images, targets)  # targets only carry sizes here (image_size, orig_size)
        targets = targets_in_original_frame(targets)
        preds = [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in p.items()}
                 for p in preds]
        targets = [{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in t.items()}
                   for t in targets]
        bar.update({})
        yield preds, targets
    bar.close()


def evaluate(
    model: nn.Module,
    data_loader: Any,
    device: torch.device,
    evaluator: Any,
    **kwargs: Any,
) -> Dict[str, float]:
    """Run ``model`` over ``data_loader``; COCO and VOC metrics of its detections.

    Args:
        evaluator: an object with ``update(preds, targets)`` and ``compute()``,
            e.g. :class:`fcos_from_scratch.evaluation.DetectionEvaluator`; its
            result is flattened by :func:`flatten_metrics`.
        **kwargs: passed to :func:`predict_batches` (``channels_last``, ``amp``,
            ``progress``, ``max_batches``).
    """
    for preds, targets in predict_batches(model, data_loader, device, **kwargs):
        evaluator.update(preds, targets)
    return flatten_metrics(evaluator.compute())


COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def flatten_metrics(result: Dict[str, Any]) -> Dict[str, float]:
    """``{"coco": {...}, "voc": {"mAP": ...}}`` -> ``{"AP", ..., "ARl", "VOC_mAP"}`` floats.

    A result that is already flat (numbers only) is returned with float values.
    """
    if "coco" not in result and "voc" not in result:
        return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}
    flat = {k: float(result["coco"][k]) for k in COCO_KEYS if k in result.get("coco", {})}
    if "voc" in result:
        flat["VOC_mAP"] = float(result["voc"]["mAP"])
    return flat
