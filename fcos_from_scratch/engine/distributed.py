"""Multi-process training with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=G -m fcos_from_scratch.train ...`` starts G processes
and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_distributed` reads them and joins the process group
(NCCL on CUDA, gloo on CPU); without them every helper here degrades to the
single-process case, so the training loop has no ``if distributed`` branches.

Each process sees ``batch_size`` images per step (the global batch is
``batch_size * world_size``); :class:`torch.utils.data.DistributedSampler` gives
rank r the indices ``perm[r::world_size]`` of one epoch permutation seeded by
``seed + epoch``, so the union of the per-rank batches of a step is exactly the
batch a single process with the global batch size would draw. DDP averages the
gradients; the FCOS loss averages its normalisers (number of positives, sum of
centerness targets) over processes, so losses and gradients equal the single
process's. Only rank 0 logs, writes checkpoints and evaluates.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from ..comm import _comm_device, all_reduce_mean, get_rank, get_world_size, is_distributed  # noqa: F401  (re-exported)


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that logs and writes files."""
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "cpu", backend: Optional[str] = None) -> torch.device:
    """Join the process group described by the torchrun environment variables.

    Args:
        device: "cpu" or "cuda" (CUDA processes pin ``cuda:LOCAL_RANK``).
        backend: override; default NCCL for CUDA, gloo for CPU.

    Returns:
        The device this process should use.
    """
    device = torch.device(device)
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        if device.type == "cuda" and launched_by_torchrun():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return device
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, init_method="env://")
    return device


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def reduce_dict(values: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Average a dict of scalar tensors over processes, as Python floats (for logs)."""
    if not values:
        return {}
    keys = list(values)  # insertion order; identical on every rank by construction
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])  # (len(keys),)
    stacked = all_reduce_mean(stacked)
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}


def broadcast_float(value: float, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every process (e.g. elapsed time, so all ranks agree)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.broadcast(tensor, src=src)
    return float(tensor.item())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every process."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not is_distributed():
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def build_train_sampler(dataset: Dataset, seed: int, shuffle: bool = True) -> DistributedSampler:
    """A :class:`DistributedSampler` over ``dataset`` for this process.

    Used also with one process (``num_replicas=1``) so the data order of an epoch
    depends only on ``(seed, epoch)``: call ``sampler.set_epoch(epoch)`` before
    each epoch, and a resumed run replays the same order.
    """
    return DistributedSampler(
        dataset,
        num_replicas=get_world_size(),
        rank=get_rank(),
        shuffle=shuffle,
        seed=seed,
        drop_last=False,
    )


def wrap_model(model: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model``.

    With ``sync_bn`` on CUDA, trainable BatchNorm layers become ``SyncBatchNorm``
    (statistics over the global batch; the parameters are shared, so an optimiser
    built before stays valid). PyTorch has no SyncBatchNorm on CPU: there, and
    without ``sync_bn``, each process normalises with its own batch's statistics,
    so only models without trainable BatchNorm (GroupNorm heads, frozen-BN trunks)
    train exactly like one process with the global batch.
    """
    if not is_distributed():
        return model
    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
