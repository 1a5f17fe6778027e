"""Resuming a run: which checkpoint, is it readable, does it fit, whose random state.

Everything here runs before anything is written: a missing, truncated or
mismatched checkpoint is a ``ValueError`` naming the file and what differs.
The trainer restores the optimiser, schedule and counters itself
(``trainer._restore``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from ..config import RunConfig
from . import checkpoint as ckpt
from . import distributed as dist_utils


def resume_path(config: RunConfig, out: Path, log: Callable[[str], None]) -> Optional[Path]:
    """The checkpoint to resume from; ``auto`` without ``last.pt`` says so and starts fresh."""
    if not config.resume:
        return None
    if config.resume == "auto":
        path = out / ckpt.LAST
        if not path.exists():
            log(f"--resume=auto: no {path} to resume; starting a fresh run")
            return None
        return path
    path = Path(config.resume)
    if not path.is_file():
        raise ValueError(f"--resume={config.resume!r}: no such checkpoint file")
    return path


def load_resume_state(path: Path) -> Dict[str, Any]:
    try:
        state = ckpt.load_checkpoint(path, map_location="cpu")
    except ValueError as err:
        raise ValueError(f"--resume: {err}; resume from another checkpoint or start a new --out") from None
    if state.get("version", 0) != ckpt.CHECKPOINT_VERSION:
        raise ValueError(f"--resume: {path} has checkpoint version {state.get('version')}, "
                         f"this code reads version {ckpt.CHECKPOINT_VERSION}")
    return state


def load_matching_weights(model: torch.nn.Module, state: Dict[str, Any], path: Path,
                          config: RunConfig) -> None:
    """Load a checkpoint's weights, explaining a mismatch by the config fields that differ.

    Raises:
        ValueError: a tensor is missing, unexpected or of another shape; the message
            names it and the differing config values (e.g. ``num_classes``).
    """
    own, saved = model.state_dict(), state["model"]
    bad = [f"{k} is {tuple(v.shape)} in the checkpoint but {tuple(own[k].shape)} here"
           for k, v in saved.items() if k in own and own[k].shape != v.shape]
    bad += [f"{k} is missing from the checkpoint" for k in own if k not in saved]
    bad += [f"{k} is in the checkpoint but not in this model" for k in saved if k not in own]
    if bad:
        changed = changed_keys(ckpt.flat_config(state.get("config", {})), ckpt.flat_config(config.to_dict()))
        saved_flat = ckpt.flat_config(state.get("config", {}))
        why = (f"; it was trained with " + ", ".join(f"{k}={saved_flat[k]!r}" for k in changed)
               + " (pass the same values)") if changed else ""
        raise ValueError(f"checkpoint {path} does not fit this model: {bad[0]}"
                         f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}{why}")
    ckpt.unwrap(model).load_state_dict(saved)


# Keys that may differ between a run and its resumption without changing the maths.
RESUME_FREE_KEYS = {"resume", "out", "device", "progress", "log_every", "num_workers", "data_root",
                     "overwrite", "checkpoint_every", "skip_bad", "max_minutes"}


def changed_keys(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    return sorted(k for k in current if k not in RESUME_FREE_KEYS and saved.get(k, current[k]) != current[k])


def rank_entry(per_rank: List[Any]) -> Any:
    """This rank's entry of a per-rank list (rank 0's if the world size changed)."""
    same_world = len(per_rank) == dist_utils.get_world_size()
    return per_rank[dist_utils.get_rank()] if same_world else per_rank[0]


def restore_rank_rng(state: Dict[str, Any], log: Callable[[str], None]) -> Dict[str, Any]:
    """Each rank continues its own random stream (rank 0's if the world size changed)."""
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    if len(per_rank) != dist_utils.get_world_size():
        log(f"warning: the checkpoint was written by {len(per_rank)} process(es), this run has "
            f"{dist_utils.get_world_size()}: the batch per step, the data order and the random "
            "streams differ from the run that wrote it")
    rng = rank_entry(per_rank)
    ckpt.restore_rng_state(rng)
    return rng
