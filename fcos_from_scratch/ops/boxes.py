"""Box formats, areas, clipping and the IoU family, in plain tensor ops.

Boxes are ``xyxy`` continuous pixel coordinates (``docs/CONVENTIONS.md``): a box
``(x1, y1, x2, y2)`` has width ``x2 - x1`` and height ``y2 - y1``, no ``+ 1``.

Names, signatures and values follow ``torchvision.ops`` so a torchvision user changes
one import. Deliberate differences (``docs/CONVENTIONS.md``, "Malformed boxes"):

* torchvision divides by a union (or an enclosing area) of zero and returns NaN for
  degenerate boxes; here such a ratio is 0.
* A box with ``x2 < x1`` (or ``y2 < y1``) is read as the zero-width (zero-height)
  box at ``x1`` (``y1``), so areas are >= 0 and every IoU stays in its range;
  torchvision returns a negative area and, e.g., a GIoU of 100.
* NaN or inf coordinates raise ``ValueError``; torchvision returns NaN or silently
  wrong numbers.

Papers:
    [giou] Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019.
    [diou] Zheng et al., "Distance-IoU Loss", AAAI 2020 (DIoU and CIoU).
"""

import math
from typing import Tuple

import torch

from ._checks import check_boxes, check_choice, check_finite_boxes, upcast

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


# ---------------------------------------------------------------------------
# Formats, areas, clipping
# ---------------------------------------------------------------------------

def _to_xyxy(boxes: torch.Tensor, in_fmt: str) -> torch.Tensor:
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":  # (x1, y1, w, h)
        return torch.stack([a, b, a + c, b + d], dim=-1)
    if in_fmt == "cxcywh":  # (cx, cy, w, h)
        return torch.stack([a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d], dim=-1)
    return boxes


def _from_xyxy(boxes: torch.Tensor, out_fmt: str) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    if out_fmt == "xywh":
        return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
    return boxes


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Convert boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    ``xyxy`` = (x1, y1, x2, y2) corners; ``xywh`` = (x1, y1, width, height), the COCO
    format; ``cxcywh`` = (centre x, centre y, width, height).

    Args:
        boxes: (N, 4) boxes in ``in_fmt`` (any leading dimensions are accepted).
        in_fmt: format of ``boxes``.
        out_fmt: format of the result.

    Returns:
        (N, 4) boxes in ``out_fmt``; a copy when the two formats are equal.
    """
    check_boxes("boxes", boxes, allow_batch_dims=True)
    check_choice("in_fmt", in_fmt, BOX_FORMATS)
    check_choice("out_fmt", out_fmt, BOX_FORMATS)
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy(_to_xyxy(boxes, in_fmt), out_fmt)


def order_corners(boxes: torch.Tensor) -> torch.Tensor:
    """Read a box with ``x2 < x1`` as the zero-width box at ``x1`` (``y2 < y1`` likewise).

    Returns ``(x1, y1, max(x1, x2), max(y1, y2))``: well-formed boxes are unchanged
    (bit for bit), and an inverted box becomes an empty box instead of one with a
    negative width, whose "area" would be negative and push IoU, GIoU and DIoU out
    of their ranges.

    Args:
        boxes: (..., 4) xyxy boxes.

    Returns:
        (..., 4) boxes with ``x2 >= x1`` and ``y2 >= y1``.
    """
    corner1, corner2 = boxes[..., :2], boxes[..., 2:]  # (..., 2) each
    # where, not max: at x2 == x1 (a flat box) max would split the gradient between
    # the two coordinates; a well-formed box must keep its gradient unchanged
    corner2 = torch.where(corner2 < corner1, corner1, corner2)
    return torch.cat([corner1, corner2], dim=-1)  # (..., 4)


def prepare_boxes(name: str, boxes: torch.Tensor) -> torch.Tensor:
    """Checked, finite, upcast and corner-ordered boxes: what the IoU family computes on.

    float16/bfloat16 → float32 and small ints → int32 (:func:`upcast`); NaN or inf
    coordinates raise ``ValueError``; inverted boxes become empty (:func:`order_corners`).
    """
    check_boxes(name, boxes)
    check_finite_boxes(name, boxes)
    return order_corners(upcast(boxes))


def _area(boxes: torch.Tensor) -> torch.Tensor:
    """(N,) areas of prepared boxes (see :func:`prepare_boxes`)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box.

    A box with ``x2 < x1`` or ``y2 < y1`` has area 0 (it is read as an empty box,
    :func:`order_corners`), never a negative number.

    Args:
        boxes: (N, 4) xyxy boxes, finite.

    Returns:
        (N,) areas >= 0; float16/bfloat16 are computed in float32 and small integer
        types in int32 so that areas cannot overflow (as torchvision).

    Raises:
        ValueError: ``boxes`` is not (N, 4) (also an ``IndexError``, as torchvision's),
            or has a NaN or inf coordinate.
    """
    return _area(prepare_boxes("boxes", boxes))


def clip_boxes_to_image(boxes: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Clip boxes so they lie inside an image of ``size = (H, W)``.

    x coordinates are clamped to ``[0, W]`` and y coordinates to ``[0, H]``: with
    continuous coordinates the right edge of the image is ``x = W``.

    Args:
        boxes: (..., 4) xyxy boxes.
        size: (H, W) of the image.

    Returns:
        (..., 4) clipped boxes, same dtype.
    """
    check_boxes("boxes", boxes, allow_batch_dims=True)
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {size!r}")
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of the boxes whose width and height are both ``>= min_size``.

    Args:
        boxes: (N, 4) xyxy boxes.
        min_size: minimum width and height, in pixels.

    Returns:
        (N',) int64 indices of the kept boxes, in increasing order. A filter keeps
        only what it can vouch for: an inverted box (negative width or height) is
        removed for any ``min_size >= 0``, and a box with a NaN coordinate always
        (a comparison with NaN is false), as torchvision.
    """
    check_boxes("boxes", boxes)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    keep = (widths >= min_size) & (heights >= min_size)
    return torch.where(keep)[0]


# ---------------------------------------------------------------------------
# The IoU family: (N, 4) x (M, 4) -> (N, M)
# ---------------------------------------------------------------------------

def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, and 0 where both are 0.

    Here ``0 <= numerator <= denominator`` (an intersection and a union, or an
    uncovered area and an enclosing area), so where the denominator is 0 the
    numerator is 0 too: dividing by the smallest positive float instead gives 0 with
    a finite gradient, and costs one cheap pass instead of two ``where``s.
    """
    dtype = denominator.dtype
    smallest = torch.finfo(dtype).tiny if dtype.is_floating_point else 1  # integer areas: 1
    return numerator / denominator.clamp(min=smallest)


def _columns(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes → (4, N) contiguous rows x1, y1, x2, y2 (faster broadcasting)."""
    return boxes.t().contiguous()


def _box_inter_union(boxes1: torch.Tensor, boxes2: torch.Tensor):
    """Pairwise intersection and union areas, (N, M) each.

    x and y are handled separately on contiguous (N, M) tensors rather than slicing
    an (N, M, 2) tensor of corners, and results are updated in place wherever autograd
    does not need the old values (``sub_`` after ``min``, ``relu_``): on 3000 x 2000
    boxes this is about twice as fast as the out-of-place version.
    """
    area1 = _area(boxes1)
    area2 = _area(boxes2)
    x1, y1, x2, y2 = _columns(boxes1)[:, :, None].unbind(0)  # (N, 1) each
    u1, v1, u2, v2 = _columns(boxes2).unbind(0)  # (M,) each
    inter_w = torch.min(x2, u2).sub_(torch.max(x1, u1)).relu_()  # (N, M)
    inter_h = torch.min(y2, v2).sub_(torch.max(y1, v1)).relu_()  # (N, M)
    inter = inter_w * inter_h  # (N, M)
    # (area1 + area2) - inter, in torchvision's order, so results are bit-identical.
    union = (area1[:, None] + area2[None, :]).sub_(inter)  # (N, M)
    return inter, union


def _enclosing_wh(boxes1: torch.Tensor, boxes2: torch.Tensor):
    """Width and height of the smallest box enclosing each pair, (N, M) each."""
    x1, y1, x2, y2 = _columns(boxes1)[:, :, None].unbind(0)  # (N, 1) each
    u1, v1, u2, v2 = _columns(boxes2).unbind(0)  # (M,) each
    width = torch.max(x2, u2).sub_(torch.min(x1, u1)).relu_()  # (N, M)
    height = torch.max(y2, v2).sub_(torch.min(y1, v1)).relu_()  # (N, M)
    return width, height


def _check_pair(boxes1, boxes2):
    return prepare_boxes("boxes1", boxes1), prepare_boxes("boxes2", boxes2)


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """:func:`box_iou` without the checks, for boxes already through :func:`prepare_boxes`.

    NMS computes many small IoU matrices of boxes it prepared once.
    """
    inter, union = _box_inter_union(boxes1, boxes2)
    return _safe_divide(inter, union)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union.

    IoU(A, B) = |A ∩ B| / |A ∪ B|; we define it as 0 where |A ∪ B| = 0 (two
    zero-area boxes), where torchvision returns NaN. Inverted boxes are empty
    (:func:`order_corners`).

    Args:
        boxes1: (N, 4) xyxy boxes, finite.
        boxes2: (M, 4) xyxy boxes, finite.

    Returns:
        (N, M) IoU in [0, 1] (float; integer inputs give float32).

    Raises:
        ValueError: a shape other than (N, 4) (also an ``IndexError``, as
            torchvision's), or a NaN or inf coordinate.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    return pairwise_iou(boxes1, boxes2)


def elementwise_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of row n of ``boxes1`` with row n of ``boxes2`` (the diagonal of :func:`box_iou`).

    A detector comparing each prediction with *its own* target (IoU-guided labels,
    [refinedetlite] Eq. (3)) needs N values, not an N x N matrix.

    Args:
        boxes1, boxes2: (N, 4) xyxy, same N.

    Returns:
        (N,) IoU in [0, 1]; 0 where the union is empty.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"boxes1 and boxes2 must have the same shape (N, 4), got "
                         f"{tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    inter_w = (torch.min(boxes1[:, 2], boxes2[:, 2]) - torch.max(boxes1[:, 0], boxes2[:, 0])).clamp(min=0)
    inter_h = (torch.min(boxes1[:, 3], boxes2[:, 3]) - torch.max(boxes1[:, 1], boxes2[:, 1])).clamp(min=0)
    inter = inter_w * inter_h  # (N,)
    return _safe_divide(inter, _area(boxes1) + _area(boxes2) - inter)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU, [giou] Eq. in Alg. 1.

    GIoU = IoU - |C \\ (A ∪ B)| / |C|, with C the smallest box enclosing A and B.
    The penalty is 0 where |C| = 0 (torchvision: NaN).

    Args:
        boxes1: (N, 4) xyxy boxes.
        boxes2: (M, 4) xyxy boxes.

    Returns:
        (N, M) GIoU in [-1, 1].
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    inter, union = _box_inter_union(boxes1, boxes2)
    iou = _safe_divide(inter, union)
    enclosing_w, enclosing_h = _enclosing_wh(boxes1, boxes2)
    enclosing_area = enclosing_w * enclosing_h  # (N, M)
    return iou - _safe_divide(enclosing_area - union, enclosing_area)


def _diou_and_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float):
    """Pairwise DIoU and IoU, (N, M) each: DIoU = IoU - ρ²(b1, b2) / (c² + eps)."""
    inter, union = _box_inter_union(boxes1, boxes2)
    iou = _safe_divide(inter, union)
    enclosing_w, enclosing_h = _enclosing_wh(boxes1, boxes2)
    diagonal_sq = enclosing_w ** 2 + enclosing_h ** 2 + eps  # c², (N, M)
    centre1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2  # (N, 2)
    centre2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2  # (M, 2)
    offset = upcast(centre1[:, None, :] - centre2[None, :, :])  # (N, M, 2)
    centre_distance_sq = offset[..., 0] ** 2 + offset[..., 1] ** 2  # ρ², (N, M)
    return iou - centre_distance_sq / diagonal_sq, iou


def distance_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise distance IoU, [diou] Eq. (6).

    DIoU = IoU - ρ²(b1, b2) / c², with ρ the distance between the box centres and c
    the diagonal of the enclosing box; ``eps`` is added to c² (as torchvision).

    Args:
        boxes1: (N, 4) xyxy boxes.
        boxes2: (M, 4) xyxy boxes.
        eps: added to the squared diagonal.

    Returns:
        (N, M) DIoU in [-1, 1].
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    diou, _ = _diou_and_iou(boxes1, boxes2, eps)
    return diou


def safe_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``atan2(y, x)`` with a zero gradient at ``y = x = 0`` instead of NaN.

    For x > 0 this is ``atan(y / x)``; for a zero-height box it is π/2 (the limit),
    and for a box with zero width and height it is 0.
    """
    both_zero = (x == 0) & (y == 0)
    return torch.atan2(y, torch.where(both_zero, torch.ones_like(x), x))


def aspect_ratio_term(w1, h1, w2, h2) -> torch.Tensor:
    """CIoU's aspect-ratio consistency v = 4/π² (arctan(w1/h1) - arctan(w2/h2))², [diou] Eq. (9).

    Written with :func:`safe_atan2` so degenerate boxes give finite values and
    gradients (torchvision's ``atan(w / h)`` gives NaN at w = h = 0). Shapes broadcast.
    """
    return (4 / math.pi ** 2) * (safe_atan2(w1, h1) - safe_atan2(w2, h2)) ** 2


def complete_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise complete IoU, [diou] Eqs. (9)-(11).

    CIoU = DIoU - α v, with v the aspect-ratio term (:func:`aspect_ratio_term`) and
    α = v / (1 - IoU + v + eps) treated as a constant (no gradient), as in the paper.

    Args:
        boxes1: (N, 4) xyxy boxes.
        boxes2: (M, 4) xyxy boxes.
        eps: added to the squared diagonal and to the denominator of α.

    Returns:
        (N, M) CIoU in [-2, 1]: DIoU >= -1 and α v <= v <= 1.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    diou, iou = _diou_and_iou(boxes1, boxes2, eps)
    w1 = (boxes1[:, 2] - boxes1[:, 0])[:, None]  # (N, 1)
    h1 = (boxes1[:, 3] - boxes1[:, 1])[:, None]
    w2 = (boxes2[:, 2] - boxes2[:, 0])[None, :]  # (1, M)
    h2 = (boxes2[:, 3] - boxes2[:, 1])[None, :]
    v = aspect_ratio_term(w1, h1, w2, h2)  # (N, M)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


# ---------------------------------------------------------------------------
# Plain-loop references: the definitions, one pair of boxes at a time
# ---------------------------------------------------------------------------

def _scalar_area(box) -> float:
    """Area of one xyxy box given as four Python numbers."""
    x1, y1, x2, y2 = box
    return (x2 - x1) * (y2 - y1)


def _scalar_inter_union(a, b):
    """Intersection and union areas of two xyxy boxes, [giou] Alg. 1 steps 3-4."""
    inter_w = max(min(a[2], b[2]) - max(a[0], b[0]), 0)  # 0 when they do not overlap in x
    inter_h = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = inter_w * inter_h
    union = (_scalar_area(a) + _scalar_area(b)) - inter  # same order as box_iou
    return inter, union


def _ratio_or_zero(numerator, denominator) -> float:
    """``numerator / denominator``, and 0 when the denominator is 0 (docs/CONVENTIONS.md)."""
    return numerator / denominator if denominator != 0 else 0.0


def _pairwise_reference(boxes1, boxes2, pair_fn) -> torch.Tensor:
    """(N, M) table ``pair_fn(boxes1[i], boxes2[j])``, filled one entry at a time.

    The arithmetic is on Python numbers (doubles for float boxes), rounded once to
    the result dtype of the fast op: float32 for float16/bfloat16/integer boxes.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    dtype = torch.promote_types(torch.promote_types(boxes1.dtype, boxes2.dtype), torch.float32)
    rows1, rows2 = boxes1.tolist(), boxes2.tolist()  # lists of [x1, y1, x2, y2]
    table = torch.zeros(len(rows1), len(rows2), dtype=dtype, device=boxes1.device)  # (N, M)
    for i, a in enumerate(rows1):
        for j, b in enumerate(rows2):
            table[i, j] = pair_fn(a, b)
    return table


def _scalar_iou(a, b) -> float:
    inter, union = _scalar_inter_union(a, b)
    return _ratio_or_zero(inter, union)


def _scalar_giou(a, b) -> float:
    inter, union = _scalar_inter_union(a, b)
    enclosing_w = max(max(a[2], b[2]) - min(a[0], b[0]), 0)  # C, the smallest box around both
    enclosing_h = max(max(a[3], b[3]) - min(a[1], b[1]), 0)
    enclosing_area = enclosing_w * enclosing_h
    return _ratio_or_zero(inter, union) - _ratio_or_zero(enclosing_area - union, enclosing_area)


def box_iou_reference(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU as a plain double loop: the definition, for lessons and tests.

    For every pair (A, B): ``w = max(min(x2, x2') - max(x1, x1'), 0)`` (h likewise),
    ``|A ∩ B| = w h``, ``|A ∪ B| = |A| + |B| - |A ∩ B|`` and IoU = |A ∩ B| / |A ∪ B|,
    0 where the union is 0 (as :func:`box_iou`). No gradient.

    Args:
        boxes1: (N, 4) xyxy boxes.
        boxes2: (M, 4) xyxy boxes.

    Returns:
        (N, M) IoU, with the dtype and device :func:`box_iou` returns; computed in
        Python floats and rounded once, so float32 results may differ from
        :func:`box_iou` in the last bit.
    """
    return _pairwise_reference(boxes1, boxes2, _scalar_iou)


def generalized_box_iou_reference(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU as a plain double loop, exactly [giou] Alg. 1.

    For every pair (A, B), with C the smallest box enclosing both:
    GIoU = IoU - |C \\ (A ∪ B)| / |C| = IoU - (|C| - |A ∪ B|) / |C|; each ratio is
    0 where its denominator is 0 (as :func:`generalized_box_iou`). No gradient.

    Args:
        boxes1: (N, 4) xyxy boxes.
        boxes2: (M, 4) xyxy boxes.

    Returns:
        (N, M) GIoU in [-1, 1], with the dtype and device of
        :func:`generalized_box_iou`.
    """
    return _pairwise_reference(boxes1, boxes2, _scalar_giou)


# ---------------------------------------------------------------------------
# Resizing
# ---------------------------------------------------------------------------

def _check_size(name: str, size) -> Tuple[float, float]:
    """``size`` must be a pair ``(H, W)`` of positive finite numbers."""
    import numbers  # numbers.Real also admits NumPy scalars

    if isinstance(size, torch.Tensor):
        size = size.tolist()
    if not isinstance(size, (tuple, list)) or len(size) != 2 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Real) or not 0 < s < math.inf
        for s in size
    ):
        raise ValueError(f"{name} must be a pair (H, W) of positive numbers, got {size!r}")
    return size[0], size[1]


def scale_boxes(boxes: torch.Tensor, from_size, to_size) -> torch.Tensor:
    """Rescale xyxy boxes from an image of size ``from_size`` to one of ``to_size``.

    x coordinates are multiplied by ``W_to / W_from`` and y coordinates by
    ``H_to / H_from``. Exactly ``torchvision.models.detection.transform.resize_boxes``
    ([torchvision]): each ratio is a float32 division of float32 sizes, and the
    boxes are multiplied by it as a 0-dim float32 tensor, so results are
    bit-identical to it and the dtype follows PyTorch's promotion (float boxes
    keep their dtype, integer boxes give float32).

    Args:
        boxes: (N, 4) xyxy boxes in pixels of the ``from_size`` image.
        from_size: (H, W) of the image the boxes are in.
        to_size: (H, W) of the image to map them to.

    Returns:
        (N, 4) xyxy boxes in pixels of the ``to_size`` image.
    """
    check_boxes("boxes", boxes)
    from_height, from_width = _check_size("from_size", from_size)
    to_height, to_width = _check_size("to_size", to_size)

    def ratio(new: float, old: float) -> torch.Tensor:  # 0-dim float32, as torchvision
        as_float32 = dict(dtype=torch.float32, device=boxes.device)
        return torch.tensor(new, **as_float32) / torch.tensor(old, **as_float32)

    ratio_height, ratio_width = ratio(to_height, from_height), ratio(to_width, from_width)
    x1, y1, x2, y2 = boxes.unbind(1)  # (N,) each
    return torch.stack([x1 * ratio_width, y1 * ratio_height,
                        x2 * ratio_width, y2 * ratio_height], dim=1)  # (N, 4)
