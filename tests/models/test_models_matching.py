"""Matcher and the assignment sentinels: frozen torchvision values, a loop oracle, edge cases.

The fixture is written by tests/reference/make_detection_parts_refs.py (torchvision 0.29).
"""

import os

import pytest
import torch

from fcos_from_scratch.models.matching import BACKGROUND, IGNORE, Matcher
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "detection_parts_refs.pt")


@pytest.fixture(scope="module")
def refs():
    return torch.load(FIXTURE, weights_only=True)["matcher"]


def matcher_loop(matrix, high, low, allow):
    """Plain-Python matcher: the rules of the Matcher docstring, one prediction at a time."""
    M, N = matrix.shape
    rows = matrix.tolist()
    matches = []
    for n in range(N):
        column = [rows[m][n] for m in range(M)]
        best = max(column)
        best_gt = column.index(best)  # first index on ties
        if best >= high:
            matches.append(best_gt)
        elif best >= low:
            matches.append(Matcher.BETWEEN_THRESHOLDS)
        else:
            matches.append(Matcher.BELOW_LOW_THRESHOLD)
        if allow and any(rows[m][n] == max(rows[m]) for m in range(M)):
            matches[n] = best_gt  # some GT overlaps nothing better than this prediction
    return matches


SETTINGS = [(0.7, 0.3, True), (0.7, 0.3, False), (0.5, 0.4, True), (0.5, 0.5, False)]


# ------------------------------------------------------------------ reference values

def test_matcher_equals_torchvision(refs):
    for case in refs["cases"]:
        matrix = refs["matrices"][case["matrix"]]
        matcher = Matcher(case["high_threshold"], case["low_threshold"],
                          case["allow_low_quality_matches"])
        matches = matcher(matrix)
        assert matches.dtype == torch.int64
        assert torch.equal(matches, case["matches"]), case


def test_matcher_empty_errors_equal_torchvision(refs):
    for name, shape in [("no_gt", (0, 4)), ("no_predictions", (3, 0))]:
        with pytest.raises(ValueError) as error:
            Matcher(0.5, 0.4)(torch.zeros(shape))
        assert str(error.value) == refs["errors"][name]


def test_hand_matrix_by_hand(refs):
    # Columns' best GT: p0 0.70 (gt1), p1 0.30 (gt0), p2 0.45 (gt2), p3 0.50 (gt1),
    # p4 0.20 (gt0, tie with gt1/gt2 -> first), p5 0.30 (gt0), p6 0.69 (gt2).
    # high 0.7, low 0.3: p0 >= 0.7 -> 1; 0.3 <= q < 0.7 -> -2 (p1, p2, p3, p5, p6); p4 -> -1.
    # Low-quality: gt0's max 0.30 at p1 and p5 (tie) -> 0, 0; gt1's max 0.70 at p0;
    # gt2's max 0.69 at p6 -> 2. p2 and p3 (0.45 tie of gt2? no: gt2's max is 0.69) stay -2.
    matrix = refs["matrices"]["hand"]
    assert Matcher(0.7, 0.3, False)(matrix).tolist() == [1, -2, -2, -2, -1, -2, -2]
    assert Matcher(0.7, 0.3, True)(matrix).tolist() == [1, 0, -2, -2, -1, 0, 2]


# ------------------------------------------------------------------ properties

@pytest.mark.parametrize("high, low, allow", SETTINGS)
def test_matcher_equals_loop_on_random_and_tied_matrices(high, low, allow):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        # float64, so that Python's 0.7 in the loop is the tensor's 0.7 (a float32
        # matrix is compared with the threshold rounded to float32, as torch does).
        matrix = (torch.rand(4, 25, generator=g, dtype=torch.float64) * 10).round() / 10  # ties
        assert Matcher(high, low, allow)(matrix).tolist() == matcher_loop(matrix, high, low, allow)


def test_every_gt_keeps_a_match_with_low_quality_matches():
    g = torch.Generator().manual_seed(1)
    matrix = torch.rand(6, 40, generator=g) * 0.3  # all below every threshold
    matches = Matcher(0.7, 0.3, True)(matrix)
    best_per_gt = matrix.argmax(dim=1)
    # Each GT's best prediction is matched -- to the GT that prediction prefers.
    assert torch.equal(matches[best_per_gt], matrix[:, best_per_gt].argmax(dim=0))
    assert (matches >= 0).sum() <= 6


def test_matcher_does_not_modify_its_input():
    matrix = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    copy = matrix.clone()
    Matcher(0.5, 0.4, True)(matrix)
    assert torch.equal(matrix, copy)


def test_float64_matrix_gives_int64():
    matches = Matcher(0.5, 0.4)(torch.tensor([[0.45, 0.6]], dtype=torch.float64))
    assert matches.dtype == torch.int64 and matches.tolist() == [IGNORE, 0]


# ------------------------------------------------------------------ sentinels and bad input

def test_sentinels_are_torchvisions_values_and_shared():
    assert (Matcher.BELOW_LOW_THRESHOLD, Matcher.BETWEEN_THRESHOLDS) == (-1, -2)
    assert BACKGROUND == Matcher.BELOW_LOW_THRESHOLD and IGNORE == Matcher.BETWEEN_THRESHOLDS
    matches = Matcher(0.5, 0.3)(torch.tensor([[0.1, 0.4, 0.9]]))
    assert matches.tolist() == [BACKGROUND, IGNORE, 0]


def test_single_gt_and_single_prediction():
    assert Matcher(0.5, 0.3, True)(torch.tensor([[0.1, 0.2]])).tolist() == [BACKGROUND, 0]
    assert Matcher(0.5, 0.3)(torch.tensor([[0.2], [0.6], [0.6]])).tolist() == [1]


@pytest.mark.parametrize("call, match", [
    (lambda: Matcher(0.3, 0.7), "low_threshold"),
    (lambda: Matcher(0.7, 0.3)(torch.zeros(3)), "match_quality_matrix"),
    (lambda: Matcher(0.7, 0.3)([[0.5]]), "match_quality_matrix"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ SSD's best-prediction rule

def test_best_prediction_per_gt_differs_from_low_quality_rule_by_hand():
    # GT 0's best prediction is 1 (0.4), but prediction 1 overlaps GT 1 more (0.45):
    # torchvision's rule gives prediction 1 to GT 1 (its own arg-max) -- GT 0 stays
    # unmatched; SSD's rule gives it to GT 0, which claimed it.
    quality = torch.tensor([[0.1, 0.40, 0.0, 0.30],
                            [0.0, 0.45, 0.9, 0.45]])
    torchvision_rule = Matcher(0.5, 0.5, allow_low_quality_matches=True)(quality)
    ssd_rule = Matcher(0.5, 0.5, best_prediction_per_gt=True)(quality)
    assert torchvision_rule.tolist() == [-1, 1, 1, -1]
    assert ssd_rule.tolist() == [-1, 0, 1, -1]


def test_best_prediction_per_gt_one_per_gt_later_gt_wins_zero_claims_nothing():
    # Ties: GT 0 claims only the first of its two best predictions (0, 1).
    # GTs 1 and 2 both have prediction 3 as their best: the later (2) wins.
    # GT 3 overlaps nothing: it claims nothing.
    quality = torch.tensor([[0.3, 0.3, 0.0, 0.0],
                            [0.0, 0.0, 0.1, 0.2],
                            [0.0, 0.0, 0.0, 0.4],
                            [0.0, 0.0, 0.0, 0.0]])
    assert Matcher(0.5, 0.5, best_prediction_per_gt=True)(quality).tolist() == [0, -1, -1, 2]


def test_best_prediction_per_gt_keeps_threshold_matches_and_every_gt_is_matched():
    torch.manual_seed(0)
    quality = torch.rand(5, 40) * 0.7
    matches = Matcher(0.5, 0.5, best_prediction_per_gt=True)(quality)
    plain = Matcher(0.5, 0.5)(quality)
    claimed = set(quality.argmax(1).tolist())
    for n in range(40):
        if n not in claimed:
            assert matches[n] == plain[n]
    assert len(claimed) == 5  # distinct best predictions, so no GT is left without a match
    assert set(matches[matches >= 0].tolist()) == set(range(5))


def test_both_low_quality_rules_at_once_is_an_error():
    with pytest.raises(ValueError, match="best_prediction_per_gt"):
        Matcher(0.5, 0.5, allow_low_quality_matches=True, best_prediction_per_gt=True)
