"""Tests for ``fcos_from_scratch.ops.nms``: nms, batched_nms and nms_reference.

Reference values: torchvision 0.29's nms / batched_nms, frozen by
``tests/reference/make_nms_refs.py``; hand-computed cases with their arithmetic.
Properties: the block-wise ``nms`` equals the plain loop ``nms_reference`` on
hundreds of random and clustered sets, ``batched_nms`` equals a per-class loop.
"""

import importlib
import math
import os

import pytest
import torch

from fcos_from_scratch.ops import batched_nms, box_iou, nms, nms_reference

nms_module = importlib.import_module("fcos_from_scratch.ops.nms")
padded_module = importlib.import_module("fcos_from_scratch.ops._per_class_nms")
# batched_nms's two algorithms: padded per-category matrices, and (budget 0) the blocks
PADDED_BUDGETS = [padded_module.MAX_PADDED_PAIRS, 0]

from make_nms_refs import clustered_boxes, distinct_scores, uniform_boxes  # noqa: E402
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "nms_refs.pt")


def per_class_nms(boxes, scores, idxs, iou_threshold):
    """batched_nms by its definition: nms per class, merged by decreasing score."""
    kept = [torch.where(idxs == c)[0][nms_reference(boxes[idxs == c], scores[idxs == c],
                                                    iou_threshold)]
            for c in torch.unique(idxs)]
    kept = torch.sort(torch.cat(kept)).values if kept else torch.zeros(0, dtype=torch.int64)
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def random_case(generator, n):
    """Random boxes (uniform, clustered, or on an integer grid), scores, a threshold."""
    kind = int(torch.randint(0, 3, (1,), generator=generator))
    boxes = (uniform_boxes if kind == 0 else clustered_boxes)(n, generator)
    if kind == 2:
        boxes = (boxes / 20).round()  # small integers: IoUs are simple fractions, ties
    scores = torch.rand(n, generator=generator)
    threshold = float(torch.rand(1, generator=generator))
    return boxes, scores, threshold


# ---------------------------------------------------------------------------
# Reference values
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torchvision_refs():
    return torch.load(FIXTURE, weights_only=True)


def test_fixture_records_versions(torchvision_refs):
    assert torchvision_refs["versions"]["torchvision"].startswith("0.29")


def test_nms_equals_torchvision(torchvision_refs):
    for case in torchvision_refs["cases"]:
        args = case["boxes"], case["scores"], case["iou_threshold"]
        assert torch.equal(nms(*args), case["nms"]), case["name"]
        assert torch.equal(nms_reference(*args), case["nms"]), case["name"]


@pytest.mark.parametrize("padded_budget", PADDED_BUDGETS)
def test_batched_nms_equals_torchvision(torchvision_refs, monkeypatch, padded_budget):
    monkeypatch.setattr(padded_module, "MAX_PADDED_PAIRS", padded_budget)
    for case in torchvision_refs["cases"]:
        kept = batched_nms(case["boxes"], case["scores"], case["idxs"], case["iou_threshold"])
        assert torch.equal(kept, case["batched_nms"]), case["name"]


def test_greedy_chain_by_hand():
    # A = [0, 0, 10, 10], B = A shifted by 4, C = A shifted by 8 (all 10 x 10).
    # IoU(A, B) = 6*10 / (100 + 100 - 60) = 60/140 = 0.43 > 0.4: B is suppressed.
    # IoU(B, C) = 0.43 too, but B is gone; IoU(A, C) = 20/180 = 0.11: C is kept.
    # (Suppressing with every box at once, "Fast NMS", would wrongly drop C.)
    boxes = torch.tensor([[8.0, 0, 18, 10], [0, 0, 10, 10], [4, 0, 14, 10]])
    scores = torch.tensor([0.7, 0.9, 0.8])
    assert nms(boxes, scores, 0.4).tolist() == [1, 0]
    assert nms(boxes, scores, 0.45).tolist() == [1, 2, 0]


def test_threshold_is_strict_and_exact():
    # IoU([0,0,2,1], [0,0,1,1]) = 1 / 2 exactly: equal to 0.5 does not suppress.
    boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.4999).tolist() == [0]
    # IoU([0,0,10,1], [0,0,3,1]) = 3 / 10, which float32 rounds up to 0.300000012:
    # torchvision compares that float with the double 0.3 and suppresses; in float64
    # 3/10 is the same double as 0.3 and does not suppress.
    boxes = torch.tensor([[0.0, 0, 10, 1], [0, 0, 3, 1]])
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes.double(), scores.double(), 0.3).tolist() == [0, 1]
    assert nms_reference(boxes, scores, 0.3).tolist() == [0]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

def test_nms_equals_plain_loop_on_many_random_sets():
    generator = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(0, 300, (1,), generator=generator))
        boxes, scores, threshold = random_case(generator, n)
        assert torch.equal(nms(boxes, scores, threshold),
                           nms_reference(boxes, scores, threshold)), trial


def test_nms_equals_plain_loop_across_many_small_blocks(monkeypatch):
    monkeypatch.setattr(nms_module, "BLOCK_SIZE", 7)  # many block boundaries
    monkeypatch.setattr(nms_module, "MAX_PAIRS_PER_OP", 60)  # and chunk boundaries
    generator = torch.Generator().manual_seed(1)
    for trial in range(60):
        boxes, scores, threshold = random_case(generator, 80)
        assert torch.equal(nms(boxes, scores, threshold),
                           nms_reference(boxes, scores, threshold)), trial


@pytest.mark.parametrize("n, make", [(3000, uniform_boxes), (5000, clustered_boxes)])
def test_nms_equals_plain_loop_on_large_sets(n, make):
    generator = torch.Generator().manual_seed(n)
    boxes, scores = make(n, generator), torch.rand(n, generator=generator)
    for threshold in (0.5, 0.7):
        assert torch.equal(nms(boxes, scores, threshold),
                           nms_reference(boxes, scores, threshold))


@pytest.mark.parametrize("padded_budget", PADDED_BUDGETS)
@pytest.mark.parametrize("block_size, max_pairs, lead", [(7, 60, 2), (176, 32000, 32)])
def test_batched_nms_equals_per_class_loop(monkeypatch, block_size, max_pairs, lead, padded_budget):
    # Small blocks and ops exercise every boundary: between blocks, between chunks
    # of later boxes, between runs of categories, and (padded) between leading
    # rounds and between chunks of categories.
    monkeypatch.setattr(padded_module, "MAX_PADDED_PAIRS", padded_budget)
    monkeypatch.setattr(padded_module, "LEAD", lead)
    monkeypatch.setattr(padded_module, "CHUNK_PAIRS", max_pairs * 8)
    monkeypatch.setattr(nms_module, "BLOCK_SIZE", block_size)
    monkeypatch.setattr(nms_module, "MAX_PAIRS_PER_OP", max_pairs)
    generator = torch.Generator().manual_seed(block_size)
    for trial in range(40):
        n = int(torch.randint(0, 400, (1,), generator=generator))
        boxes, scores, threshold = random_case(generator, n)
        num_classes = [1, 3, 50][trial % 3]
        idxs = torch.randint(0, num_classes, (n,), generator=generator)
        assert torch.equal(batched_nms(boxes, scores, idxs, threshold),
                           per_class_nms(boxes, scores, idxs, threshold)), trial


@pytest.mark.parametrize("padded_budget", PADDED_BUDGETS)
def test_batched_nms_large_sets_both_phases(monkeypatch, padded_budget):
    # Blocks: uniform boxes switch to the per-category order after one block;
    # clustered ones stay in score order. Padded: one matrix per category. All
    # must equal the per-class loop.
    monkeypatch.setattr(padded_module, "MAX_PADDED_PAIRS", padded_budget)
    generator = torch.Generator().manual_seed(5)
    for make in (uniform_boxes, clustered_boxes):
        boxes = make(2500, generator)
        scores = distinct_scores(2500, generator)
        idxs = torch.randint(0, 10, (2500,), generator=generator)
        assert torch.equal(batched_nms(boxes, scores, idxs, 0.5),
                           per_class_nms(boxes, scores, idxs, 0.5))


def test_kept_boxes_do_not_overlap_and_every_dropped_box_is_covered():
    generator = torch.Generator().manual_seed(3)
    boxes, scores = clustered_boxes(500, generator), torch.rand(500, generator=generator)
    keep = nms(boxes, scores, 0.5)
    iou = box_iou(boxes[keep], boxes[keep])
    assert (iou.triu(1) <= 0.5).all()
    assert (scores[keep][:-1] >= scores[keep][1:]).all()  # decreasing score
    dropped = torch.ones(500, dtype=torch.bool)
    dropped[keep] = False
    covered = box_iou(boxes[keep], boxes[dropped]) > 0.5  # (K, D)
    assert covered.any(dim=0).all()


# ---------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------

def test_empty_and_single_box():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    assert nms(torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([0.1]), 0.5).tolist() == [0]


def test_identical_boxes_and_tied_scores():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 5)
    assert nms(boxes, torch.ones(5), 0.5).tolist() == [0]  # tie: lowest index first
    assert nms(boxes, torch.tensor([0.1, 0.5, 0.3, 0.5, 0.2]), 0.5).tolist() == [1]
    assert nms(boxes, torch.ones(5), 1.0).tolist() == [0, 1, 2, 3, 4]  # IoU 1 is not > 1
    # Disjoint boxes with tied scores come back by increasing index within a score.
    disjoint = torch.tensor([[3.0 * i, 0, 3 * i + 1, 1] for i in range(6)])
    scores = torch.tensor([0.2, 0.5, 0.2, 0.5, 0.9, 0.2])
    assert nms(disjoint, scores, 0.5).tolist() == [4, 1, 3, 0, 2, 5]
    idxs = torch.tensor([0, 1, 0, 1, 0, 1])
    assert batched_nms(disjoint, scores, idxs, 0.5).tolist() == [4, 1, 3, 0, 2, 5]


def test_zero_area_boxes_never_suppress():
    # The union of two identical points is 0: IoU is 0 (torchvision: NaN, which
    # does not compare > threshold either), so both are kept, even at threshold 0.
    boxes = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.0).tolist() == [0, 1, 2]


def test_threshold_zero_suppresses_any_overlap_but_not_touching():
    boxes = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [9.9, 0, 20, 10]])
    # Box 1 only touches box 0 (IoU 0) and is kept; box 2 overlaps box 0 by a
    # 0.1 x 10 strip (IoU 1/200 > 0) and is suppressed, whatever its score.
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.0).tolist() == [0, 1]
    assert nms(boxes, torch.tensor([0.9, 0.7, 0.8]), 0.0).tolist() == [0, 1]
    assert nms(boxes, torch.tensor([0.9, 0.7, 0.8]), 0.01).tolist() == [0, 2]


def test_huge_and_negative_coordinates():
    generator = torch.Generator().manual_seed(4)
    boxes = clustered_boxes(400, generator) + 1.0e6  # float32 spacing is 0.0625 here
    scores = torch.rand(400, generator=generator)
    assert torch.equal(nms(boxes, scores, 0.5), nms_reference(boxes, scores, 0.5))
    # Negative coordinates defeat the "shift by max coordinate + 1" trick; the
    # category mask does not care.
    boxes = clustered_boxes(400, generator) - 600.0
    idxs = torch.randint(0, 4, (400,), generator=generator)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5),
                       per_class_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64])
def test_other_dtypes(dtype):
    generator = torch.Generator().manual_seed(6)
    boxes = (clustered_boxes(300, generator) / 4).round().to(dtype)  # exact in every dtype
    scores = torch.rand(300, generator=generator)
    expected = nms_reference(boxes, scores, 0.5)
    # float16 / bfloat16 / integer boxes are compared in float32, like box_iou.
    if dtype != torch.float64:
        assert torch.equal(expected, nms_reference(boxes.float(), scores, 0.5))
    assert torch.equal(nms(boxes, scores.to(torch.float64), 0.5), expected)
    assert torch.equal(batched_nms(boxes, scores, torch.zeros(300, dtype=torch.int64), 0.5),
                       expected)


def test_inputs_that_require_grad_and_are_not_modified():
    generator = torch.Generator().manual_seed(7)
    boxes = clustered_boxes(100, generator).requires_grad_()
    scores = torch.rand(100, generator=generator).requires_grad_()
    before = boxes.detach().clone()
    keep = nms(boxes, scores, 0.5)
    assert keep.dtype == torch.int64 and not keep.requires_grad
    assert torch.equal(boxes.detach(), before)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: nms(torch.zeros(3, 5), torch.zeros(3), 0.5), "boxes"),
    (lambda: nms(torch.zeros(4), torch.zeros(1), 0.5), "boxes"),
    (lambda: nms(torch.zeros(3, 4), torch.zeros(2), 0.5), "scores"),
    (lambda: nms(torch.zeros(3, 4), torch.zeros(3, 1), 0.5), "scores"),
    (lambda: nms(torch.zeros(2, 4), torch.tensor([0.1, float("nan")]), 0.5), "NaN"),
    (lambda: nms(torch.zeros(2, 4), torch.zeros(2), float("nan")), "iou_threshold"),
    (lambda: nms(torch.zeros(2, 4), torch.zeros(2), "0.5"), "iou_threshold"),
    (lambda: nms_reference(torch.zeros(3, 5), torch.zeros(3), 0.5), "boxes"),
    (lambda: batched_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(3).long(), 0.5), "idxs"),
    (lambda: batched_nms(torch.zeros(2, 4), torch.zeros(2), torch.tensor([0.0, math.nan]), 0.5), "idxs"),
    (lambda: batched_nms(torch.zeros(2, 4), torch.zeros(2), [0, 1], 0.5), "idxs"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
