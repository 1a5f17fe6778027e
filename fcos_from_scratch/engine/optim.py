"""Optimiser and learning-rate schedule.

Weight decay is applied to conv/linear weights only: norm-layer scales, biases and
other 1-D or scalar parameters (the per-level regression scales of the FCOS head)
are excluded, because shrinking them towards zero changes what the layer computes
rather than regularising it (the convention of [bag-of-tricks] Sec. 3.1 and
torchvision's reference scripts with ``--norm-weight-decay 0``). A module may also
name parameters that must never be decayed, whatever their shape, with a method
``no_weight_decay_parameter_names()`` returning names relative to itself (the
learned loss weights s_k = log σ_k² of ``models.loss_weighting`` do).

The schedule is a multiplier ``f(step)`` on the base LR, evaluated per step:

* warm-up over the first ``W = round(warmup_fraction * T)`` steps, either linear
  ``f = w0 + (1 - w0) * step / W`` or constant ``f = w0`` (``w0 = warmup_factor``);
* then cosine from ``lr`` to ``min_lr`` over the remaining steps
  ``lr_t = min_lr + (lr - min_lr) * (1 + cos(pi * (step - W) / (T - W))) / 2``
  ([sgdr] Eq. (5)), as [fcos-light] used (1e-2 -> 1e-5, 1 % warm-up, Fig. 10);
* or step decay: ``f = gamma ** (number of milestones <= step)``, milestones in
  epochs (``lr_steps``) or steps (``lr_milestone_steps``);
* or constant: ``f = 1``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import TrainConfig, parse_lr_mults


def no_weight_decay_names(model: nn.Module) -> set:
    """Full names of the parameters that modules of ``model`` exempt from weight decay.

    Any submodule with a ``no_weight_decay_parameter_names()`` method contributes
    those names, prefixed with the submodule's own name.
    """
    names = set()
    for prefix, module in model.named_modules():
        method = getattr(module, "no_weight_decay_parameter_names", None)
        if callable(method):
            names.update(f"{prefix}.{n}" if prefix else n for n in method())
    return names


def parameter_groups(model: nn.Module, weight_decay: float, lr: float = 0.0,
                     lr_mults: Sequence[str] = ()) -> List[Dict]:
    """Split trainable parameters by weight decay and by learning-rate multiplier.

    Args:
        model: the network.
        weight_decay: decay for parameters with ``ndim >= 2``; norm scales/shifts,
            biases and scalar scales (``ndim <= 1``) get none, nor do the
            parameters named by :func:`no_weight_decay_names`.
        lr: the base learning rate.
        lr_mults: ``"prefix=mult"`` entries: parameters whose name starts with
            ``prefix`` train at ``lr * mult`` (the first matching entry wins), e.g.
            ``("backbone=0.5",)`` as in [digits-lab].

    Returns:
        Param-group dicts, each with ``params``, ``weight_decay``, ``lr`` and a
        ``name`` (``decay``/``no_decay``, suffixed with ``@prefix`` for multiplied
        groups); empty groups are dropped. Frozen parameters are skipped.
    """
    rules = parse_lr_mults(lr_mults)
    never_decayed = no_weight_decay_names(model)
    groups: Dict[Tuple[str, bool], Dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        prefix, mult = next(((p, m) for p, m in rules if name.startswith(p)), ("", 1.0))
        decayed = param.ndim > 1 and name not in never_decayed
        key = (prefix, decayed)
        if key not in groups:
            label = ("decay" if decayed else "no_decay") + (f"@{prefix}" if prefix else "")
            groups[key] = {"params": [], "weight_decay": weight_decay if decayed else 0.0,
                           "lr": lr * mult, "name": label}
        groups[key]["params"].append(param)
    order = sorted(groups, key=lambda k: (k[0] != "", k[0], not k[1]))  # decay, no_decay, then prefixes
    return [groups[k] for k in order]


def _fused(groups) -> bool:
    """Whether the parameters suit PyTorch's fused update: float, all on CPU or all on CUDA.

    The fused update does the per-tensor loop's arithmetic in one pass over all
    parameters. On the CPU digits preset the loop over ~60 small tensors was 6.1 % of
    a step (``benchmarks/profile_step.py``), the fused update 2.8 %.
    """
    params = [p for group in groups for p in group["params"]]
    devices = {p.device.type for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum, AdamW (decoupled decay) or Adam (L2 added to the gradient)."""
    groups = parameter_groups(model, config.weight_decay, config.lr, config.lr_mults)
    fused = _fused(groups)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, fused=fused)
    betas = tuple(config.betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two values in [0, 1), got {config.betas}")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=betas, fused=fused)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=betas, fused=fused)  # coupled L2, as [digits-lab]
    raise ValueError(f"optimizer must be 'sgd', 'adamw' or 'adam', got {config.optimizer!r}")


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """T: ``max_steps`` if set, else ``epochs * steps_per_epoch``."""
    return config.max_steps if config.max_steps > 0 else config.epochs * steps_per_epoch


def num_epochs(config: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs the run takes: ``epochs``, or enough epochs for ``max_steps``."""
    if config.max_steps > 0:
        return -(-config.max_steps // steps_per_epoch)  # ceil
    return config.epochs


@dataclass
class LRMultiplier:
    """Picklable ``f(step)`` for ``torch.optim.lr_scheduler.LambdaLR`` (see module doc).

    Attributes:
        total_steps: T, optimiser steps in the whole run.
        warmup_steps: W.
        warmup: "linear", "constant" or "none".
        warmup_factor: w0, the multiplier at step 0.
        schedule: "cosine", "step" or "constant".
        min_ratio: ``min_lr / lr``, the cosine's final multiplier.
        milestones: steps at which "step" multiplies by ``gamma``.
        gamma: step-decay factor.
    """

    total_steps: int
    warmup_steps: int = 0
    warmup: str = "linear"
    warmup_factor: float = 0.001
    schedule: str = "cosine"
    min_ratio: float = 0.0
    milestones: Tuple[int, ...] = ()
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        if self.warmup != "none" and step < self.warmup_steps:
            if self.warmup == "constant":
                return self.warmup_factor
            alpha = step / self.warmup_steps
            return self.warmup_factor + (1.0 - self.warmup_factor) * alpha
        if self.schedule == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return self.min_ratio + (1.0 - self.min_ratio) * cosine
        if self.schedule == "step":
            return self.gamma ** sum(1 for m in self.milestones if step >= m)
        return 1.0


def build_multiplier(config: TrainConfig, steps_per_epoch: int) -> LRMultiplier:
    """The :class:`LRMultiplier` for ``config`` with ``steps_per_epoch`` steps per epoch."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    total = total_steps(config, steps_per_epoch)
    warmup_steps = int(round(config.warmup_fraction * total)) if config.warmup != "none" else 0
    min_ratio = config.min_lr / config.lr if config.lr > 0 else 0.0
    if min_ratio > 1.0:
        raise ValueError(f"min_lr ({config.min_lr}) must not exceed lr ({config.lr})")
    milestones = tuple(config.lr_milestone_steps) or tuple(int(e) * steps_per_epoch for e in config.lr_steps)
    return LRMultiplier(
        total_steps=total,
        warmup_steps=warmup_steps,
        warmup=config.warmup,
        warmup_factor=config.warmup_factor,
        schedule=config.schedule,
        min_ratio=min_ratio,
        milestones=milestones,
        gamma=config.lr_gamma,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` implementing the warm-up + decay of ``config``.

    Call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, build_multiplier(config, steps_per_epoch))


def lr_curve(config: TrainConfig, steps_per_epoch: int) -> Sequence[float]:
    """The LR at every step of the run (for plots and tests)."""
    f = build_multiplier(config, steps_per_epoch)
    return [config.lr * f(step) for step in range(f.total_steps)]


@dataclass
class TimeBudget:
    """A wall-clock limit on training, optionally driving the LR schedule.

    Training stops once ``seconds`` have passed since ``start``. With
    ``drive_schedule``, after the warm-up (always counted in steps) the schedule's
    position is ``max(step, W + f * (T - W))``, recomputed at every step, where ``f`` is the elapsed fraction
    of the budget, so on a slow machine the cosine still reaches ``min_lr`` when
    the time is up instead of being cut off at a high LR ("budgeted training"; the
    losses then depend on the machine's speed, so exact resume is only promised
    without a time budget).

    Attributes:
        seconds: the budget.
        total_steps: T of the schedule.
        drive_schedule: let elapsed time advance the schedule.
        start: ``time.perf_counter()`` at the start of the run.
        warmup_steps: W; the schedule is never advanced during the warm-up.
    """

    seconds: float
    total_steps: int
    drive_schedule: bool = False
    start: float = field(default_factory=time.perf_counter)
    warmup_steps: int = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def expired(self, elapsed: Optional[float] = None) -> bool:
        """True once the budget is used up (``elapsed`` overrides the clock)."""
        return (self.elapsed() if elapsed is None else elapsed) >= self.seconds

    def advance(self, scheduler: torch.optim.lr_scheduler.LRScheduler,
                elapsed: Optional[float] = None, steps_done: Optional[int] = None) -> None:
        """Put ``scheduler`` at ``max(steps_done, W + floor(f * (T - W)))``.

        The position is recomputed from the true step count every call, so a lead
        taken while time ran ahead (data preparation, a slow step) is not carried
        forward and added to later steps.

        Args:
            scheduler: the LR scheduler, already stepped for this optimiser step.
            elapsed: overrides the clock (multi-process runs pass rank 0's value so
                every rank uses the same LR and stops at the same step).
            steps_done: optimiser steps taken so far (default: the scheduler's own
                position, for a scheduler that time has never moved).
        """
        steps_done = scheduler.last_epoch if steps_done is None else steps_done
        if not self.drive_schedule or steps_done < self.warmup_steps:
            return
        elapsed = self.elapsed() if elapsed is None else elapsed
        span = self.total_steps - self.warmup_steps
        by_time = min(self.warmup_steps + int(elapsed / self.seconds * span), self.total_steps)
        position = max(steps_done, by_time)
        if position != scheduler.last_epoch:
            scheduler.last_epoch = position - 1
            scheduler.step()  # LambdaLR: last_epoch += 1, lr = base_lr * f(last_epoch)
