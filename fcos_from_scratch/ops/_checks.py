"""Input checks shared by every op: each failure names the argument and what it got.

Every error is a ``ValueError`` (our convention). Where torchvision raises another
type for the same bad input, the error class below is *also* that type, so code
written against either library keeps catching it (``docs/CONVENTIONS.md``, "Bad
input").
"""

from typing import Iterable

import torch


class OpInputError(ValueError, RuntimeError):
    """Bad input where torchvision raises ``RuntimeError``.

    torchvision's C++ kernels (``nms``, ``roi_align``) check their arguments with
    ``TORCH_CHECK`` and its Python code fails inside a broadcast: both surface as
    ``RuntimeError``.
    """


class BoxShapeError(ValueError, IndexError):
    """Boxes whose last dimension is not 4: torchvision indexes column 3 and raises ``IndexError``."""


class RoIBoxesError(ValueError, AssertionError):
    """``roi_align`` boxes of the wrong shape or type: torchvision asserts (``check_roi_boxes_shape``)."""


class NonFiniteBoxError(ValueError):
    """NaN or inf box coordinates, where an op cannot give a meaningful value."""


def check_tensor(name: str, value) -> torch.Tensor:
    """Raise ``ValueError`` unless ``value`` is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_boxes(name: str, boxes, *, allow_batch_dims: bool = False) -> torch.Tensor:
    """Check that ``boxes`` is an (N, 4) tensor (or (..., 4) when ``allow_batch_dims``)."""
    check_tensor(name, boxes)
    if allow_batch_dims:
        if boxes.dim() < 1 or boxes.shape[-1] != 4:
            raise BoxShapeError(f"{name} must have shape (..., 4), got {tuple(boxes.shape)}")
    elif boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise BoxShapeError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError(f"{name} must be a real-valued tensor, got dtype {boxes.dtype}")
    return boxes


def check_scores(name: str, scores, num_boxes: int, boxes_name: str = "boxes") -> torch.Tensor:
    """Check that ``scores`` is a finite (N,) float tensor matching ``num_boxes``."""
    check_tensor(name, scores)
    if scores.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(scores.shape)}")
    if scores.shape[0] != num_boxes:
        raise ValueError(
            f"{name} has {scores.shape[0]} entries but {boxes_name} has {num_boxes}; "
            "they must have the same length"
        )
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN; scores must not be NaN")
    return scores


def check_finite_boxes(name: str, boxes: torch.Tensor) -> torch.Tensor:
    """Raise :class:`NonFiniteBoxError` if any coordinate of ``boxes`` is NaN or inf.

    One pass over the (N, 4) coordinates, far cheaper than the (N, M) work of the ops
    that call it. Integer boxes are always finite.
    """
    if boxes.is_floating_point() and not bool(torch.isfinite(boxes).all()):
        bad = (~torch.isfinite(boxes)).reshape(-1, 4).any(dim=1).nonzero().flatten()
        raise NonFiniteBoxError(
            f"{name} has NaN or inf coordinates (rows {bad.tolist()[:8]}); a box must be "
            "four finite numbers"
        )
    return boxes


def check_reduction(reduction) -> str:
    """Check a loss ``reduction``; the message contains torchvision's wording."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(
            f"Invalid Value for arg 'reduction': '{reduction}'. Supported reduction modes: "
            "'none', 'mean', 'sum' (reduction must be one of ('none', 'mean', 'sum'))"
        )
    return reduction


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 → float32 and small ints → int32, so areas cannot overflow.

    float16 overflows at 65504, i.e. at the area of a 256 × 256 box; torchvision
    upcasts the same way, so our results have the same dtype as theirs.
    """
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def upcast_non_float(t: torch.Tensor) -> torch.Tensor:
    """Anything that is not float32/float64 → float32 (for losses, which are fractional)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()
