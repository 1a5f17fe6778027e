"""Points and anchors on the feature-map grid of every pyramid level.

A dense detector makes one set of predictions per feature-map cell. Where in the
image a cell "is" comes from the stride ``s`` of its level: cell ``(row, col)``
sits at ``(x, y) = ((col + offset) * s, (row + offset) * s)``.

* :func:`grid_points` gives those locations, row-major like ``feature.flatten(2)``.
  ``offset = 0`` puts them at the cell's top-left corner (torchvision's anchor
  centres); ``offset = 0.5`` at the cell centre (where point-based detectors put
  their points, see ``docs/CONVENTIONS.md``).
* :class:`AnchorGenerator` places ``A`` reference boxes ("anchors",
  [faster-rcnn] Sec. 3.1.1) of several sizes and aspect ratios around every
  location. Names, rounding and order are torchvision's ``AnchorGenerator``
  ([torchvision]), so a torchvision user changes one import -- except ``forward``,
  which takes plain sizes instead of an ``ImageList`` and feature maps.
* :func:`ssd_anchors` places them the way [ssd] Sec. 2.2 and [refinedet] do:
  centred in their cells (``offset = 0.5``), spaced by ``image size / feature
  size`` (a 3x3 map of a 320-px image has steps of 106.7 px, not 128), and not
  rounded to whole pixels.

Anchor order, shared with torchvision and relied upon by every head that predicts
``A`` values per cell: level by level; inside a level, location by location in
row-major order; at each location, cell anchor by cell anchor. Cell anchors are
ordered aspect ratio first, then size: ``index = ratio_index * len(sizes) + size_index``.
"""

import numbers
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["grid_points", "AnchorGenerator", "ssd_anchors"]

Stride = Union[int, float, torch.Tensor, Sequence]  # s, or (s_h, s_w)


def _stride_pair(stride: Stride, level: int) -> Tuple:
    """``s`` or ``(s_h, s_w)`` (numbers or 0-dim tensors) -> ``(s_h, s_w)``."""
    if isinstance(stride, (numbers.Real, torch.Tensor)) and not isinstance(stride, bool):
        if isinstance(stride, torch.Tensor) and stride.dim() != 0:
            raise ValueError(f"strides[{level}] must be a number, a 0-dim tensor or a pair, "
                             f"got a tensor of shape {tuple(stride.shape)}")
        return stride, stride
    if isinstance(stride, Sequence) and len(stride) == 2:
        return stride[0], stride[1]
    raise ValueError(f"strides[{level}] must be a number or a pair (s_h, s_w), got {stride!r}")


def _size_pair(name: str, size) -> Tuple[int, int]:
    """Check an (H, W) pair of non-negative ints (tuple, list or torch.Size)."""
    if len(size) != 2 or not all(isinstance(v, numbers.Integral) and v >= 0 for v in size):
        raise ValueError(f"{name} must be a pair (H, W) of non-negative ints, got {size!r}")
    return int(size[0]), int(size[1])


def grid_points(
    grid_sizes: Sequence[Tuple[int, int]],
    strides: Sequence[Stride],
    offset: float = 0.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> List[torch.Tensor]:
    """The (x, y) image location of every cell of every level.

    ``x = (col + offset) * s_w`` and ``y = (row + offset) * s_h``, computed in
    ``dtype`` exactly in that order (so ``offset=0.5`` gives the cell centres
    ``(i + 0.5) * s`` bit for bit).

    Args:
        grid_sizes: L sizes (H_l, W_l) of the feature maps.
        strides: L strides in pixels: a number or 0-dim tensor ``s`` or a pair
            ``(s_h, s_w)``.
        offset: where inside its cell a point sits, in cells: 0.0 top-left corner
            (torchvision's anchors), 0.5 centre.
        dtype, device: of the result.

    Returns:
        L tensors (H_l * W_l, 2), (x, y) pixels, row-major: point ``row * W_l + col``.
    """
    if len(grid_sizes) != len(strides):
        raise ValueError(
            f"grid_sizes has {len(grid_sizes)} levels but strides has {len(strides)}"
        )
    points_per_level = []
    for level, (size, stride) in enumerate(zip(grid_sizes, strides)):
        height, width = _size_pair(f"grid_sizes[{level}]", size)
        stride_h, stride_w = _stride_pair(stride, level)
        xs = (torch.arange(width, dtype=dtype, device=device) + offset) * stride_w  # (W,)
        ys = (torch.arange(height, dtype=dtype, device=device) + offset) * stride_h  # (H,)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
        points_per_level.append(torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2))  # (HW, 2)
    return points_per_level


def _per_level(name: str, value) -> Tuple[Tuple, ...]:
    """Validate a tuple of per-level tuples of positive numbers."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty tuple of per-level tuples, got {value!r}")
    for level, entry in enumerate(value):
        if (not isinstance(entry, (list, tuple)) or not entry
                or not all(isinstance(v, numbers.Real) and v > 0 for v in entry)):
            raise ValueError(f"{name}[{level}] must be a non-empty tuple of positive "
                             f"numbers, got {entry!r}")
    return tuple(tuple(entry) for entry in value)


class AnchorGenerator(nn.Module):
    """Anchors of several sizes and aspect ratios at every cell of every level.

    ([faster-rcnn] Sec. 3.1.1, one size per level as in [fpn] Sec. 4.1.)
    An anchor of size ``S`` and aspect ratio ``r = h / w`` has area ``S ** 2``:
    ``w = S / sqrt(r)``, ``h = S * sqrt(r)``; its cell anchor is the zero-centred
    box ``round((-w / 2, -h / 2, w / 2, h / 2))`` (torchvision rounds half to even,
    so a 45.25-wide half-width becomes 45), and the anchors of a level are the
    cell anchors shifted to :func:`grid_points` with ``offset = 0``.

    Args:
        sizes: L tuples of anchor sizes S in pixels, one tuple per level, e.g.
            ``((32,), (64,), (128,), (256,), (512,))``. A flat tuple of numbers means
            one size per level (torchvision's shorthand).
        aspect_ratios: L tuples of ratios h / w; a flat tuple is repeated for every
            level (torchvision's shorthand).

    Attributes:
        cell_anchors: L tensors (A_l, 4) xyxy, A_l = len(sizes[l]) * len(aspect_ratios[l]).
    """

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        super().__init__()
        if isinstance(sizes, (list, tuple)) and sizes and not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((size,) for size in sizes)
        if (isinstance(aspect_ratios, (list, tuple)) and aspect_ratios
                and not isinstance(aspect_ratios[0], (list, tuple))):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        self.sizes = _per_level("sizes", sizes)
        self.aspect_ratios = _per_level("aspect_ratios", aspect_ratios)
        if len(self.sizes) != len(self.aspect_ratios):
            raise ValueError(
                f"sizes has {len(self.sizes)} levels but aspect_ratios has "
                f"{len(self.aspect_ratios)}; give one tuple of each per pyramid level"
            )
        self.cell_anchors = [self.generate_anchors(s, r)
                             for s, r in zip(self.sizes, self.aspect_ratios)]

    @staticmethod
    def generate_anchors(
        scales: Sequence[float],
        aspect_ratios: Sequence[float],
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
    ) -> torch.Tensor:
        """Zero-centred anchors for every (ratio, size) pair, ratio-major.

        Args:
            scales: sizes S (sqrt of the anchor area), pixels.
            aspect_ratios: ratios r = h / w.
            dtype, device: of the result (computed in ``dtype``, as torchvision).

        Returns:
            (len(aspect_ratios) * len(scales), 4) xyxy, rounded to whole pixels.
        """
        scales = torch.as_tensor(scales, dtype=dtype, device=device)  # (S,)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # (R,)
        h_ratios = torch.sqrt(ratios)  # h = S * sqrt(r)
        w_ratios = 1 / h_ratios  # w = S / sqrt(r), so w * h = S ** 2
        widths = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (R*S,) ratio-major
        heights = (h_ratios[:, None] * scales[None, :]).reshape(-1)  # (R*S,)
        return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()  # (R*S, 4)

    def set_cell_anchors(self, dtype: torch.dtype, device: Optional[torch.device]) -> None:
        """Move the cell anchors to ``dtype`` and ``device`` (values are whole pixels)."""
        self.cell_anchors = [a.to(dtype=dtype, device=device) for a in self.cell_anchors]

    def num_anchors_per_location(self) -> List[int]:
        """A_l = len(sizes[l]) * len(aspect_ratios[l]) for every level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes: Sequence[Tuple[int, int]],
                     strides: Sequence[Stride]) -> List[torch.Tensor]:
        """Every cell anchor shifted to every location of its level.

        Args:
            grid_sizes: L sizes (H_l, W_l).
            strides: L strides: ``s`` or ``(s_h, s_w)`` (ints or 0-dim tensors).

        Returns:
            L tensors (H_l * W_l * A_l, 4) xyxy pixels, dtype and device of
            ``cell_anchors``; anchor ``(row * W_l + col) * A_l + a`` is cell anchor
            ``a`` centred at ``(col * s_w, row * s_h)``.
        """
        if not len(grid_sizes) == len(strides) == len(self.cell_anchors):
            raise ValueError(
                f"grid_sizes ({len(grid_sizes)}) and strides ({len(strides)}) need one entry "
                f"per level of the generator ({len(self.cell_anchors)} levels)"
            )
        anchors = []
        for cell, size, stride in zip(self.cell_anchors, grid_sizes, strides):
            (points,) = grid_points([size], [stride], 0.0, dtype=cell.dtype, device=cell.device)
            shifts = torch.cat([points, points], dim=1)  # (HW, 4) = (x, y, x, y)
            anchors.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))  # (HW*A, 4)
        return anchors

    def forward(
        self,
        image_size: Tuple[int, int],
        feature_sizes: Sequence[Tuple[int, int]],
        batch_size: int = 1,
        *,
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
    ) -> List[torch.Tensor]:
        """The anchors of every image of a padded batch.

        torchvision's ``forward(image_list, feature_maps)`` reads exactly these three
        numbers from its arguments: ``image_size = image_list.tensors.shape[-2:]``,
        ``feature_sizes = [f.shape[-2:] for f in feature_maps]``,
        ``batch_size = len(image_list.image_sizes)`` (and dtype/device from the
        first feature map). The stride of level l is, as in torchvision, the
        integer division ``(H // H_l, W // W_l)``.

        Args:
            image_size: (H, W) of the padded batch tensor.
            feature_sizes: L sizes (H_l, W_l), none larger than the image.
            batch_size: B, the number of images.
            dtype, device: of the anchors.

        Returns:
            B tensors (N, 4) xyxy pixels, N = sum_l H_l * W_l * A_l, identical for
            every image.
        """
        height, width = _size_pair("image_size", image_size)
        if not isinstance(batch_size, numbers.Integral) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
        strides = []
        for level, size in enumerate(feature_sizes):
            grid_h, grid_w = _size_pair(f"feature_sizes[{level}]", size)
            if not (0 < grid_h <= height and 0 < grid_w <= width):
                raise ValueError(
                    f"feature_sizes[{level}] = {tuple(size)} must be positive and no larger "
                    f"than image_size = {(height, width)}"
                )
            strides.append((height // grid_h, width // grid_w))
        self.set_cell_anchors(dtype, device)
        all_levels = torch.cat(self.grid_anchors(feature_sizes, strides))  # (N, 4)
        return [all_levels.clone() for _ in range(batch_size)]


def per_level_values(values: Sequence[float], counts: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """One value per level repeated for every cell of that level.

    Args:
        values: L numbers (a stride, a size range bound, ...).
        counts: L cell counts N_l (e.g. ``len(grid_points(...)[l])``).
        like: a tensor whose dtype and device the result takes.

    Returns:
        (N,) with N = sum(counts), levels in order (the order of :func:`grid_points`).
    """
    if len(values) != len(counts):
        raise ValueError(f"values has {len(values)} levels but counts has {len(counts)}")
    values = torch.tensor(list(values), dtype=like.dtype, device=like.device)  # (L,)
    return values.repeat_interleave(torch.tensor(list(counts), dtype=torch.int64, device=like.device))  # (N,)


def ssd_anchors(
    image_size: Tuple[int, int],
    feature_sizes: Sequence[Tuple[int, int]],
    sizes: Sequence[float],
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5),
    *,
    offset: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """SSD-style anchors: one size per level, centred in their cells ([ssd] Sec. 2.2).

    Level l with a (H_l, W_l) feature map of an (H, W) image has steps
    ``(H / H_l, W / W_l)`` (floats: no rounding, so the cells tile the image
    exactly) and, at every cell, one anchor per aspect ratio ``r = h / w`` and size
    ``S`` of level l, of area ``S ** 2``: ``w = S / sqrt(r)``, ``h = S * sqrt(r)``
    (the rule of :class:`AnchorGenerator`), centred at ``((col + offset) * step_w,
    (row + offset) * step_h)``. Anchors may extend past the image (SSD does not
    clip them either; its optional clip is off in [refinedet]).

    Args:
        image_size: (H, W) of the network input.
        feature_sizes: L sizes (H_l, W_l).
        sizes: L anchor sizes S_l in pixels (sqrt of the area), one per level, or
            L tuples of sizes (SSD's extra ``sqrt(S_l S_l+1)`` anchor is a second size).
        aspect_ratios: ratios h / w, the same at every level ([ssd]: 1, 2, 1/2).
        offset: anchor centre inside its cell, in cells (0.5 = the centre).
        dtype, device: of the result.

    Returns:
        (N, 4) xyxy pixels, N = sum_l H_l W_l A with A = len(aspect_ratios) x sizes
        per level; order: level, then cell row-major, then ratio, then size (the
        order of :func:`grid_points` and :class:`AnchorGenerator`'s cell anchors).
    """
    height, width = _size_pair("image_size", image_size)
    if len(sizes) != len(feature_sizes):
        raise ValueError(f"sizes has {len(sizes)} entries but feature_sizes has {len(feature_sizes)} "
                         f"levels; give one anchor size per level")
    sizes = _per_level("sizes", [s if isinstance(s, (list, tuple)) else (s,) for s in sizes])
    _per_level("aspect_ratios", [tuple(aspect_ratios)])
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64)[:, None]  # (R, 1)
    anchors = []
    for level, (size, anchor_size) in enumerate(zip(feature_sizes, sizes)):
        grid_h, grid_w = _size_pair(f"feature_sizes[{level}]", size)
        if grid_h < 1 or grid_w < 1:
            raise ValueError(f"feature_sizes[{level}] must be positive, got {tuple(size)}")
        (points,) = grid_points([(grid_h, grid_w)], [(height / grid_h, width / grid_w)], offset,
                                dtype=torch.float64)  # (HW, 2) cell centres
        level_sizes = torch.as_tensor(anchor_size, dtype=torch.float64)[None, :]  # (1, S)
        half_w = (level_sizes / ratios.sqrt() / 2).reshape(-1)  # (A,) w = S / sqrt(r), ratio-major
        half_h = (level_sizes * ratios.sqrt() / 2).reshape(-1)  # (A,) h = S * sqrt(r)
        half = torch.stack([-half_w, -half_h, half_w, half_h], dim=1)  # (A, 4)
        shifts = torch.cat([points, points], dim=1)  # (HW, 4)
        anchors.append((shifts[:, None, :] + half[None]).reshape(-1, 4))  # (HW A, 4)
    return torch.cat(anchors).to(dtype=dtype, device=device)  # (N, 4)
