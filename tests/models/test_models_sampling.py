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
