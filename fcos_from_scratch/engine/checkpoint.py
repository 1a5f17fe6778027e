"""Checkpoints: atomic writes and an exact resume.

A checkpoint holds everything that decides what the next step computes: model,
optimiser, LR scheduler and AMP scaler states, the number of finished epochs and
optimiser steps, and the random-number generators (Python, NumPy, torch CPU and
CUDA). The data order is a function of ``(seed, epoch)`` (see
:func:`fcos_from_scratch.engine.distributed.build_train_sampler`), so a run resumed
after epoch ``e`` draws the same batches, the same augmentations and the same
dropout masks as the run that never stopped, and logs the same losses.

Writes are atomic: the state goes to a temporary file in the same folder, is
flushed to disk, and is then renamed over the target with ``os.replace`` (atomic
on POSIX and Windows). A crash or a non-finite loss mid-write therefore never
leaves a truncated ``last.pt``; the previous good file stays until the new one is
complete.

Files are loaded with ``torch.load(..., weights_only=True)``: only tensors and
plain containers, never arbitrary pickled code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

CHECKPOINT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> Path:
    """``torch.save`` to ``path`` via a temporary file and ``os.replace``.

    Args:
        obj: anything ``torch.save`` accepts.
        path: destination; its folder is created if missing.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def capture_rng_state() -> Dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_tuples_to_lists(v) for v in value]
    return value


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    epoch: int,
    step: int,
    config: Dict[str, Any],
    scaler: Optional[Any] = None,
    best_metric: Optional[float] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The dict that :func:`resume_from` restores.

    Args:
        epoch: number of *finished* epochs (training resumes at this epoch index).
        step: number of optimiser steps taken so far.
        config: ``RunConfig.to_dict()`` (training and detector config), so
            ``predict``/``evaluate`` can rebuild any detector from the checkpoint alone.
        extra: small plain values (e.g. class names).
    """
    return {
        "version": CHECKPOINT_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "config": dict(config),
        "best_metric": best_metric,
        "rng": capture_rng_state(),
        "extra": dict(extra or {}),
    }


def flat_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint's ``config`` as one flat dict (training and detector fields together)."""
    if "train" in config:
        return {**dict(config.get("model") or {}), **dict(config["train"])}
    return dict(config)


def load_checkpoint(path: Union[str, os.PathLike], map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save` (weights only, no code).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated or foreign files
        raise ValueError(f"checkpoint {path} could not be read: {err}") from err
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"checkpoint {path} has no 'model' entry; is it a training checkpoint?")
    return state


def resume_from(
    state: Dict[str, Any],
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = None,
    scaler: Optional[Any] = None,
    restore_rng: bool = True,
) -> Dict[str, Any]:
    """Load a checkpoint dict into the training objects.

    Returns:
        ``{"epoch", "step", "best_metric"}`` to continue counting from.
    """
    if state.get("version", 0) != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {state.get('version')} != {CHECKPOINT_VERSION}")
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        restore_rng_state(state["rng"])
    return {"epoch": state["epoch"], "step": state["step"], "best_metric": state.get("best_metric")}
