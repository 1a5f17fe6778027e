"""Matching predictions to ground truth, and the sentinels every assigner shares.

Training a detector starts by deciding, for each of its N predictions (anchors,
proposals, points), which of the image's M ground-truth boxes it should predict,
if any. :class:`Matcher` does this from an (M, N) quality matrix, usually IoU
([faster-rcnn] Sec. 3.1.2): the best ground truth of each prediction is kept if
its quality reaches ``high_threshold``; below ``low_threshold`` the prediction is
background; in between it is ignored (contributes no loss). Names, values and
errors are torchvision's ``Matcher`` ([torchvision]).

This module is the single home of the assignment sentinels. A matched index is
either a ground-truth index ``0 <= m < M`` or one of:

* :data:`BACKGROUND` (= ``Matcher.BELOW_LOW_THRESHOLD`` = -1): a negative, trained
  to predict "no object";
* :data:`IGNORE` (= ``Matcher.BETWEEN_THRESHOLDS`` = -2): neither positive nor
  negative, left out of the losses.

Assigners that do not threshold an IoU (point-in-box rules, for example) use the
same two names, so ``matched_idxs >= 0`` means "positive" everywhere and no
module invents its own -1.
"""

import torch

__all__ = ["Matcher", "BACKGROUND", "IGNORE"]


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
        if allow_low_quality_matches and best_prediction_per_gt:
            raise ValueError("choose one of allow_low_quality_matches (torchvision) and "
                             "best_prediction_per_gt (SSD), not both")
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold "
                             f"({high_threshold})")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches
        self.best_prediction_per_gt = best_prediction_per_gt

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
        if not isinstance(match_quality_matrix, torch.Tensor) or match_quality_matrix.dim() != 2:
            got = getattr(match_quality_matrix, "shape", type(match_quality_matrix).__name__)
            raise ValueError(f"match_quality_matrix must be an (M, N) tensor, got {got}")
        if match_quality_matrix.numel() == 0:
            if match_quality_matrix.shape[0] == 0:
                raise ValueError("No ground-truth boxes available for one of the images during training")
            raise ValueError("No proposal boxes available for one of the images during training")

        matched_vals, matches = match_quality_matrix.max(dim=0)  # (N,) best GT per prediction
        best_matches = matches.clone() if self.allow_low_quality_matches else None

        below_low = matched_vals < self.low_threshold
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[below_low] = self.BELOW_LOW_THRESHOLD
        matches[between] = self.BETWEEN_THRESHOLDS

        if best_matches is not None:
            self.set_low_quality_matches_(matches, best_matches, match_quality_matrix)
        if self.best_prediction_per_gt:
            self.set_best_prediction_matches_(matches, match_quality_matrix)
        return matches

    @staticmethod
    def set_best_prediction_matches_(matches: torch.Tensor, match_quality_matrix: torch.Tensor) -> None:
        """Every ground truth claims its best prediction for itself ([ssd] Sec. 2.2), in place.

        Args:
            matches: (N,) thresholded matches, updated in place.
            match_quality_matrix: (M, N) quality.
        """
        num_gt = match_quality_matrix.shape[0]
        best_quality, best_prediction = match_quality_matrix.max(dim=1)  # (M,) first index on ties
        claims = torch.arange(num_gt, device=matches.device)[best_quality > 0]  # (M',)
        # The later ground truth wins a shared prediction: the largest m per prediction.
        owner = torch.full_like(matches, -1)
        owner.scatter_reduce_(0, best_prediction[claims], claims, reduce="amax")  # (N,)
        claimed = owner >= 0
        matches[claimed] = owner[claimed]

    def set_low_quality_matches_(self, matches: torch.Tensor, all_matches: torch.Tensor,
                                 match_quality_matrix: torch.Tensor) -> None:
        """Give back their best match to the predictions each GT overlaps most, in place.

        Args:
            matches: (N,) thresholded matches, updated in place.
            all_matches: (N,) arg-max ground truth of each prediction, before thresholds.
            match_quality_matrix: (M, N) quality.
        """
        highest_quality_per_gt = match_quality_matrix.max(dim=1).values  # (M,)
        # Every (gt, prediction) pair that attains the gt's maximum, ties included.
        _, pred_indices = torch.where(match_quality_matrix == highest_quality_per_gt[:, None])
        matches[pred_indices] = all_matches[pred_indices]


# The assignment sentinels, for assigners with and without a Matcher.
BACKGROUND = Matcher.BELOW_LOW_THRESHOLD
IGNORE = Matcher.BETWEEN_THRESHOLDS
