# TEMPORARY stand-in until the shared-parts branch lands (replaced by its anchors.py).
from typing import List, Sequence, Tuple
import torch


def grid_points(grid_sizes: Sequence[Tuple[int, int]], strides: Sequence[int], offset: float = 0.0,
                *, dtype=torch.float32, device=None) -> List[torch.Tensor]:
    if len(grid_sizes) != len(strides):
        raise ValueError("grid_sizes and strides differ in length")
    out = []
    for (height, width), stride in zip(grid_sizes, strides):
        xs = (torch.arange(width, dtype=dtype, device=device) + offset) * stride
        ys = (torch.arange(height, dtype=dtype, device=device) + offset) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2))
    return out
