"""The whole run: build, (resume,) train epoch by epoch, checkpoint, select on val, test once, plot.

``python -m fcos_from_scratch.train`` is a thin wrapper around :func:`fit`. Tests
pass a tiny model and dataset through the same function, so the code path they
check is the one users run.

Files written to ``config.out`` (by rank 0 only):

* ``config.json``: the resolved configuration (training and detector);
* ``last.pt``: checkpoint after each epoch (atomic); ``best.pt``: the weights with
  the best ``val_split`` AP (the last weights when there is no validation split);
* ``metrics.jsonl``: per-step, per-epoch, ``val`` and ``test`` records;
* ``loss*.png``, ``lr.png``: the curves;
* ``metrics.json``: the ``test_split`` evaluation of ``best.pt``, run once at the
  end (``AP``, ``AP50``, ..., ``VOC_mAP``) -- honest protocol: the checkpoint is
  chosen on val, the test split is looked at once.

Only the model's ``loss*`` outputs are summed; other scalars it returns are logged.
With ``ema_decay > 0`` the moving average of the weights is what is evaluated,
selected and saved as ``best.pt``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import Dataset

from ..config import RunConfig, TrainConfig
from . import builders
from . import checkpoint as ckpt
from . import distributed as dist_utils
from .loop import EpochResult, evaluate, train_one_epoch
from .ema import ModelEMA
from .optim import TimeBudget, build_optimizer, build_scheduler, num_epochs
from .progress import MetricsWriter
from ..visualize.curves import plot_metrics

# The metric used to pick best.pt (COCO AP; VOC mAP when AP is missing).
BEST_KEYS = ("AP", "VOC_mAP")


@dataclass
class FitResult:
    """What :func:`fit` returns: the final metrics and the per-step loss history."""

    metrics: Dict[str, float]
    history: List[Dict[str, float]] = field(default_factory=list)
    epochs_done: int = 0
    steps: int = 0
    stopped_early: bool = False


@dataclass
class _Run:
    """The mutable pieces of one run, grouped so helpers stay short."""

    config: RunConfig
    device: torch.device
    model: torch.nn.Module
    train_set: Dataset
    val_set: Optional[Dataset]
    test_set: Optional[Dataset]
    evaluator_factory: Callable[[], Any]
    out: Path
    log: Callable[[str], None]
    collate: Optional[Callable] = None
    best: Optional[float] = None
    ema: Optional[ModelEMA] = None
    start: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0  # training seconds of the run(s) this one resumes


def _log_fn(stream) -> Callable[[str], None]:
    def log(message: str) -> None:
        if dist_utils.is_main_process():
            print(message, file=stream or sys.stdout, flush=True)

    return log


def _resume_path(config: RunConfig, out: Path) -> Optional[Path]:
    if not config.resume:
        return None
    if config.resume == "auto":
        path = out / ckpt.LAST
        return path if path.exists() else None
    return Path(config.resume)


def evaluated_model(run: _Run) -> torch.nn.Module:
    """The weights that are evaluated and selected: the EMA if there is one."""
    return run.ema.module if run.ema is not None else ckpt.unwrap(run.model)


def _evaluate(run: _Run, dataset: Optional[Dataset]) -> Dict[str, float]:
    """Rank 0 evaluates the whole split; other ranks wait and receive the result."""
    stats: Dict[str, float] = {}
    if dist_utils.is_main_process() and dataset is not None:
        train = run.config.train
        # Evaluation order does not change the metrics' bookkeeping; grouping by size
        # (one window over the whole split) keeps the padding of its batches small.
        window = len(dataset) if train.group_by_size > 0 else 0
        loader = builders.build_loader(dataset, train.batch_size, num_workers=train.num_workers,
                                       collate=run.collate, group_by_size=window)
        use_cuda = run.device.type == "cuda"
        stats = evaluate(evaluated_model(run), loader, run.device,
                         run.evaluator_factory(dataset),
                         channels_last=train.channels_last,
                         amp=use_cuda and train.amp, progress=train.progress)
        stats = {k: float(v) for k, v in stats.items()}
    dist_utils.barrier()
    return dist_utils.broadcast_object(stats)


def _best_value(stats: Dict[str, float]) -> Optional[float]:
    for key in BEST_KEYS:
        if key in stats:
            return stats[key]
    return None


def _save(run: _Run, name: str, state: Dict[str, Any]) -> None:
    if dist_utils.is_main_process():
        ckpt.atomic_save(state, run.out / name)


def _setup(config: RunConfig, model, datasets, evaluator_factory, collate, stream) -> _Run:
    train = config.train
    device = builders.resolve_device(train.device)
    device = dist_utils.init_distributed(device.type if device.type != "mps" else "cpu") \
        if dist_utils.launched_by_torchrun() else device
    # A different stream per rank, so ranks do not draw identical augmentations;
    # DDP broadcasts rank 0's initial weights, so the model is still the same.
    builders.seed_everything(train.seed + dist_utils.get_rank())
    train_set, val_set, test_set = datasets
    if train_set is None:
        train_set = builders.build_split(config, train.train_split, train=True)
        val_set = builders.build_split(config, train.val_split, train=False) if train.val_split else None
        test_set = builders.build_split(config, train.test_split, train=False)
    if model is None:
        model = builders.build_run_model(config)
    model.to(device)
    if train.channels_last:  # NHWC: faster convolutions on CUDA and with oneDNN on CPUs
        model.to(memory_format=torch.channels_last)
    if evaluator_factory is None:
        evaluator_factory = lambda dataset: builders.build_evaluator(dataset, config)  # noqa: E731
    out = Path(train.out)
    run = _Run(config, device, model, train_set, val_set, test_set, evaluator_factory, out,
               _log_fn(stream), collate)
    if train.ema_decay > 0:
        run.ema = ModelEMA(model, train.ema_decay)
    if dist_utils.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return run


def fit(
    config,
    *,
    model: Optional[torch.nn.Module] = None,
    train_set: Optional[Dataset] = None,
    val_set: Optional[Dataset] = None,
    test_set: Optional[Dataset] = None,
    evaluator_factory: Optional[Callable[[Dataset], Any]] = None,
    collate: Optional[Callable] = None,
    on_epoch_end: Optional[Callable[[int, EpochResult], None]] = None,
    stream=None,
) -> FitResult:
    """Train (or resume) according to ``config``; select on val, evaluate on test once.

    Args:
        config: a :class:`RunConfig` (a bare :class:`TrainConfig` is accepted when
            ``model`` is given).
        model, train_set, val_set, test_set, evaluator_factory, collate: replace the
            objects built from ``config`` (tests use tiny stand-ins; the factory takes
            the dataset to evaluate). With a given ``train_set``, a missing
            ``val_set`` means no selection and a missing ``test_set`` no test.
        on_epoch_end: called with ``(epoch, result)`` after each epoch's checkpoint.
        stream: where log lines go (default stdout).

    Returns:
        A :class:`FitResult`; ``metrics`` (the test split's) is also written to
        ``<out>/metrics.json``.

    Raises:
        NonFiniteLossError: a loss became NaN/inf; ``last.pt`` is the last good epoch.
    """
    if isinstance(config, TrainConfig):
        config = RunConfig(config, None)
    if config.model is None and model is None:
        raise ValueError("fit needs a detector config (RunConfig.model) or a ready model")
    start = time.perf_counter()
    run = _setup(config, model, (train_set, val_set, test_set), evaluator_factory, collate, stream)
    run.start = start  # the time budget includes building the data and the model
    try:
        return _train(run, on_epoch_end)
    finally:
        dist_utils.cleanup()


@dataclass
class _Parts:
    """The training objects built from the config (see :func:`_build_parts`)."""

    sampler: Any
    loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[Any]
    epoch: int = 0  # first epoch to run
    step: int = 0  # optimiser steps already taken
    steps_per_epoch: int = 1


def _build_parts(run: _Run) -> _Parts:
    """Sampler, loader, optimiser, schedule and AMP scaler; restored when resuming."""
    config = run.config.train
    sampler = dist_utils.build_train_sampler(run.train_set, config.seed)
    loader = builders.build_loader(run.train_set, config.batch_size, sampler=sampler,
                                   num_workers=config.num_workers, collate=run.collate,
                                   group_by_size=config.group_by_size, seed=config.seed)
    steps_per_epoch = len(loader) if config.max_steps_per_epoch <= 0 else \
        min(len(loader), config.max_steps_per_epoch)
    optimizer = build_optimizer(run.model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    use_amp = run.device.type == "cuda" and config.amp
    parts = _Parts(sampler, loader, optimizer, scheduler, torch.amp.GradScaler("cuda") if use_amp else None,
                   steps_per_epoch=steps_per_epoch)
    resume = _resume_path(config, run.out)
    if resume is not None:
        state = ckpt.load_checkpoint(resume, map_location=run.device)
        info = ckpt.resume_from(state, run.model, optimizer, scheduler, parts.scaler, restore_rng=False)
        if run.ema is not None and state.get("ema") is not None:
            run.ema.load_state_dict(state["ema"])
        _restore_rank_rng(state)
        parts.epoch, parts.step, run.best = info["epoch"], info["step"], info["best_metric"]
        run.elapsed_before = float(state.get("extra", {}).get("elapsed_s", 0.0))
        run.log(f"resumed from {resume}: epoch {parts.epoch}, step {parts.step}")
        changed = _changed_keys(ckpt.flat_config(state.get("config", {})),
                                ckpt.flat_config(run.config.to_dict()))
        if changed:
            run.log(f"warning: the checkpoint was trained with different {', '.join(changed)}; "
                    "the optimiser and LR schedule continue from the checkpoint's state")
    return parts


# Keys that may differ between a run and its resumption without changing the maths.
_RESUME_FREE_KEYS = {"resume", "out", "device", "progress", "log_every", "num_workers", "data_root"}


def _changed_keys(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    return sorted(k for k in current if k not in _RESUME_FREE_KEYS and saved.get(k, current[k]) != current[k])


def _state(run: _Run, parts: _Parts, epoch: int, extra: Dict[str, Any], *,
           model: torch.nn.Module, best_metric: Optional[float]) -> Dict[str, Any]:
    state = ckpt.training_state(
        model, parts.optimizer, parts.scheduler, epoch=epoch + 1, step=parts.step,
        config=run.config.to_dict(), scaler=parts.scaler, best_metric=best_metric, extra=extra)
    state["model_name"] = run.config.train.model
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    return state


def _save_last(run: _Run, model, parts: _Parts, epoch: int, extra: Dict[str, Any]) -> None:
    """Write ``last.pt`` (rank 0) with every rank's RNG state."""
    extra["elapsed_s"] = run.elapsed_before + time.perf_counter() - run.start
    state = _state(run, parts, epoch, extra, model=model, best_metric=run.best)
    state["rng_per_rank"] = dist_utils.all_gather_object(state["rng"])  # every rank calls
    _save(run, ckpt.LAST, state)


def _train(run: _Run, on_epoch_end) -> FitResult:
    config, device = run.config.train, run.device
    parts = _build_parts(run)
    start_epoch = parts.epoch
    epochs = num_epochs(config, parts.steps_per_epoch)
    builders.set_total_epochs(run.train_set, epochs)
    model = dist_utils.wrap_model(run.model, device, sync_bn=config.sync_bn)
    metrics = MetricsWriter(run.out / "metrics.jsonl", enabled=dist_utils.is_main_process())
    metrics.truncate_after(parts.step)  # a fresh run starts a fresh log; a resumed one drops
    # the records after its checkpoint (they will be logged again)
    budget = None
    if config.max_minutes > 0:  # counted from the start of fit(), data preparation included
        multiplier = parts.scheduler.lr_lambdas[0]
        budget = TimeBudget(60 * config.max_minutes, multiplier.total_steps, config.time_schedule,
                            start=run.start - run.elapsed_before,
                            warmup_steps=multiplier.warmup_steps)
    history: List[Dict[str, float]] = []
    epoch, stopped = start_epoch, False
    extra = {"class_names": list(builders.class_names(run.train_set))}
    for epoch in range(start_epoch, epochs):
        parts.sampler.set_epoch(epoch)
        if hasattr(parts.loader.batch_sampler, "set_epoch"):
            parts.loader.batch_sampler.set_epoch(epoch)
        builders.set_epoch(run.train_set, epoch,
                           config.augment and epoch < epochs - config.no_aug_epochs)
        steps_left = config.max_steps - parts.step if config.max_steps > 0 else 0
        limit = min(x for x in (config.max_steps_per_epoch, steps_left, parts.steps_per_epoch) if x > 0)
        result = train_one_epoch(
            model, parts.optimizer, parts.loader, device, scheduler=parts.scheduler,
            scaler=parts.scaler, epoch=epoch, num_epochs=epochs, start_step=parts.step,
            grad_clip_norm=config.grad_clip_norm, max_steps=limit,
            channels_last=config.channels_last, budget=budget,
            ema=run.ema, metrics=metrics, log_every=config.log_every, progress=config.progress)
        parts.step, stopped = result.step, result.stopped
        history.extend(result.history)
        metrics.write("epoch", step=parts.step, epoch=epoch, **result.mean)
        run.log(f"epoch {epoch + 1}/{epochs} done: " +
                " ".join(f"{k}={v:.4f}" for k, v in result.mean.items()))
        if config.eval_every > 0 and (epoch + 1) % config.eval_every == 0 \
                and epoch + 1 < epochs and not stopped:
            _validate_and_keep_best(run, parts, epoch, metrics, extra)
        _save_last(run, model, parts, epoch, extra)
        if on_epoch_end is not None:
            on_epoch_end(epoch, result)
        if stopped:
            run.log(f"time budget of {config.max_minutes} min reached in epoch {epoch + 1}, "
                    f"step {parts.step}; evaluating now")
            break
    if epochs > start_epoch or run.best is None:
        # With eval_every = 0 the final weights are the only candidate: there is
        # nothing to select, so the val split is not evaluated (best.pt = last).
        only_candidate = config.eval_every == 0 and run.best is None
        _validate_and_keep_best(run, parts, epoch, metrics, extra, only_candidate=only_candidate)
    final = _test_best(run, parts, epoch, metrics)
    _finish(run, final)
    done = epoch + 1 if epochs > start_epoch else start_epoch
    return FitResult(final, history, done, parts.step, stopped)


def _finish(run: _Run, final: Dict[str, float]) -> None:
    """metrics.json and the PNG curves (rank 0)."""
    if not dist_utils.is_main_process():
        return
    if final:
        (run.out / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    if (run.out / "metrics.jsonl").exists():
        plot_metrics(run.out / "metrics.jsonl", run.out)


def _restore_rank_rng(state: Dict[str, Any]) -> None:
    """Each rank continues its own random stream (rank 0's if the world size changed)."""
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    rank = dist_utils.get_rank()
    same_world = len(per_rank) == dist_utils.get_world_size()
    ckpt.restore_rng_state(per_rank[rank] if same_world else per_rank[0])


def _validate_and_keep_best(run: _Run, parts: _Parts, epoch: int, metrics: MetricsWriter,
                            extra: Dict[str, Any], *, only_candidate: bool = False) -> None:
    """Evaluate on the val split and write ``best.pt`` if it improved.

    Without a val split, or with a single candidate, nothing is selected:
    ``best.pt`` is simply the latest weights.
    """
    use_val = run.val_set is not None and not only_candidate
    stats = _evaluate(run, run.val_set) if use_val else {}
    if stats:
        metrics.write("val", step=parts.step, epoch=epoch, **stats)
        run.log("val: " + " ".join(f"{k}={v:.4f}" for k, v in stats.items()))
    value = _best_value(stats) if stats else None
    if use_val and value is None:
        return
    if value is None or run.best is None or value > run.best:
        run.best = value if value is not None else run.best
        _save(run, ckpt.BEST, _state(run, parts, epoch, extra, model=evaluated_model(run),
                                     best_metric=value))


def _test_best(run: _Run, parts: _Parts, epoch: int, metrics: MetricsWriter) -> Dict[str, float]:
    """Evaluate ``best.pt``'s weights on the test split, once."""
    if run.test_set is None:
        return {}
    best_path = run.out / ckpt.BEST
    current = {k: v.detach().clone() for k, v in evaluated_model(run).state_dict().items()}
    restore = False
    if dist_utils.is_main_process() and best_path.exists():
        best = ckpt.load_checkpoint(best_path, map_location=run.device)
        restore = any(not torch.equal(best["model"][k], v) for k, v in current.items() if k in best["model"])
        if restore:
            evaluated_model(run).load_state_dict(best["model"])
            run.log(f"testing best.pt (after epoch {best['epoch']}, val {best['best_metric']:.4f})")
    stats = _evaluate(run, run.test_set)
    if restore:
        evaluated_model(run).load_state_dict(current)
    metrics.write("test", step=parts.step, epoch=epoch, **stats)
    run.log("test: " + " ".join(f"{k}={v:.4f}" for k, v in stats.items()))
    return stats
