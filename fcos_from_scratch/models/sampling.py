"""Sampling a fixed-size, class-balanced minibatch of predictions per image.

A two-stage detector has tens of thousands of anchors and thousands of proposals
per image, almost all background. Instead of weighting them, [faster-rcnn]
Sec. 3.1.3 samples ``batch_size_per_image`` of them per image (256 anchors for the
RPN, 512 proposals for the box head), at most a fraction ``positive_fraction``
(1/2, resp. 1/4 [fast-rcnn] Sec. 2.3) positive, and fills the rest with
negatives. Names, semantics and the exact random draws follow torchvision's
``BalancedPositiveNegativeSampler`` ([torchvision]): with the same
``torch.manual_seed`` both select the same elements.
"""

from typing import List, Sequence, Tuple

import torch

__all__ = ["BalancedPositiveNegativeSampler", "hard_negative_mining"]


class BalancedPositiveNegativeSampler:
    """Pick at most ``batch_size_per_image`` labelled elements per image.

    Per image, with P positives and Q negatives available::

        num_pos = min(P, int(batch_size_per_image * positive_fraction))
        num_neg = min(Q, batch_size_per_image - num_pos)

    so missing positives are replaced by negatives (not the other way round).
    The chosen elements are the first ``num_pos`` (``num_neg``) of a
    ``torch.randperm`` of the positives (negatives), positives drawn first, image
    by image -- the order of draws of torchvision, hence the same samples under the
    same seed.

    Args:
        batch_size_per_image: elements to select per image (fewer if not enough).
        positive_fraction: largest fraction of positives, in [0, 1].
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if not isinstance(batch_size_per_image, int) or batch_size_per_image < 0:
            raise ValueError("batch_size_per_image must be a non-negative int, got "
                             f"{batch_size_per_image!r}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction!r}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, matched_idxs: Sequence[torch.Tensor]
                 ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Sample positives and negatives in every image.

        Args:
            matched_idxs: B tensors (N_i,) of integer labels: ``>= 1`` positive,
                ``0`` negative, ``-1`` ignored (never sampled). Any value below 0
                is ignored.

        Returns:
            ``(pos_masks, neg_masks)``: two lists of B (N_i,) uint8 masks, 1 where
            the element was selected as a positive (negative).
        """
        if not isinstance(matched_idxs, (list, tuple)):
            raise ValueError("matched_idxs must be a list of (N_i,) tensors, one per image, got "
                             f"{type(matched_idxs).__name__}")
        pos_masks, neg_masks = [], []
        for index, labels in enumerate(matched_idxs):
            if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
                got = getattr(labels, "shape", type(labels).__name__)
                raise ValueError(f"matched_idxs[{index}] must be an (N,) tensor, got {got}")
            positive = torch.where(labels >= 1)[0]  # (P,) indices
            negative = torch.where(labels == 0)[0]  # (Q,)

            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)

            # Two randperm calls per image, positives first: torchvision's draw order.
            chosen_pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
            chosen_neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]

            pos_mask = torch.zeros_like(labels, dtype=torch.uint8)  # (N,)
            neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
            pos_mask[chosen_pos] = 1
            neg_mask[chosen_neg] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def hard_negative_mining(loss: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: float = 3.0) -> torch.Tensor:
    """Per image, the ``neg_pos_ratio x P`` negatives with the largest loss ([ssd] Sec. 2.2).

    Per image b with P_b positives and Q_b negatives::

        num_neg_b = min(Q_b, floor(neg_pos_ratio * P_b))

    and the chosen negatives are those with the ``num_neg_b`` largest ``loss``
    (ties: the lower index, as a stable descending sort). An image without
    positives gets no negatives ([ssd]'s rule, also torchvision's ``SSD``);
    ignored elements are never chosen. The loss is only read (detached), so mining
    adds nothing to the gradient.

    Args:
        loss: (B, N) float, the per-element classification loss (any value for
            positives and ignored elements).
        labels: (B, N) integer: ``>= 1`` positive, ``0`` negative, ``< 0`` ignored
            (the convention of :class:`BalancedPositiveNegativeSampler`).
        neg_pos_ratio: negatives per positive ([ssd], [refinedet]: 3).

    Returns:
        (B, N) bool, True for the chosen negatives (positives are not included).
    """
    if not isinstance(loss, torch.Tensor) or loss.dim() != 2:
        raise ValueError(f"loss must be a (B, N) tensor, got {getattr(loss, 'shape', type(loss).__name__)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != loss.shape:
        got = getattr(labels, "shape", type(labels).__name__)
        raise ValueError(f"labels must be a tensor of the shape of loss {tuple(loss.shape)}, got {got}")
    if labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if not neg_pos_ratio >= 0:
        raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio!r}")
    negative = labels == 0  # (B, N)
    num_neg = torch.minimum(negative.sum(1), ((labels >= 1).sum(1) * neg_pos_ratio).floor().long())  # (B,)
    mined = loss.detach().masked_fill(~negative, -torch.inf)  # only negatives compete
    order = mined.sort(dim=1, descending=True, stable=True).indices  # (B, N)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(loss.shape[1], device=loss.device).expand_as(order))  # (B, N)
    return negative & (rank < num_neg[:, None])


def hard_negative_mining_reference(loss: torch.Tensor, labels: torch.Tensor,
                                   neg_pos_ratio: float = 3.0) -> torch.Tensor:
    """:func:`hard_negative_mining` as a plain loop over images and elements."""
    chosen = torch.zeros(loss.shape, dtype=torch.bool)
    for b in range(loss.shape[0]):
        row, lab = loss[b].tolist(), labels[b].tolist()
        negatives = [n for n in range(len(row)) if lab[n] == 0]
        count = min(len(negatives), int(sum(1 for v in lab if v >= 1) * neg_pos_ratio))
        for n in sorted(negatives, key=lambda n: (-row[n], n))[:count]:
            chosen[b, n] = True
    return chosen
