"""Anchors, box coding and matching -- write `AnchorGenerator`, `BoxCoder`, `Matcher`.

Starter generated from the library by `python -m assignments start anchors_matching`.
Keep every signature and docstring as they are; replace each
`raise NotImplementedError` with your code. You may import from
`fcos_from_scratch` anything this unit does not ask you to write.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from fcos_from_scratch.models.anchors import grid_points
from fcos_from_scratch.ops.box_coders import DEFAULT_BBOX_XFORM_CLIP


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
        raise NotImplementedError("write AnchorGenerator.__init__: the library's version is 15 lines of code")

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
        raise NotImplementedError("write AnchorGenerator.generate_anchors: the library's version is 7 lines of code")

    def set_cell_anchors(self, dtype: torch.dtype, device: Optional[torch.device]) -> None:
        """Move the cell anchors to ``dtype`` and ``device`` (values are whole pixels)."""
        raise NotImplementedError("write AnchorGenerator.set_cell_anchors: the library's version is 1 lines of code")

    def num_anchors_per_location(self) -> List[int]:
        """A_l = len(sizes[l]) * len(aspect_ratios[l]) for every level."""
        raise NotImplementedError("write AnchorGenerator.num_anchors_per_location: the library's version is 1 lines of code")

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
        raise NotImplementedError("write AnchorGenerator.grid_anchors: the library's version is 11 lines of code")

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
        raise NotImplementedError("write AnchorGenerator.forward: the library's version is 15 lines of code")


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
        raise NotImplementedError("write BoxCoder.__init__: the library's version is 5 lines of code")

    def encode(self, reference_boxes: Sequence[torch.Tensor],
               proposals: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Per-image :meth:`encode_single`, done once on the concatenation.

        Args:
            reference_boxes: B tensors (N_i, 4) xyxy, the boxes to encode (ground truth).
            proposals: B tensors (N_i, 4) xyxy, what they are encoded against (anchors).

        Returns:
            B tensors (N_i, 4) of codes (t_x, t_y, t_w, t_h).
        """
        raise NotImplementedError("write BoxCoder.encode: the library's version is 5 lines of code")

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Code ``reference_boxes`` relative to ``proposals``, row by row.

        Args:
            reference_boxes: (N, 4) xyxy, the boxes to encode (ground truth).
            proposals: (N, 4) xyxy with positive width and height (anchors).

        Returns:
            (N, 4) (t_x, t_y, t_w, t_h); the weights take ``reference_boxes``' dtype.
        """
        raise NotImplementedError("write BoxCoder.encode_single: the library's version is 17 lines of code")

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
        raise NotImplementedError("write BoxCoder.decode: the library's version is 10 lines of code")

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
        raise NotImplementedError("write BoxCoder.decode_single: the library's version is 22 lines of code")


class Matcher:
    """Assign each prediction the ground truth it overlaps best, with two thresholds.

    For prediction n, let ``q_n = max_m Q[m, n]`` and ``m_n`` its arg-max (first
    index on ties). Then ``matches[n] =``

    * ``m_n`` if ``q_n >= high_threshold``,
    * ``BETWEEN_THRESHOLDS`` (-2) if ``low_threshold <= q_n < high_threshold``,
    * ``BELOW_LOW_THRESHOLD`` (-1) if ``q_n < low_threshold``.

    With ``allow_low_quality_matches`` every ground truth also claims the
    predictions that reach its own highest quality (all of them, ties included),
    even below the thresholds, so that no ground truth is left without a match
    ([faster-rcnn] Sec. 3.1.2, condition (i)). Such a prediction gets ``m_n`` --
    the ground truth *it* overlaps best, which may be a different one.

    With ``best_prediction_per_gt`` (the rule of [ssd] Sec. 2.2 and [refinedet]:
    "each ground truth is matched to the anchor with the best overlap") every
    ground truth m instead claims its *single* best prediction ``argmax_n Q[m, n]``
    (first index on ties) for *itself*, whatever that prediction overlaps best.
    Two differences from the low-quality rule: one prediction per ground truth, not
    all tied ones, and the claimed prediction predicts the ground truth that
    claimed it. When two ground truths claim the same prediction the later one
    wins (SSD's ``match`` loops over the ground truths in order). A ground truth
    that overlaps no prediction at all (best quality 0) claims nothing.

    Args:
        high_threshold: quality at or above which a match is positive.
        low_threshold: quality below which a prediction is background; must be
            <= ``high_threshold`` (equal: nothing is ignored).
        allow_low_quality_matches: add the low-quality matches described above.
        best_prediction_per_gt: add SSD's best-prediction matches described above
            (not together with ``allow_low_quality_matches``).
    """

    BELOW_LOW_THRESHOLD = -1

    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False, best_prediction_per_gt: bool = False) -> None:
        raise NotImplementedError("write Matcher.__init__: the library's version is 10 lines of code")

    def __call__(self, match_quality_matrix: torch.Tensor) -> torch.Tensor:
        """Match the N predictions.

        Args:
            match_quality_matrix: (M, N) quality (e.g. IoU) of ground truth m and
                prediction n; M, N >= 1.

        Returns:
            (N,) int64: a ground-truth index in [0, M), ``BELOW_LOW_THRESHOLD`` or
            ``BETWEEN_THRESHOLDS``.

        Raises:
            ValueError: for an empty matrix, with torchvision's messages (an image
                without ground truth must be handled by the caller).
        """
        raise NotImplementedError("write Matcher.__call__: the library's version is 18 lines of code")

    @staticmethod
    def set_best_prediction_matches_(matches: torch.Tensor, match_quality_matrix: torch.Tensor) -> None:
        """Every ground truth claims its best prediction for itself ([ssd] Sec. 2.2), in place.

        Args:
            matches: (N,) thresholded matches, updated in place.
            match_quality_matrix: (M, N) quality.
        """
        raise NotImplementedError("write Matcher.set_best_prediction_matches_: the library's version is 7 lines of code")

    def set_low_quality_matches_(self, matches: torch.Tensor, all_matches: torch.Tensor,
                                 match_quality_matrix: torch.Tensor) -> None:
        """Give back their best match to the predictions each GT overlaps most, in place.

        Args:
            matches: (N,) thresholded matches, updated in place.
            all_matches: (N,) arg-max ground truth of each prediction, before thresholds.
            match_quality_matrix: (M, N) quality.
        """
        raise NotImplementedError("write Matcher.set_low_quality_matches_: the library's version is 3 lines of code")
