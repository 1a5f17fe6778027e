"""BalancedPositiveNegativeSampler: frozen torchvision masks under a seed, counts, subsets.

torch.randperm gives the same stream in torch 2.13 and 2.14 (checked when the
fixture was made), so with the same ``torch.manual_seed`` our masks must equal the
masks torchvision drew (tests/reference/make_detection_parts_refs.py).
"""

import os

import pytest
import torch

from fcos_from_scratch.models.sampling import BalancedPositiveNegativeSampler
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "detection_parts_refs.pt")


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)["sampler"]


@pytest.fixture
def restore_rng():
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)


def test_masks_equal_torchvision_under_the_same_seed(refs, restore_rng):
    for case in refs["cases"]:
        torch.manual_seed(case["seed"])
        sampler = BalancedPositiveNegativeSampler(case["batch_size_per_image"],
                                                  case["positive_fraction"])
        pos, neg = sampler(refs["matched_idxs"])
        for ours, theirs in zip(pos + neg, case["pos"] + case["neg"]):
            assert ours.dtype == torch.uint8 and torch.equal(ours, theirs), case["seed"]


def test_counts_follow_the_rule(refs):
    # num_pos = min(P, int(batch * fraction)); num_neg = min(Q, batch - num_pos).
    for batch, fraction in [(16, 0.25), (32, 0.5), (8, 1.0), (10, 0.0), (256, 0.5)]:
        pos, neg = BalancedPositiveNegativeSampler(batch, fraction)(refs["matched_idxs"])
        for labels, p, n in zip(refs["matched_idxs"], pos, neg):
            num_pos = min(int((labels >= 1).sum()), int(batch * fraction))
            num_neg = min(int((labels == 0).sum()), batch - num_pos)
            assert int(p.sum()) == num_pos and int(n.sum()) == num_neg


def test_samples_are_subsets_and_disjoint(refs):
    pos, neg = BalancedPositiveNegativeSampler(32, 0.5)(refs["matched_idxs"])
    for labels, p, n in zip(refs["matched_idxs"], pos, neg):
        assert (labels[p.bool()] >= 1).all() and (labels[n.bool()] == 0).all()
        assert not (p.bool() & n.bool()).any()  # ignored (< 0) elements never sampled


def test_by_hand_missing_positives_are_replaced_by_negatives():
    # 2 positives, 5 negatives, 3 ignored; batch 6 at fraction 0.5: 3 positives wanted,
    # only 2 exist, so 6 - 2 = 4 negatives.
    labels = torch.tensor([1, 0, -1, 0, 2, 0, -1, 0, 0, -2])
    (pos,), (neg,) = BalancedPositiveNegativeSampler(6, 0.5)([labels])
    assert pos.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert int(neg.sum()) == 4 and neg[[2, 6, 9]].sum() == 0


def test_empty_image_and_empty_batch():
    pos, neg = BalancedPositiveNegativeSampler(4, 0.5)([torch.zeros(0, dtype=torch.int64)])
    assert pos[0].shape == neg[0].shape == (0,)
    assert BalancedPositiveNegativeSampler(4, 0.5)([]) == ([], [])


def test_float_labels_as_torchvision_rpn():
    # torchvision's RPN passes float labels 1.0 / 0.0 / -1.0.
    (pos,), (neg,) = BalancedPositiveNegativeSampler(4, 0.5)([torch.tensor([1.0, 0.0, -1.0])])
    assert pos.tolist() == [1, 0, 0] and neg.tolist() == [0, 1, 0]


@pytest.mark.parametrize("call, match", [
    (lambda: BalancedPositiveNegativeSampler(-1, 0.5), "batch_size_per_image"),
    (lambda: BalancedPositiveNegativeSampler(8, 1.5), "positive_fraction"),
    (lambda: BalancedPositiveNegativeSampler(8, 0.5)(torch.zeros(3)), "matched_idxs"),
    (lambda: BalancedPositiveNegativeSampler(8, 0.5)([torch.zeros(3, 2)]), r"matched_idxs\[0\]"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ hard negative mining (OHEM)

from fcos_from_scratch.models.sampling import hard_negative_mining, hard_negative_mining_reference  # noqa: E402


def test_hard_negative_mining_by_hand():
    # Image 0: one positive -> 3 negatives, the largest losses among labels == 0
    # (0.9, 0.8, 0.7); the ignored element (loss 5.0) and the positive are never chosen.
    # Image 1: no positive -> no negative ([ssd]'s per-image rule).
    loss = torch.tensor([[0.1, 0.9, 5.0, 0.8, 0.2, 0.7, 3.0],
                         [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]])
    labels = torch.tensor([[0, 0, -1, 0, 0, 0, 2],
                           [0, 0, 0, 0, 0, 0, 0]])
    chosen = hard_negative_mining(loss, labels, neg_pos_ratio=3)
    assert chosen[0].nonzero().flatten().tolist() == [1, 3, 5]
    assert not chosen[1].any()


def test_hard_negative_mining_fewer_negatives_than_wanted_and_ties():
    loss = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    labels = torch.tensor([[0, 0, 1, 0]])
    assert hard_negative_mining(loss, labels, 1).nonzero()[:, 1].tolist() == [0]  # tie: lower index
    assert hard_negative_mining(loss, labels, 10).sum() == 3  # all negatives


def test_hard_negative_mining_equals_loop_and_is_detached():
    torch.manual_seed(0)
    loss = torch.rand(4, 50, requires_grad=True)
    labels = torch.randint(-1, 3, (4, 50))
    labels[labels == 2] = 0  # mostly negatives
    for ratio in (0, 1, 3, 2.5):
        ours = hard_negative_mining(loss, labels, ratio)
        assert torch.equal(ours, hard_negative_mining_reference(loss.detach(), labels, ratio))
    assert not ours.requires_grad and ours.dtype == torch.bool


def test_hard_negative_mining_empty_and_bad_input():
    assert hard_negative_mining(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.int64)).shape == (2, 0)
    with pytest.raises(ValueError, match="loss"):
        hard_negative_mining(torch.zeros(5), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        hard_negative_mining(torch.zeros(1, 5), torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        hard_negative_mining(torch.zeros(1, 5), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        hard_negative_mining(torch.zeros(1, 5), torch.zeros(1, 5, dtype=torch.int64), -1)
