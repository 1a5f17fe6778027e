"""Process-group primitives that every layer may use (losses, the engine).

They depend on nothing but ``torch.distributed`` and behave as the identity in a
single process, so a loss can average its normalisers over processes without
importing the training engine.
"""

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _comm_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over processes (a new tensor; the input is unchanged).

    This is how normalisers such as the number of positive points are shared
    ([fcos] Eq. (2) divides by N_pos of the whole global batch).
    """
    if not is_distributed():
        return tensor.clone()
    out = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / get_world_size()).to(tensor.device)
