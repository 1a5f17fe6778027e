"""Box coding: boxes as regression targets relative to reference boxes or points.

A detector does not regress raw pixel coordinates; it regresses a *code* of the
ground-truth box relative to something it already has (an anchor, a proposal, a
point). Three codings, each with an exact inverse:

* :class:`BoxCoder` -- centre-size deltas of a box relative to an anchor or a
  proposal ([rcnn] App. C, [faster-rcnn] Eq. (2), [ssd] Eq. (2)).
* :class:`BoxLinearCoder` -- distances from a reference box's centre to the four
  sides of the target box, optionally divided by the reference box's size.
* :func:`encode_ltrb` / :func:`decode_ltrb` -- the same distances measured from a
  point and divided by its level's stride. They equal
  ``BoxLinearCoder(normalize_by_size=True)`` when the reference box is the
  ``s x s`` square centred on the point.

Names, argument order and arithmetic follow torchvision's
``torchvision.models.detection._utils`` ([torchvision]) so the results are the same
to the last bit. Beware its argument order: ``BoxCoder.encode(reference_boxes,
proposals)`` encodes the *ground truth* ``reference_boxes`` relative to the anchors
``proposals``, while ``BoxLinearCoder.encode(reference_boxes, proposals)`` encodes
``proposals`` (the ground truth) relative to the anchors ``reference_boxes``.
"""

import math
import numbers
from typing import List, Sequence, Tuple

import torch

from ._checks import check_boxes, check_tensor

__all__ = ["BoxCoder", "BoxLinearCoder", "encode_ltrb", "decode_ltrb"]

# [torchvision]'s default: exp(dw) may grow a box at most 1000 / 16 times.
DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_same_length(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}; "
                         "they must have one row per box")


def _check_box_list(name: str, boxes) -> List[torch.Tensor]:
    if not isinstance(boxes, (list, tuple)):
        raise ValueError(f"{name} must be a list or tuple of (N_i, 4) tensors, one per "
                         f"image, got {type(boxes).__name__}")
    return [check_boxes(f"{name}[{i}]", b) for i, b in enumerate(boxes)]


class BoxCoder:
    """Centre-size box deltas ([rcnn] App. C, [faster-rcnn] Eq. (2)).

    With an anchor (or proposal) of centre ``(x_a, y_a)`` and size ``(w_a, h_a)``
    and a target box ``(x, y, w, h)``, the code is::

        t_x = w_x (x - x_a) / w_a      t_w = w_w log(w / w_a)
        t_y = w_y (y - y_a) / h_a      t_h = w_h log(h / h_a)

    with ``weights = (w_x, w_y, w_w, w_h)``: (1, 1, 1, 1) for region proposals,
    (10, 10, 5, 5) for a second-stage box head ([torchvision]). [ssd] writes the same code with
    "variances" that divide instead of multiply ([ssd] Eq. (2) and its code):
    ``weights = 1 / variance``, so variances (0.1, 0.1, 0.2, 0.2) are weights
    (10, 10, 5, 5). Decoding clamps ``t_w / w_w`` and ``t_h / w_h`` at
    ``bbox_xform_clip`` before ``exp`` so that an untrained head cannot produce
    infinite boxes; apart from that clamp, decode is the exact inverse of encode.

    Args:
        weights: (w_x, w_y, w_w, w_h), positive.
        bbox_xform_clip: upper bound of the log-size deltas at decoding
            (default ``log(1000 / 16)``).
    """

    def __init__(self, weights: Tuple[float, float, float, float],
                 bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP) -> None:
        if len(weights) != 4 or not all(isinstance(w, numbers.Real) and w > 0 for w in weights):
            raise ValueError(f"weights must be 4 positive numbers (w_x, w_y, w_w, w_h), "
                             f"got {weights!r}")
        self.weights = tuple(weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: Sequence[torch.Tensor],
               proposals: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Per-image :meth:`encode_single`, done once on the concatenation.

        Args:
            reference_boxes: B tensors (N_i, 4) xyxy, the boxes to encode (ground truth).
            proposals: B tensors (N_i, 4) xyxy, what they are encoded against (anchors).

        Returns:
            B tensors (N_i, 4) of codes (t_x, t_y, t_w, t_h).
        """
        reference_boxes = _check_box_list("reference_boxes", reference_boxes)
        proposals = _check_box_list("proposals", proposals)
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(reference_boxes), torch.cat(proposals))  # (N, 4)
        return targets.split(boxes_per_image, 0)

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Code ``reference_boxes`` relative to ``proposals``, row by row.

        Args:
            reference_boxes: (N, 4) xyxy, the boxes to encode (ground truth).
            proposals: (N, 4) xyxy with positive width and height (anchors).

        Returns:
            (N, 4) (t_x, t_y, t_w, t_h); the weights take ``reference_boxes``' dtype.
        """
        check_boxes("reference_boxes", reference_boxes)
        check_boxes("proposals", proposals)
        _check_same_length("reference_boxes", reference_boxes, "proposals", proposals)
        weights = torch.as_tensor(self.weights, dtype=reference_boxes.dtype,
                                  device=reference_boxes.device)
        wx, wy, ww, wh = weights.unbind()

        ex_x1, ex_y1, ex_x2, ex_y2 = proposals.unbind(dim=1)  # (N,) each
        ex_widths, ex_heights = ex_x2 - ex_x1, ex_y2 - ex_y1
        ex_ctr_x, ex_ctr_y = ex_x1 + 0.5 * ex_widths, ex_y1 + 0.5 * ex_heights

        gt_x1, gt_y1, gt_x2, gt_y2 = reference_boxes.unbind(dim=1)  # (N,) each
        gt_widths, gt_heights = gt_x2 - gt_x1, gt_y2 - gt_y1
        gt_ctr_x, gt_ctr_y = gt_x1 + 0.5 * gt_widths, gt_y1 + 0.5 * gt_heights

        targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        targets_dw = ww * torch.log(gt_widths / ex_widths)
        targets_dh = wh * torch.log(gt_heights / ex_heights)
        return torch.stack([targets_dx, targets_dy, targets_dw, targets_dh], dim=1)  # (N, 4)

    def decode(self, rel_codes: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode codes for the boxes of all images at once.

        Args:
            rel_codes: codes for the concatenated boxes, reshaped to (N, 4 K): K
                class-specific codes per box, class-major ``(t_x, t_y, t_w, t_h)``
                groups (any shape with N * 4 K elements is accepted).
            boxes: B tensors (N_i, 4) xyxy reference boxes, N = sum N_i.

        Returns:
            (N, K, 4) xyxy boxes. As torchvision, when N = 0 the result is
            ``decode_single(rel_codes, empty)`` unreshaped: (0, 4 K).
        """
        boxes = _check_box_list("boxes", boxes)
        check_tensor("rel_codes", rel_codes)
        total = sum(len(b) for b in boxes)
        concat_boxes = torch.cat(boxes, dim=0)  # (N, 4)
        if total > 0:
            rel_codes = rel_codes.reshape(total, -1)  # (N, 4K)
        pred_boxes = self.decode_single(rel_codes, concat_boxes)  # (N, 4K)
        if total > 0:
            pred_boxes = pred_boxes.reshape(total, -1, 4)  # (N, K, 4)
        return pred_boxes

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes from codes: the inverse of :meth:`encode_single` (up to the clamp).

        ``x = t_x / w_x * w_a + x_a``, ``w = exp(min(t_w / w_w, clip)) * w_a`` (y, h
        likewise), then back to corners ``x -/+ w / 2``.

        Args:
            rel_codes: (N, 4 K) codes, K groups of (t_x, t_y, t_w, t_h).
            boxes: (N, 4) xyxy reference boxes, cast to ``rel_codes``' dtype.

        Returns:
            (N, 4 K) xyxy boxes, group k decoded from code group k.
        """
        check_tensor("rel_codes", rel_codes)
        check_boxes("boxes", boxes)
        if rel_codes.dim() != 2 or rel_codes.shape[1] % 4 != 0:
            raise ValueError(f"rel_codes must have shape (N, 4 * K), got {tuple(rel_codes.shape)}")
        _check_same_length("rel_codes", rel_codes, "boxes", boxes)
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0]  # (N,)
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx  # (N, K)
        dy = rel_codes[:, 1::4] / wy
        # Clamp before exp: an untrained head must not produce inf boxes.
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]  # (N, K)
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])  # centre-to-corner distances
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        pred_boxes = torch.stack([pred_ctr_x - half_w, pred_ctr_y - half_h,
                                  pred_ctr_x + half_w, pred_ctr_y + half_h], dim=2)  # (N, K, 4)
        return pred_boxes.flatten(1)  # (N, 4K)


class BoxLinearCoder:
    """Distances from a reference box's centre to the sides of a box.

    With reference (anchor) centre ``(x_a, y_a)`` and size ``(w_a, h_a)``, the code
    of a box ``(x1, y1, x2, y2)`` is ``(x_a - x1, y_a - y1, x2 - x_a, y2 - y_a)``,
    divided by ``(w_a, h_a, w_a, h_a)`` when ``normalize_by_size``; with ``s x s``
    square anchors that is a division by the stride (see :func:`encode_ltrb`).
    Works on any leading shape ``(..., 4)``.

    Args:
        normalize_by_size: divide the distances by the reference box's size.
    """

    def __init__(self, normalize_by_size: bool = True) -> None:
        self.normalize_by_size = normalize_by_size

    def encode(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Code ``proposals`` (the ground truth) relative to ``reference_boxes`` (anchors).

        Args:
            reference_boxes: (..., 4) xyxy anchors.
            proposals: (..., 4) xyxy boxes to encode, same shape.

        Returns:
            (..., 4) (l, t, r, b), in pixels or in reference sizes.
        """
        check_boxes("reference_boxes", reference_boxes, allow_batch_dims=True)
        check_boxes("proposals", proposals, allow_batch_dims=True)
        ctr_x = 0.5 * (reference_boxes[..., 0] + reference_boxes[..., 2])
        ctr_y = 0.5 * (reference_boxes[..., 1] + reference_boxes[..., 3])
        targets = torch.stack([ctr_x - proposals[..., 0], ctr_y - proposals[..., 1],
                               proposals[..., 2] - ctr_x, proposals[..., 3] - ctr_y], dim=-1)
        if self.normalize_by_size:
            widths = reference_boxes[..., 2] - reference_boxes[..., 0]
            heights = reference_boxes[..., 3] - reference_boxes[..., 1]
            targets = targets / torch.stack([widths, heights, widths, heights], dim=-1)
        return targets  # (..., 4)

    def decode(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes from (l, t, r, b) codes: the exact inverse of :meth:`encode`.

        Args:
            rel_codes: (..., 4) codes.
            boxes: (..., 4) xyxy reference boxes, cast to ``rel_codes``' dtype.

        Returns:
            (..., 4) xyxy ``(x_a - l, y_a - t, x_a + r, y_a + b)`` (l, t, r, b scaled
            back by the reference size when ``normalize_by_size``).
        """
        check_boxes("rel_codes", rel_codes, allow_batch_dims=True)
        check_boxes("boxes", boxes, allow_batch_dims=True)
        boxes = boxes.to(dtype=rel_codes.dtype)
        ctr_x = 0.5 * (boxes[..., 0] + boxes[..., 2])
        ctr_y = 0.5 * (boxes[..., 1] + boxes[..., 3])
        if self.normalize_by_size:
            widths = boxes[..., 2] - boxes[..., 0]
            heights = boxes[..., 3] - boxes[..., 1]
            rel_codes = rel_codes * torch.stack([widths, heights, widths, heights], dim=-1)
        return torch.stack([ctr_x - rel_codes[..., 0], ctr_y - rel_codes[..., 1],
                            ctr_x + rel_codes[..., 2], ctr_y + rel_codes[..., 3]], dim=-1)


def encode_ltrb(points: torch.Tensor, boxes: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Distances from points to box sides, in strides ([fcos] Eq. (1), [fcos-imp]).

    ``(l, t, r, b) = (x - x1, y - y1, x2 - x, y2 - y) / s`` -- for example the
    regression targets of FCOS ([fcos] Eq. (1), normalised by the stride as in
    [fcos-imp]). Equals ``BoxLinearCoder(True).encode(squares, boxes)`` with ``squares``
    the ``s x s`` boxes centred on the points.

    Args:
        points: (N, 2) (x, y) pixels.
        boxes: (..., N, 4) xyxy pixels, one box per point.
        strides: (N,) stride of each point's level.

    Returns:
        (..., N, 4) distances in strides; all positive iff the point is strictly
        inside its box. Exact inverse of :func:`decode_ltrb` up to rounding.
    """
    ltrb = torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)  # (..., N, 4)
    return ltrb / strides[:, None]


def decode_ltrb(points: torch.Tensor, ltrb: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Boxes from distances in strides: the inverse of :func:`encode_ltrb`.

    Args:
        points: (N, 2) or (..., N, 2) (x, y) pixels.
        ltrb: (..., N, 4) distances (l, t, r, b) divided by the stride.
        strides: (N,) stride of each point's level.

    Returns:
        (..., N, 4) xyxy pixels ``(x - l s, y - t s, x + r s, y + b s)``.
    """
    distances = ltrb * strides[:, None]  # (..., N, 4) pixels
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def ltrb_to_local_box(ltrb: torch.Tensor) -> torch.Tensor:
    """(..., 4) distances (l, t, r, b) -> the xyxy box (-l, -t, r, b) around the origin.

    IoU-type losses are invariant to translation and scale, so a point's predicted
    and target distances can be compared as boxes in the point's own frame, in
    stride units, with no decoding to pixels.
    """
    return torch.cat([-ltrb[..., :2], ltrb[..., 2:]], dim=-1)
