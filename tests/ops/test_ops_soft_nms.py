"""Tests for ``fcos_from_scratch.ops.soft_nms``: soft_nms and batched_soft_nms.

Reference values: a line-by-line port of Bodla et al.'s ``cpu_soft_nms``
(``tests/reference/soft_nms_reference.py``) and hand-computed cases.
Properties: batched == per-class loop, scores only decrease, "hard" == greedy NMS.
"""

import math
import os

import numpy as np
import pytest
import torch

from fcos_from_scratch.ops import batched_soft_nms, nms, soft_nms

from make_nms_refs import clustered_boxes, uniform_boxes  # noqa: E402
from soft_nms_reference import cpu_soft_nms  # noqa: E402

METHODS = ["linear", "gaussian", "hard"]


def port(boxes, scores, iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="linear",
         dtype=np.float32):
    """The reference port, called with our argument names; returns tensors."""
    keep, rescored = cpu_soft_nms(boxes.numpy(), scores.numpy(), sigma=sigma, Nt=iou_threshold,
                                  threshold=score_threshold, method=method, dtype=dtype)
    return torch.tensor(keep, dtype=torch.int64), torch.tensor(rescored, dtype=scores.dtype)


def random_case(generator, n):
    """Crowded boxes (a 1000-pixel scene shrunk to 300) so that decays chain."""
    make = uniform_boxes if int(torch.randint(0, 2, (1,), generator=generator)) else clustered_boxes
    return make(n, generator) * 0.3, torch.rand(n, generator=generator)


def assert_same_as_port(ours, expected):
    keep, rescored = ours
    assert torch.equal(keep, expected[0])
    # Equal up to the last bit of the IoU: box_iou may associate the union's
    # sum differently from the reference's (area_a + area_b) - inter.
    torch.testing.assert_close(rescored, expected[1], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# Reference values
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_equals_reference_port_on_random_sets(method):
    generator = torch.Generator().manual_seed(METHODS.index(method))
    for trial in range(12):
        n = int(torch.randint(1, 150, (1,), generator=generator))
        boxes, scores = random_case(generator, n)
        iou_threshold = [0.3, 0.5, 0.0, 1.0][trial % 4]
        sigma = [0.5, 0.1][trial % 2]
        score_threshold = [0.001, 0.3][trial % 2]
        args = iou_threshold, sigma, score_threshold, method
        expected = port(boxes, scores, *args)
        if scores.max() < score_threshold:
            continue  # the reference's first-pick quirk, tested separately
        assert_same_as_port(soft_nms(boxes, scores, *args), expected)


def test_equals_reference_port_in_float64():
    generator = torch.Generator().manual_seed(10)
    boxes, scores = random_case(generator, 120)
    boxes, scores = boxes.double(), scores.double()
    for method in METHODS:
        expected = port(boxes, scores, method=method, dtype=np.float64)
        keep, rescored = soft_nms(boxes, scores, method=method)
        assert rescored.dtype == torch.float64
        assert torch.equal(keep, expected[0])
        torch.testing.assert_close(rescored, expected[1], rtol=1e-12, atol=1e-15)


def test_two_boxes_by_hand():
    # A = [0,0,10,10] (0.9), B = [5,0,15,10] (0.8): IoU = 50 / (100 + 100 - 50) = 1/3.
    boxes = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10]])
    scores = torch.tensor([0.9, 0.8])
    keep, rescored = soft_nms(boxes, scores, iou_threshold=0.3, method="linear")
    assert keep.tolist() == [0, 1]  # 1/3 > 0.3: B -> 0.8 * (1 - 1/3) = 0.5333
    torch.testing.assert_close(rescored, torch.tensor([0.9, 0.8 * 2 / 3]))
    _, rescored = soft_nms(boxes, scores, iou_threshold=0.34, method="linear")
    torch.testing.assert_close(rescored, torch.tensor([0.9, 0.8]))  # 1/3 < 0.34: unchanged
    _, rescored = soft_nms(boxes, scores, sigma=0.5, method="gaussian")
    # B -> 0.8 * exp(-(1/9) / 0.5) = 0.8 * 0.80074 = 0.64059
    torch.testing.assert_close(rescored, torch.tensor([0.9, 0.8 * math.exp(-2 / 9)]))
    keep, rescored = soft_nms(boxes, scores, iou_threshold=0.3, method="hard")
    assert keep.tolist() == [0] and rescored.tolist() == [pytest.approx(0.9)]


def test_decay_reorders_by_hand():
    # A = [0,0,10,10] 0.9; B = [1,0,11,10] 0.8, IoU(A, B) = 90/110 = 0.818 -> B decays
    # to 0.8 * (1 - 0.818) = 0.1455, below D = [50,50,60,60] 0.5, which overlaps
    # nothing: the output order is A, D, B.
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    keep, rescored = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.5]))
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(rescored, torch.tensor([0.9, 0.5, 0.8 * (1 - 90 / 110)]))


def test_reference_port_legacy_pixel_option():
    # With +1 widths, [0,0,9,9] and [5,0,14,9] are 10 x 10 and overlap in 5 x 10:
    # IoU = 50 / 150 = 1/3 as in the continuous case above.
    keep, rescored = cpu_soft_nms([[0, 0, 9, 9], [5, 0, 14, 9]], [0.9, 0.8],
                                  Nt=0.3, method="linear", legacy_pixel=True)
    assert keep == [0, 1] and rescored[1] == pytest.approx(0.8 * 2 / 3, rel=1e-6)
    # Without +1 they are 9 x 9 and overlap in 4 x 9: IoU = 36 / 126 = 0.286 < 0.3.
    _, rescored = cpu_soft_nms([[0, 0, 9, 9], [5, 0, 14, 9]], [0.9, 0.8], Nt=0.3, method="linear")
    assert rescored[1] == pytest.approx(0.8)


def test_first_pick_below_threshold_differs_from_reference_on_purpose():
    # The reference never tests its first pick against the threshold.
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    scores = torch.tensor([0.0001, 0.0002])
    assert port(boxes, scores)[0].tolist() == [1]
    keep, rescored = soft_nms(boxes, scores)
    assert keep.tolist() == [] and rescored.tolist() == []


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

def test_batched_equals_per_class_loop():
    generator = torch.Generator().manual_seed(11)
    for trial in range(9):
        boxes, scores = random_case(generator, 150)
        idxs = torch.randint(0, [1, 3, 20][trial % 3], (150,), generator=generator)
        method = METHODS[trial % 3]
        keep, rescored = batched_soft_nms(boxes, scores, idxs, method=method)
        parts = [(torch.where(idxs == c)[0], soft_nms(boxes[idxs == c], scores[idxs == c],
                                                      method=method)) for c in idxs.unique()]
        expected_keep = torch.cat([members[k] for members, (k, _) in parts])
        expected_scores = torch.cat([r for _, (_, r) in parts])
        by_index = torch.argsort(expected_keep)  # merge: by score, ties by index
        expected_keep, expected_scores = expected_keep[by_index], expected_scores[by_index]
        order = torch.sort(expected_scores, descending=True, stable=True).indices
        assert torch.equal(keep, expected_keep[order])
        assert torch.equal(rescored, expected_scores[order])


def test_scores_only_decrease_and_come_out_in_order():
    generator = torch.Generator().manual_seed(12)
    boxes, scores = random_case(generator, 200)
    for method in METHODS:
        keep, rescored = soft_nms(boxes, scores, method=method)
        assert len(set(keep.tolist())) == len(keep)
        assert (rescored <= scores[keep]).all()
        assert (rescored[:-1] >= rescored[1:]).all()
        assert (rescored >= 0.001).all()


def test_hard_method_equals_greedy_nms():
    generator = torch.Generator().manual_seed(13)
    for _ in range(5):
        boxes, scores = random_case(generator, 200)
        scores = scores + 0.01  # every score above score_threshold
        keep, rescored = soft_nms(boxes, scores, iou_threshold=0.5, method="hard")
        assert torch.equal(keep, nms(boxes, scores, 0.5))
        assert torch.equal(rescored, scores[keep])  # survivors are never rescaled


def test_gaussian_leaves_disjoint_boxes_alone():
    boxes = torch.tensor([[3.0 * i, 0, 3 * i + 1, 1] for i in range(5)])
    scores = torch.tensor([0.3, 0.9, 0.5, 0.7, 0.1])
    keep, rescored = soft_nms(boxes, scores, method="gaussian")
    assert keep.tolist() == [1, 3, 2, 0, 4]
    assert torch.equal(rescored, scores[keep])


# ---------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_empty_single_and_identical_boxes(method):
    keep, rescored = soft_nms(torch.zeros(0, 4), torch.zeros(0), method=method)
    assert keep.dtype == torch.int64 and keep.shape == (0,) and rescored.shape == (0,)
    keep, rescored = soft_nms(torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([0.5]), method=method)
    assert keep.tolist() == [0] and rescored.tolist() == [0.5]
    # Identical boxes, tied scores: the lowest index is picked first; IoU = 1.
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3)
    keep, rescored = soft_nms(boxes, torch.ones(3), method=method)
    assert keep[0].item() == 0
    if method == "gaussian":  # each pick multiplies the rest by exp(-1 / 0.5)
        assert keep.tolist() == [0, 1, 2]
        torch.testing.assert_close(rescored, torch.tensor([1, math.exp(-2), math.exp(-4)]))
    else:  # 1 - IoU = 0: the others drop out
        assert keep.tolist() == [0]


def test_zero_area_boxes_and_threshold_one():
    # Zero-area boxes have IoU 0 with everything: no decay, even for identical ones.
    boxes = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0]])
    keep, rescored = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.0)
    assert keep.tolist() == [0, 1, 2] and rescored.tolist() == pytest.approx([0.9, 0.8, 0.7])
    # iou_threshold = 1: nothing is above it, even identical boxes keep their scores.
    keep, rescored = soft_nms(torch.tensor([[0.0, 0, 1, 1]] * 2), torch.tensor([0.6, 0.4]),
                              iou_threshold=1.0)
    assert keep.tolist() == [0, 1] and rescored.tolist() == pytest.approx([0.6, 0.4])


def test_dtypes_are_kept():
    generator = torch.Generator().manual_seed(14)
    boxes, scores = random_case(generator, 50)
    keep32, rescored32 = soft_nms(boxes, scores)
    # float16 scores are decayed in float32 (the IoU dtype) and returned as float16.
    keep, rescored = soft_nms(boxes, scores.half())
    keep_ref, rescored_ref = soft_nms(boxes, scores.half().float())
    assert rescored.dtype == torch.float16 and torch.equal(keep, keep_ref)
    assert torch.equal(rescored, rescored_ref.half())
    keep, rescored = soft_nms((boxes * 4).round().long(), scores)  # integer boxes -> float32 IoU
    assert keep.dtype == torch.int64 and rescored.dtype == torch.float32
    keep, rescored = soft_nms(boxes.requires_grad_(), scores)
    assert torch.equal(keep, keep32) and not rescored.requires_grad


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(method="soft"), "method"),
    (dict(sigma=0.0), "sigma"),
    (dict(iou_threshold=1.5), "iou_threshold"),
    (dict(iou_threshold=float("nan")), "iou_threshold"),
    (dict(score_threshold="0.1"), "score_threshold"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        soft_nms(torch.zeros(2, 4), torch.zeros(2), **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: soft_nms(torch.zeros(2, 3), torch.zeros(2)), "boxes"),
    (lambda: soft_nms(torch.zeros(2, 4), torch.zeros(3)), "scores"),
    (lambda: soft_nms(torch.zeros(2, 4), torch.tensor([1.0, float("nan")])), "NaN"),
    (lambda: soft_nms(torch.zeros(2, 4), torch.ones(2, dtype=torch.int64)), "scores"),
    (lambda: batched_soft_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(1).long()), "idxs"),
    (lambda: batched_soft_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2)), "idxs"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ early stopping (max_kept)

@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_max_kept_gives_exactly_the_first_picks_of_the_full_run(method):
    generator = torch.Generator().manual_seed(3)
    xy = torch.rand(300, 2, generator=generator) * 200
    wh = torch.rand(300, 2, generator=generator) * 60 + 5
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(300, generator=generator)
    labels = torch.randint(0, 4, (300,), generator=generator)
    full_keep, full_scores = soft_nms(boxes, scores, method=method)
    full_bkeep, full_bscores = batched_soft_nms(boxes, scores, labels, method=method)
    for limit in (1, 7, 100, 10_000):
        keep, kept = soft_nms(boxes, scores, method=method, max_kept=limit)
        assert torch.equal(keep, full_keep[:limit]) and torch.equal(kept, full_scores[:limit])
        keep, kept = batched_soft_nms(boxes, scores, labels, method=method, max_kept=limit)
        assert torch.equal(keep, full_bkeep[:limit]) and torch.equal(kept, full_bscores[:limit])


def test_max_kept_must_be_a_non_negative_int():
    boxes, scores = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0.5])
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="max_kept"):
            soft_nms(boxes, scores, max_kept=bad)


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_dense_and_row_by_row_loops_agree(method, monkeypatch):
    import sys

    module = sys.modules["fcos_from_scratch.ops.soft_nms"]  # the package exports a function of that name

    generator = torch.Generator().manual_seed(5)
    xy = torch.rand(200, 2, generator=generator) * 150
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=generator) * 60 + 5], dim=1)
    scores = torch.rand(200, generator=generator)
    labels = torch.randint(0, 3, (200,), generator=generator)
    dense = [soft_nms(boxes, scores, method=method), batched_soft_nms(boxes, scores, labels, method=method)]
    monkeypatch.setattr(module, "DENSE_LIMIT", 0)  # force the row-by-row loop
    rows = [soft_nms(boxes, scores, method=method), batched_soft_nms(boxes, scores, labels, method=method)]
    for (keep_a, scores_a), (keep_b, scores_b) in zip(dense, rows):
        assert torch.equal(keep_a, keep_b) and torch.equal(scores_a, scores_b)
