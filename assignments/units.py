"""The units: what the student writes (library names), the cases, the points.

A unit's public cases are fixed (the student runs them with ``python -m
assignments test``); its hidden cases come from seeded generators, one named
family per edge case (ties, IoU exactly at the threshold, empty inputs, zero-area
boxes, padded batches, ...). The seed is read from a file given to the grader and
kept out of the repository; the expected values are always computed by the
library at grading time, in the grader's own process.

Points: each graded name has a weight w; its public cases are worth w and its
hidden cases 2w, split evenly over the hidden families.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .grader import Case


@dataclasses.dataclass(frozen=True)
class Item:
    """A library function or class the student writes."""

    module: str
    name: str
    source: str = ""  # the solution's body comes from this plain-loop twin (same signature)
    hide: Tuple[str, ...] = ()  # other library names that would give the answer away


@dataclasses.dataclass
class Unit:
    name: str
    title: str
    file: str
    items: Tuple[Item, ...]
    weights: Dict[str, float]
    make_cases: Callable[[int], List[Case]]
    walkthrough: str
    allowed: Tuple[str, ...] = ()  # import lines the starter offers (names outside the unit)
    timeout: float = 60.0  # wall-clock seconds for the whole child
    case_seconds: int = 20  # per-case alarm in the child
    drivers: Tuple[Tuple[str, str], ...] = ()  # (name, module): library code that calls the parts
    driver_files: Tuple[str, ...] = ()  # files copied next to the grading view for the drivers
    judge: Optional[Callable] = None  # (case, flat output) -> (fraction, message), instead of equality
    leaderboard: Optional[Callable] = None  # flat output -> Gradescope leaderboard entries

    def cases(self, seed: int) -> List[Case]:
        return self.make_cases(seed)

    def points_for(self, label, tier, family, keys_in_tier) -> float:
        weight = self.weights[label]
        if tier == "public":
            return weight
        share = round(2 * weight / len(keys_in_tier), 2)  # the last family takes the rounding
        last = [k[2] for k in keys_in_tier][-1] == family
        return round(2 * weight - share * (len(keys_in_tier) - 1), 2) if last else share

    def max_points(self, seed: int = 1234) -> float:
        """The unit's total: the sum of its tests' maximum scores (as the grader groups them)."""
        if self.judge is not None:  # one public test per weight; its cases are costly to build
            return float(sum(self.weights.values()))
        keys = list(dict.fromkeys((c.label or c.call, c.tier, c.family) for c in self.cases(seed)))
        return round(sum(self.points_for(label, tier, family, [k for k in keys if k[:2] == (label, tier)])
                         for label, tier, family in keys), 4)

    def child_env(self) -> dict:
        return {}


# ---------------------------------------------------------------------------
# Input generators
# ---------------------------------------------------------------------------

def _rng(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1000 + salt)


def random_boxes(g, n: int, size: float = 100.0, dtype=torch.float64) -> torch.Tensor:
    """(n, 4) xyxy boxes with positive width and height inside [0, 1.5 size]."""
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * size
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def clustered_boxes(g, n: int, dtype=torch.float64) -> torch.Tensor:
    """Boxes jittered around a few centres, so that NMS has something to suppress."""
    centres = random_boxes(g, 3, dtype=dtype)
    pick = torch.randint(0, 3, (n,), generator=g)
    return centres[pick] + torch.randn(n, 4, generator=g, dtype=dtype) * 4


def zero_area_boxes(dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 0.0], [2.0, 2.0, 2.0, 9.0],
                         [0.0, 0.0, 10.0, 10.0]], dtype=dtype)


HAND_BOXES_A = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
HAND_BOXES_B = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 5.0, 5.0]])


# ---------------------------------------------------------------------------
# boxes_iou
# ---------------------------------------------------------------------------

def boxes_iou_cases(seed: int) -> List[Case]:
    cases = []
    formats = ("xyxy", "xywh", "cxcywh")
    cases += [Case("box_convert", [HAND_BOXES_A, "xyxy", "cxcywh"]),
              Case("box_convert", [HAND_BOXES_B, "xywh", "xyxy"])]
    for fn in ("box_iou", "generalized_box_iou"):
        cases.append(Case(fn, [HAND_BOXES_A, HAND_BOXES_B]))
    cases.append(Case("box_area", [HAND_BOXES_B]))
    g = _rng(seed, 1)
    for a in formats:
        for b in formats:
            if a != b:
                cases.append(Case("box_convert", [random_boxes(g, 6), a, b], tier="hidden", family="formats"))
    cases.append(Case("box_convert", [torch.zeros(0, 4), "cxcywh", "xyxy"], tier="hidden", family="empty"))
    for fn in ("box_area", "box_iou", "generalized_box_iou"):
        two = fn != "box_area"
        for n in (5, 9):
            args = [random_boxes(g, n), random_boxes(g, n + 2)] if two else [random_boxes(g, n)]
            cases.append(Case(fn, args, tier="hidden", family="random"))
        args = [zero_area_boxes(), zero_area_boxes()] if two else [zero_area_boxes()]
        cases.append(Case(fn, args, tier="hidden", family="zero-area"))
        args = [torch.zeros(0, 4), random_boxes(g, 3).float()] if two else [torch.zeros(0, 4)]
        cases.append(Case(fn, args, tier="hidden", family="empty"))
        if two:  # float32 in, float32 out; touching boxes have IoU exactly 0
            cases.append(Case(fn, [random_boxes(g, 4).float(), HAND_BOXES_B], tier="hidden", family="float32"))
    return cases


# ---------------------------------------------------------------------------
# nms
# ---------------------------------------------------------------------------

def exact_threshold_boxes(dtype=torch.float64):
    """Boxes whose IoU with the first is exactly 0.5 (50 / 100) or 0.25: strict > matters."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 5.0, 5.0],
                          [0.0, 5.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]], dtype=dtype)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5], dtype=dtype)
    return boxes, scores


def nms_cases(seed: int) -> List[Case]:
    cases = []
    boxes, scores = exact_threshold_boxes()
    cases.append(Case("nms", [boxes, scores, 0.4]))
    cases.append(Case("batched_nms", [boxes, scores, torch.tensor([0, 1, 0, 0, 1]), 0.4]))
    cases.append(Case("soft_nms", [boxes, scores], {"method": "linear", "iou_threshold": 0.3}))
    g = _rng(seed, 2)
    for n in (12, 40):
        b = clustered_boxes(g, n)
        s = torch.rand(n, generator=g, dtype=torch.float64)
        idxs = torch.randint(0, 3, (n,), generator=g)
        cases.append(Case("nms", [b, s, 0.5], tier="hidden", family="random"))
        cases.append(Case("batched_nms", [b, s, idxs, 0.5], tier="hidden", family="random"))
        for method in ("linear", "gaussian", "hard"):
            cases.append(Case("soft_nms", [b, s], {"method": method, "score_threshold": 0.05},
                              tier="hidden", family=method))
        tied = (s * 3).floor() / 3  # three score values: ties broken by index
        cases.append(Case("nms", [b, tied, 0.3], tier="hidden", family="ties"))
        cases.append(Case("batched_nms", [b, tied, idxs, 0.3], tier="hidden", family="ties"))
    for threshold in (0.5, 0.25):
        cases.append(Case("nms", [boxes, scores, threshold], tier="hidden", family="exact-threshold"))
        cases.append(Case("batched_nms", [boxes, scores, torch.zeros(5, dtype=torch.int64), threshold],
                          tier="hidden", family="exact-threshold"))
    empty_b, empty_s = torch.zeros(0, 4), torch.zeros(0)
    cases.append(Case("nms", [empty_b, empty_s, 0.5], tier="hidden", family="empty"))
    cases.append(Case("batched_nms", [empty_b, empty_s, torch.zeros(0, dtype=torch.int64), 0.5],
                      tier="hidden", family="empty"))
    cases.append(Case("soft_nms", [empty_b, empty_s], tier="hidden", family="linear"))
    return cases


# ---------------------------------------------------------------------------
# focal_loss
# ---------------------------------------------------------------------------

def focal_cases(seed: int) -> List[Case]:
    x = torch.tensor([[-2.0, 0.0, 3.0], [1.0, -1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cases = [Case("sigmoid_focal_loss", [x, t]), Case("prior_bias", [0.01])]
    g = _rng(seed, 3)
    for reduction in ("none", "mean", "sum"):
        x = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
        t = (torch.rand(6, 5, generator=g, dtype=torch.float64) > 0.7).double()
        cases.append(Case("sigmoid_focal_loss", [x, t], {"reduction": reduction, "alpha": 0.3, "gamma": 1.5},
                          tier="hidden", family="reductions", grad=[0]))
    x = torch.tensor([-80.0, -20.0, 20.0, 80.0], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    cases.append(Case("sigmoid_focal_loss", [x, t], tier="hidden", family="extreme-logits", grad=[0]))
    cases.append(Case("sigmoid_focal_loss", [x, t], {"alpha": -1, "gamma": 0.0},
                      tier="hidden", family="extreme-logits"))
    cases.append(Case("sigmoid_focal_loss", [torch.zeros(0, 3, dtype=torch.float64),
                                             torch.zeros(0, 3, dtype=torch.float64)], {"reduction": "mean"},
                      tier="hidden", family="empty", grad=[0]))
    for p in (0.5, 0.001, float(torch.rand(1, generator=g)) * 0.9 + 0.05):
        cases.append(Case("prior_bias", [p], tier="hidden", family="random", rtol=1e-12, atol=1e-12))
    return cases


# ---------------------------------------------------------------------------
# map
# ---------------------------------------------------------------------------

def _pr_curve(g, n: int, num_gt: int):
    is_tp = (torch.rand(n, generator=g) > 0.4).numpy()
    tp = np.cumsum(is_tp)
    recall = (tp / num_gt).astype(np.float64)
    precision = (tp / np.arange(1, n + 1)).astype(np.float64)
    return recall, precision


def map_cases(seed: int) -> List[Case]:
    r = np.array([0.2, 0.4, 0.4, 0.6, 0.8])
    p = np.array([1.0, 1.0, 0.667, 0.75, 0.8])
    cases = [Case("voc_ap", [r, p, True]), Case("voc_ap", [r, p, False]),
             Case("average_precision", [np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3])]
    g = _rng(seed, 4)
    for n in (5, 30):
        rec, prec = _pr_curve(g, n, num_gt=max(1, n // 2))
        for use_07 in (True, False):
            cases.append(Case("voc_ap", [rec, prec, use_07], tier="hidden", family="random"))
        scores = torch.rand(n, generator=g, dtype=torch.float64).numpy()
        is_tp = (torch.rand(n, generator=g) > 0.5).numpy()
        cases.append(Case("average_precision", [scores, is_tp, int(is_tp.sum()) + 2], tier="hidden", family="random"))
        tied = np.floor(scores * 3) / 3
        cases.append(Case("average_precision", [tied, is_tp, int(is_tp.sum()) + 1], tier="hidden", family="ties"))
    empty = np.zeros(0, dtype=np.float64)
    for use_07 in (True, False):
        cases.append(Case("voc_ap", [empty, empty, use_07], tier="hidden", family="empty"))
        cases.append(Case("voc_ap", [np.array([0.5, 1.0]), np.array([1.0, 1.0]), use_07],
                          tier="hidden", family="perfect"))
    cases.append(Case("average_precision", [empty, np.zeros(0, dtype=bool), 4], tier="hidden", family="empty"))
    cases.append(Case("average_precision", [np.ones(4), np.ones(4, dtype=bool), 4], tier="hidden", family="ties"))
    return cases


# ---------------------------------------------------------------------------
# fcos_targets
# ---------------------------------------------------------------------------

def _targets_batch(g, batch: int, max_boxes: int, size: float = 128.0):
    boxes = torch.zeros(batch, max_boxes, 4)
    labels = torch.zeros(batch, max_boxes, dtype=torch.int64)
    valid = torch.zeros(batch, max_boxes, dtype=torch.bool)
    for b in range(batch):
        m = int(torch.randint(0, max_boxes + 1, (1,), generator=g))
        boxes[b, :m] = random_boxes(g, m, size=size * 0.8, dtype=torch.float32).round()
        labels[b, :m] = torch.randint(0, 5, (m,), generator=g)
        valid[b, :m] = True
    return boxes, labels, valid


def fcos_targets_cases(seed: int) -> List[Case]:
    sizes, strides = [(4, 4), (2, 2)], [8, 16]
    points = [torch.tensor([[4.0, 4.0], [12.0, 4.0]]), torch.tensor([[8.0, 8.0]])]
    box = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    cases = [Case("make_points", [sizes, strides]),
             Case("centerness_target", [torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])]),
             Case("encode_ltrb", [torch.tensor([[4.0, 4.0]]), torch.tensor([[0.0, 0.0, 16.0, 8.0]]),
                                  torch.tensor([8.0])]),
             Case("decode_ltrb", [torch.tensor([[4.0, 4.0]]), torch.tensor([[0.5, 0.5, 1.5, 0.5]]),
                                  torch.tensor([8.0])]),
             Case("candidate_mask", [torch.cat(points), torch.tensor([8.0, 8.0, 16.0]),
                                     torch.tensor([[0.0, 64.0], [0.0, 64.0], [64.0, 128.0]]), box, 1.5]),
             Case("assign_targets", [points, [8, 16], box, torch.tensor([[3]]), torch.tensor([[True]])],
                  {"sizes_of_interest": (0.0, 12.0, math.inf)})]
    g = _rng(seed, 5)
    for offset in (0.5, 0.0):
        cases.append(Case("make_points", [[(3, 5), (2, 3), (1, 1)], [8, 16, 32]], {"offset": offset},
                          tier="hidden", family="random"))
    ltrb = torch.rand(7, 4, generator=g) * 20
    ltrb[0] = torch.tensor([0.0, 3.0, 0.0, 2.0])  # a (0, 0) pair: 0, not NaN
    cases.append(Case("centerness_target", [ltrb], tier="hidden", family="zero-distances"))
    cases.append(Case("centerness_target", [torch.rand(2, 3, 4, generator=g) * 9], tier="hidden", family="random"))
    pts = torch.rand(6, 2, generator=g) * 100
    bxs = random_boxes(g, 6, dtype=torch.float32)
    st = torch.tensor([8.0, 8.0, 16.0, 16.0, 32.0, 32.0])
    cases.append(Case("encode_ltrb", [pts, bxs, st], tier="hidden", family="random"))
    cases.append(Case("decode_ltrb", [pts, torch.rand(6, 4, generator=g) * 5, st], tier="hidden", family="random"))
    level_sizes = [(8, 8), (4, 4), (2, 2)]
    level_strides = [16, 32, 64]
    from fcos_from_scratch.models.detectors.fcos import make_points  # the library: grader side only
    pts_per_level = make_points(level_sizes, level_strides)
    flat = torch.cat(pts_per_level)
    flat_strides = torch.cat([torch.full((len(p),), float(s)) for p, s in zip(pts_per_level, level_strides)])
    bounds = torch.tensor([0.0, 32.0, 64.0, math.inf])
    ranges = torch.cat([bounds[[i, i + 1]].expand(len(p), 2) for i, p in enumerate(pts_per_level)])
    for family, batch, max_boxes in (("random", 2, 5), ("padded", 3, 4)):
        boxes, labels, valid = _targets_batch(g, batch, max_boxes)
        for radius in (1.5, 0.0):
            cases.append(Case("candidate_mask", [flat, flat_strides, ranges, boxes, radius], tier="hidden",
                              family=family))
        cases.append(Case("assign_targets", [pts_per_level, level_strides, boxes, labels, valid],
                          {"sizes_of_interest": (0.0, 32.0, 64.0, math.inf)}, tier="hidden", family=family))
    # ties: two identical boxes (equal areas) -> the lower index wins; a box whose
    # max(l, t, r, b) is exactly on a level bound.
    tie = torch.tensor([[[16.0, 16.0, 80.0, 80.0], [16.0, 16.0, 80.0, 80.0], [0.0, 0.0, 64.0, 64.0]]])
    cases.append(Case("assign_targets", [pts_per_level, level_strides, tie, torch.tensor([[1, 2, 3]]),
                                         torch.ones(1, 3, dtype=torch.bool)],
                      {"sizes_of_interest": (0.0, 32.0, 64.0, math.inf), "center_sampling_radius": 0.0},
                      tier="hidden", family="ties"))
    cases.append(Case("assign_targets", [pts_per_level, level_strides, torch.ones(2, 2, 4) * 8,
                                         torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.bool)],
                      {"sizes_of_interest": (0.0, 32.0, 64.0, math.inf)}, tier="hidden", family="empty"))
    return cases


# ---------------------------------------------------------------------------
# roi_align
# ---------------------------------------------------------------------------

def roi_align_cases(seed: int) -> List[Case]:
    feature = torch.arange(2 * 1 * 5 * 5, dtype=torch.float64).reshape(2, 1, 5, 5)
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 1.0, 3.5, 2.5]], dtype=torch.float64)
    cases = [Case("roi_align", [feature, rois, 2], {"sampling_ratio": 2, "aligned": True}),
             Case("roi_align", [feature, rois, (2, 3)])]
    g = _rng(seed, 6)
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    k = 6
    b = random_boxes(g, k, size=40, dtype=torch.float64)
    batch_idx = torch.randint(0, 2, (k, 1), generator=g).double()
    rois = torch.cat([batch_idx, b], dim=1)
    for aligned in (False, True):
        cases.append(Case("roi_align", [x, rois, (3, 2)], {"spatial_scale": 0.25, "sampling_ratio": 2,
                                                            "aligned": aligned}, tier="hidden", family="random"))
        cases.append(Case("roi_align", [x, rois, 2], {"spatial_scale": 0.25, "sampling_ratio": -1,
                                                       "aligned": aligned}, tier="hidden", family="adaptive-grid"))
    outside = torch.tensor([[0.0, -30.0, -30.0, -1.0, -2.0], [1.0, 30.0, 20.0, 80.0, 70.0],
                            [0.0, 5.0, 5.0, 5.0, 5.0]], dtype=torch.float64)
    cases.append(Case("roi_align", [x, outside, 2], {"spatial_scale": 0.5, "sampling_ratio": 2},
                      tier="hidden", family="out-of-range"))
    cases.append(Case("roi_align", [x, outside, 2], {"spatial_scale": 0.5, "aligned": True},
                      tier="hidden", family="out-of-range"))
    cases.append(Case("roi_align", [x, [b[:2], b[2:5]], 2], {"spatial_scale": 0.25, "sampling_ratio": 2},
                      tier="hidden", family="list-boxes"))
    cases.append(Case("roi_align", [x, torch.zeros(0, 5, dtype=torch.float64), 2], tier="hidden", family="empty"))
    return cases


# ---------------------------------------------------------------------------
# anchors_matching
# ---------------------------------------------------------------------------

def anchors_matching_cases(seed: int) -> List[Case]:
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.2], [0.1, 0.6, 0.35, 0.2]])
    cases = [
        Case("Matcher", [iou], method="__call__", init_args=[0.7, 0.3]),
        Case("BoxCoder", [HAND_BOXES_A, HAND_BOXES_A + 1], method="encode_single", init_args=[(1.0, 1.0, 1.0, 1.0)]),
        Case("AnchorGenerator", [[(2, 3)], [16]], method="grid_anchors",
             init_kwargs={"sizes": ((32,),), "aspect_ratios": ((0.5, 1.0, 2.0),)}),
    ]
    g = _rng(seed, 7)
    for low_quality in (False, True):
        q = torch.rand(4, 9, generator=g)
        q[:, 3] = 0.3  # a column exactly at the low threshold
        q[1, 5] = 0.7  # exactly at the high threshold
        cases.append(Case("Matcher", [q], method="__call__", init_args=[0.7, 0.3, low_quality],
                          tier="hidden", family="thresholds"))
    q = torch.tensor([[0.2, 0.2, 0.1], [0.05, 0.1, 0.1]])  # ties in a ground truth's best quality
    cases.append(Case("Matcher", [q], method="__call__", init_args=[0.7, 0.3, True], tier="hidden", family="ties"))
    weights = (10.0, 10.0, 5.0, 5.0)
    ref = random_boxes(g, 7, dtype=torch.float32)
    prop = random_boxes(g, 7, dtype=torch.float32)
    cases.append(Case("BoxCoder", [ref, prop], method="encode_single", init_args=[weights],
                      tier="hidden", family="random", rtol=1e-4, atol=1e-5))
    codes = torch.randn(7, 4, generator=g)
    codes[0, 2] = 20.0  # clamped by bbox_xform_clip
    cases.append(Case("BoxCoder", [codes, prop], method="decode_single", init_args=[weights],
                      tier="hidden", family="random", rtol=1e-4, atol=1e-4))
    cases.append(Case("BoxCoder", [torch.zeros(0, 4), torch.zeros(0, 4)], method="decode_single",
                      init_args=[weights], tier="hidden", family="empty"))
    cases.append(Case("AnchorGenerator", [[(3, 4), (2, 2)], [8, 16]], method="grid_anchors",
                      init_kwargs={"sizes": ((32, 45), (64, 90)), "aspect_ratios": ((0.5, 1.0, 2.0),) * 2},
                      tier="hidden", family="random"))
    cases.append(Case("AnchorGenerator", [(64, 96), [(8, 12), (4, 6)], 2], method="forward",
                      init_kwargs={"sizes": (24, 48), "aspect_ratios": (0.5, 2.0)}, tier="hidden", family="random"))
    return cases


# ---------------------------------------------------------------------------
# fpn_head: modules graded through the library's state_dict
# ---------------------------------------------------------------------------

def random_state(module: torch.nn.Module, g) -> dict:
    """The module's state with noise on every float entry.

    Zero biases, identity norms and unit level scales would hide a submission that
    forgets them; integer entries (BatchNorm's counter) stay as they are.
    """
    return {k: v + torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.1 if v.is_floating_point() else v.clone()
            for k, v in module.state_dict().items()}


def _module_case(cls, g, init_args, init_kwargs, features, family, tier="hidden") -> Case:
    torch.manual_seed(0)  # only the initial weights, which random_state then perturbs
    state = random_state(cls(*init_args, **init_kwargs), g)
    return Case(cls.__name__, [features], method="forward", init_args=list(init_args), init_kwargs=init_kwargs,
                state=state, tier=tier, family=family, rtol=1e-4, atol=1e-5)


def _pyramid(g, batch: int, channels, sizes) -> List[torch.Tensor]:
    return [torch.randn(batch, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]


def fpn_head_cases(seed: int) -> List[Case]:
    from fcos_from_scratch.models.detectors.fcos import FCOSHead  # the library: grader side only
    from fcos_from_scratch.models.fpn import FPN

    public = _rng(0, 8)  # public cases do not depend on the seed
    sizes3 = [(8, 8), (4, 4), (2, 2)]
    cases = [_module_case(FPN, public, ([8, 16, 24], 16), {}, _pyramid(public, 1, [8, 16, 24], sizes3),
                          "random", tier="public"),
             _module_case(FCOSHead, public, (16, 3, 3), {"num_convs": 1}, _pyramid(public, 1, [16] * 3, sizes3),
                          "random", tier="public")]
    g = _rng(seed, 8)
    odd = [(15, 13), (8, 7), (4, 4)]  # the top-down pass upsamples to the lateral's size, not 2x
    for source, levels in (("c5", None), ("maxpool", None), ("none", None), ("p5", 4)):
        cases.append(_module_case(FPN, g, ([8, 12, 16], 16), {"num_levels": levels, "extra_source": source},
                                  _pyramid(g, 2, [8, 12, 16], odd), "extra-source"))
    cases.append(_module_case(FPN, g, ([8, 16, 32], 32), {"norm": "gn"}, _pyramid(g, 2, [8, 16, 32], sizes3), "norm-gn"))
    cases.append(_module_case(FPN, g, ([8, 16, 32], 32), {"norm": "gn", "extra_source": "c5", "num_levels": 4},
                              _pyramid(g, 1, [8, 16, 32], odd), "norm-gn"))
    four = [(16, 16), (8, 8), (4, 4), (2, 2)]  # C2..C5
    cases.append(_module_case(FPN, g, ([4, 8, 16, 32], 8), {"num_levels": 6}, _pyramid(g, 1, [4, 8, 16, 32], four),
                              "levels"))
    cases.append(_module_case(FPN, g, ([16], 8), {"extra_source": "p5", "num_levels": 3},
                              _pyramid(g, 2, [16], [(6, 5)]), "levels"))
    for convs in (0, 2):
        cases.append(_module_case(FCOSHead, g, (16, 4, 3), {"num_convs": convs}, _pyramid(g, 2, [16] * 3, odd),
                                  "head-convs"))
    cases.append(_module_case(FCOSHead, g, (8, 2, 2), {"num_convs": 1, "level_scales": False},
                              _pyramid(g, 2, [8, 8], [(5, 6), (3, 3)]), "level-scales-off"))
    cases.append(_module_case(FCOSHead, g, (8, 5, 4), {"num_convs": 1, "reg_activation": "exp"},
                              _pyramid(g, 1, [8] * 4, four), "exp"))
    cases.append(_module_case(FCOSHead, g, (48, 3, 1), {"num_convs": 2, "prior_prob": 0.05},
                              _pyramid(g, 1, [48], [(4, 7)]), "random"))  # GroupNorm with gcd(32, 48) = 16 groups
    return cases


# ---------------------------------------------------------------------------
# fcos_loss_inference
# ---------------------------------------------------------------------------

def _loss_inputs(g, batch: int, points: int, classes: int, positive_fraction: float):
    from fcos_from_scratch.models.matching import BACKGROUND

    cls_logits = torch.randn(batch, points, classes, generator=g) * 2
    box_ltrb = torch.rand(batch, points, 4, generator=g) * 4 + 0.05
    ctr_logits = torch.randn(batch, points, generator=g)
    labels = torch.randint(0, classes, (batch, points), generator=g)
    positive = torch.rand(batch, points, generator=g) < positive_fraction
    labels = torch.where(positive, labels, torch.full_like(labels, BACKGROUND))
    target_ltrb = (torch.rand(batch, points, 4, generator=g) * 4 + 0.05) * positive[..., None]
    target_ctr = torch.rand(batch, points, generator=g) * positive
    return [cls_logits, box_ltrb, ctr_logits, labels, target_ltrb, target_ctr]


def _candidate_sets(flat: dict, fields) -> dict:
    """Outputs (B, C) per field -> per image, the rows whose score is not MASKED, sorted.

    The library takes its top-k with ``torch.topk``, whose order among equal scores
    is unspecified; downstream only the set of candidates matters.
    """
    from fcos_from_scratch.models.postprocess import MASKED

    columns = [np.asarray(flat[f"out[{i}]|tensor"]) for i in range(len(fields))]
    scores = columns[fields.index("scores")]
    if flat.get("out|len") != len(fields) or any(c.shape[:2] != scores.shape for c in columns):
        raise ValueError(f"expected {len(fields)} outputs ({', '.join(fields)}), each (B, C, ...)")
    out = {}
    for b in range(scores.shape[0]):
        keep = scores[b] > MASKED
        rows = [c[b][keep].reshape(int(keep.sum()), -1 if c.ndim > 2 else 1) for c in columns]
        table = np.concatenate([r.astype(np.float64) for r in rows], axis=1)  # (C', columns)
        order = np.lexsort([np.round(table[:, j], 4) for j in reversed(range(table.shape[1]))]
                           + [-np.round(rows[fields.index("scores")][:, 0].astype(np.float64), 5)])
        for name, column in zip(fields, columns):
            out[f"image{b}.{name}|tensor"] = column[b][keep][order]
    return out


def select_canonical(flat: dict) -> dict:
    return _candidate_sets(flat, ("boxes", "scores", "labels"))


def top_canonical(flat: dict) -> dict:
    return _candidate_sets(flat, ("scores", "cells", "labels"))


def fcos_loss_inference_cases(seed: int) -> List[Case]:
    from fcos_from_scratch.models.anchors import grid_points
    from fcos_from_scratch.models.detectors.fcos import FCOSConfig
    from fcos_from_scratch.models.postprocess import MASKED

    cfg = FCOSConfig(num_classes=3)
    public = _rng(0, 9)
    loss_tol = dict(rtol=1e-4, atol=1e-5)
    cases = [Case("fcos_loss", _loss_inputs(public, 2, 12, 3, 0.3) + [cfg], grad=[0, 1, 2], **loss_tol)]
    sizes, strides = [(4, 4), (2, 2)], [8, 16]
    points = grid_points(sizes, strides, 0.5)

    def head(g, batch, classes, quantised=False):
        n = sum(h * w for h, w in sizes)
        cls = torch.randn(batch, n, classes, generator=g) * 2
        ctr = torch.randn(batch, n, generator=g)
        if quantised:  # three logit values, one centerness: many equal scores
            cls, ctr = cls.clamp(-1, 1).round(), torch.zeros(batch, n)
        return [cls, torch.rand(batch, n, 4, generator=g) * 3, ctr, points, strides]

    cases.append(Case("select_candidates", head(public, 1, 3), {"score_thresh": 0.3, "topk_candidates": 5},
                      canonical=select_canonical, rtol=1e-4, atol=1e-5))
    scores = torch.rand(2, 6, 3, generator=public)
    scores[scores < 0.4] = MASKED
    cases.append(Case("top_candidates", [scores, 4], canonical=top_canonical))
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [-5.0, 20.0, 40.0, 50.0],
                           [30.0, 30.0, 35.0, 36.0]]])
    cases.append(Case("postprocess_detections", [boxes, torch.tensor([[0.9, 0.8, 0.7, MASKED]]),
                                                 torch.tensor([[0, 0, 1, 1]]), [(32, 32)], [(64, 48)]],
                      {"nms_thresh": 0.5, "detections_per_img": 10}))

    g = _rng(seed, 9)
    variants = (dict(), dict(box_weighting="none", focal_alpha=0.4, focal_gamma=1.0),
                dict(cls_weight=0.5, box_weight=2.0, centerness_weight=1.5))
    for extra in variants:
        cases.append(Case("fcos_loss", _loss_inputs(g, 2, 20, 4, 0.3) + [FCOSConfig(num_classes=4, **extra)],
                          grad=[0, 1, 2], tier="hidden", family="random", **loss_tol))
    for family, fraction in (("no-positives", 0.0), ("all-positives", 1.1)):
        for extra in variants[:2]:
            cases.append(Case("fcos_loss", _loss_inputs(g, 2, 10, 3, fraction) + [FCOSConfig(num_classes=3, **extra)],
                              grad=[0, 1, 2], tier="hidden", family=family, **loss_tol))
    tol = dict(canonical=select_canonical, rtol=1e-4, atol=1e-5, tier="hidden")
    cases.append(Case("select_candidates", head(g, 2, 4), {"score_thresh": 0.2, "topk_candidates": 7},
                      family="random", **tol))
    cases.append(Case("select_candidates", head(g, 2, 4), {"score_thresh": 0.05, "topk_candidates": 1000},
                      family="random", **tol))
    for on in ("class", "score"):  # the same inputs, two meanings of the threshold
        cases.append(Case("select_candidates", head(g, 1, 3), {"score_thresh": 0.4, "score_thresh_on": on},
                          family="threshold-on", **tol))
    cases.append(Case("select_candidates", head(g, 2, 3), {"score_thresh": 0.1, "per_class_topk": 3},
                      family="per-class-topk", **tol))
    cases.append(Case("select_candidates", head(g, 2, 3, quantised=True), {"score_thresh": 0.2},
                      family="ties", **tol))  # every candidate kept: which tied one goes first is free
    scores = torch.rand(2, 9, 4, generator=g)
    scores[scores < 0.5] = MASKED
    cases.append(Case("top_candidates", [scores, 6], tier="hidden", family="random", canonical=top_canonical))
    cases.append(Case("top_candidates", [scores, 100, 2], tier="hidden", family="per-class-topk",
                      canonical=top_canonical))
    tied = torch.full((1, 5, 2), 0.5)
    tied[0, 2, 1] = MASKED
    cases.append(Case("top_candidates", [tied, 10], tier="hidden", family="ties", canonical=top_canonical))
    cases.append(Case("top_candidates", [torch.full((2, 3, 2), MASKED), 4], tier="hidden", family="no-candidates",
                      canonical=top_canonical))
    n = 12
    clustered = clustered_boxes(g, 2 * n, dtype=torch.float32).reshape(2, n, 4)
    post_scores = torch.rand(2, n, generator=g)
    post_scores[post_scores < 0.2] = MASKED
    post_labels = torch.randint(0, 3, (2, n), generator=g)
    cases.append(Case("postprocess_detections", [clustered, post_scores, post_labels, [(90, 100), (120, 80)],
                                                 [(180, 200), (60, 40)]], {"nms_thresh": 0.5, "detections_per_img": 100},
                      tier="hidden", family="random"))
    cases.append(Case("postprocess_detections", [clustered, post_scores, post_labels, [(90, 100), (120, 80)],
                                                 [(90, 100), (120, 80)]], {"nms_thresh": 0.3, "detections_per_img": 3},
                      tier="hidden", family="detections-per-img"))
    cases.append(Case("postprocess_detections", [clustered, torch.full((2, n), MASKED), post_labels,
                                                 [(90, 100)] * 2, [(90, 100)] * 2],
                      {"nms_thresh": 0.5, "detections_per_img": 10}, tier="hidden", family="no-candidates"))
    return cases


# ---------------------------------------------------------------------------
# The units
# ---------------------------------------------------------------------------

OPS = "fcos_from_scratch.ops"
FCOS = "fcos_from_scratch.models.detectors.fcos"

UNITS: Dict[str, Unit] = {}


def _add(unit: Unit) -> None:
    UNITS[unit.name] = unit


_add(Unit(
    "boxes_iou", "Box formats and the IoU family", "boxes_iou.py",
    (Item(f"{OPS}.boxes", "box_convert"), Item(f"{OPS}.boxes", "box_area"),
     Item(f"{OPS}.boxes", "box_iou", hide=("box_iou_reference", "pairwise_iou", "distance_box_iou", "complete_box_iou")),
     Item(f"{OPS}.boxes", "generalized_box_iou", hide=("generalized_box_iou_reference",))),
    {"box_convert": 2, "box_area": 1, "box_iou": 3, "generalized_box_iou": 3},
    boxes_iou_cases,
    walkthrough=(
        "Boxes are xyxy, float, continuous pixels: width = x2 - x1, no +1 (docs/CONVENTIONS.md).\n"
        "1. `box_convert` maps between xyxy, xywh and cxcywh; write the two maps to and from xyxy.\n"
        "2. `box_area` is width x height; an inverted box is empty (area 0).\n"
        "3. `box_iou`: broadcast (N, 1, 2) corners against (1, M, 2) to get the (N, M) intersection;\n"
        "   IoU is 0, not NaN, where the union is 0 (two zero-area boxes).\n"
        "4. `generalized_box_iou` ([giou]) subtracts (enclosing - union) / enclosing.\n"
        "Hidden families: random, zero-area, empty, float32, formats.\n")))

_add(Unit(
    "nms", "Non-maximum suppression: greedy, per category, and Soft-NMS", "nms.py",
    (Item(f"{OPS}.nms", "nms", source="nms_reference"),
     Item(f"{OPS}.nms", "batched_nms", source="batched_nms_reference"),
     Item(f"{OPS}.soft_nms", "soft_nms", source="soft_nms_reference", hide=("batched_soft_nms",))),
    {"nms": 4, "batched_nms": 3, "soft_nms": 3},
    nms_cases,
    allowed=("from fcos_from_scratch.ops import box_iou",),
    walkthrough=(
        "1. `nms`: visit boxes by decreasing score (ties: lower index first -- a stable sort),\n"
        "   keep the best box not yet suppressed, suppress every box with IoU > threshold\n"
        "   (strict: IoU exactly at the threshold survives).\n"
        "2. `batched_nms`: boxes of different categories never suppress each other.\n"
        "3. `soft_nms` ([soft-nms] Alg. 1): decay instead of removing (linear, gaussian, hard).\n"
        "Hidden families: random, ties, exact-threshold, empty, linear, gaussian, hard.\n")))

_add(Unit(
    "focal_loss", "Focal loss and the prior bias", "focal_loss.py",
    (Item(f"{OPS}.losses", "sigmoid_focal_loss"), Item("fcos_from_scratch.models.heads", "prior_bias")),
    {"sigmoid_focal_loss": 4, "prior_bias": 1},
    focal_cases,
    walkthrough=(
        "1. `sigmoid_focal_loss` ([focal] Eq. (5)): FL = -alpha_t (1 - p_t)^gamma log(p_t); take the\n"
        "   log from `F.binary_cross_entropy_with_logits` so extreme logits stay finite.\n"
        "   Gradients are graded too (hidden).\n"
        "2. `prior_bias` ([focal] Sec. 3.3): the bias b with sigmoid(b) = pi.\n"
        "Hidden families: reductions, extreme-logits, empty, random.\n")))

_add(Unit(
    "map", "VOC and COCO average precision", "ap.py",
    (Item("fcos_from_scratch.evaluation.voc", "voc_ap"), Item("fcos_from_scratch.evaluation.coco", "average_precision")),
    {"voc_ap": 3, "average_precision": 3},
    map_cases,
    walkthrough=(
        "1. `voc_ap` ([voc]): the 11-point (VOC2007) or all-point area under the precision\n"
        "   envelope max_{r' >= r} p(r').\n"
        "2. `average_precision` ([coco]): sort by score (stably), accumulate TP/FP, take the\n"
        "   101-point interpolated precision at recall 0, 0.01, ..., 1.\n"
        "Hidden families: random, ties, empty, perfect.\n")))

_add(Unit(
    "fcos_targets", "FCOS targets: points, LTRB coding, centerness, candidates, assignment", "fcos_targets.py",
    (Item(FCOS, "make_points"), Item(f"{OPS}.box_coders", "encode_ltrb"), Item(f"{OPS}.box_coders", "decode_ltrb"),
     Item(FCOS, "centerness_target"), Item(FCOS, "candidate_mask"), Item(FCOS, "assign_targets")),
    {"make_points": 1, "encode_ltrb": 1, "decode_ltrb": 1, "centerness_target": 1, "candidate_mask": 3,
     "assign_targets": 4},
    fcos_targets_cases,
    walkthrough=(
        "The hard part of FCOS ([fcos] Sec. 3.1-3.2, [fcos-imp] Sec. 2); credit is given step by step.\n"
        "1. `make_points`: ((col + offset) * stride, (row + offset) * stride), row-major.\n"
        "2. `encode_ltrb` / `decode_ltrb`: distances to the box sides in strides, and back.\n"
        "3. `centerness_target` ([fcos] Eq. (3)); 0 where a distance pair is (0, 0).\n"
        "4. `candidate_mask`: inside the box, inside the centre region, max distance in [low, high).\n"
        "5. `assign_targets`: among candidates the smallest box wins (ties: lower index);\n"
        "   padded rows (gt_valid False) never match.\n"
        "Hidden families: random, padded, zero-distances, ties, empty.\n")))

_add(Unit(
    "roi_align", "RoIAlign", "roi_align.py",
    (Item(f"{OPS}.roi_align", "roi_align", source="roi_align_reference"),),
    {"roi_align": 6},
    roi_align_cases,
    walkthrough=(
        "RoIAlign ([mask-rcnn]) exactly as torchvision's CPU kernel (docs/CONVENTIONS.md, roi_align):\n"
        "box edges x * spatial_scale - 0.5 * aligned; legacy RoIs clamped to size >= 1;\n"
        "grid = sampling_ratio if > 0 else ceil(roi_size / pooled); bilinear samples at bin\n"
        "centres of the sub-grid; samples beyond [-1, H] read 0; each bin is the mean.\n"
        "Start with a loop over RoIs and bins; vectorise once it passes.\n"
        "Hidden families: random, adaptive-grid, out-of-range, list-boxes, empty.\n")))

_add(Unit(
    "anchors_matching", "Anchors, box coding and matching", "anchors_matching.py",
    (Item("fcos_from_scratch.models.anchors", "AnchorGenerator"), Item(f"{OPS}.box_coders", "BoxCoder"),
     Item("fcos_from_scratch.models.matching", "Matcher")),
    {"AnchorGenerator": 3, "BoxCoder": 3, "Matcher": 4},
    anchors_matching_cases,
    allowed=("from fcos_from_scratch.models.anchors import grid_points",),
    walkthrough=(
        "1. `AnchorGenerator` ([faster-rcnn] Sec. 3.1.1): cell anchors of area S^2 and ratio h / w,\n"
        "   rounded half to even, shifted to every location (offset 0).\n"
        "2. `BoxCoder` ([rcnn]): (dx, dy, dw, dh) with weights, and decode clamping dw, dh.\n"
        "3. `Matcher` ([faster-rcnn] Sec. 3.1.2): two thresholds, and the low-quality matches\n"
        "   that give every ground truth its best predictions (ties included).\n"
        "Hidden families: thresholds (qualities exactly at both), ties, random, empty.\n")))

_add(Unit(
    "fpn_head", "The feature pyramid and the FCOS head", "fpn_head.py",
    (Item("fcos_from_scratch.models.fpn", "FPN"), Item(FCOS, "FCOSHead")),
    {"FPN": 4, "FCOSHead": 4},
    fpn_head_cases,
    allowed=("from fcos_from_scratch.models.fpn import EXTRA_SOURCES, GN_GROUPS, NORMS, conv_norm, extra_levels",
             "from fcos_from_scratch.models.detectors.fcos import MAX_EXP_INPUT, REG_ACTIVATIONS",
             "from fcos_from_scratch.models.heads import concat_levels, conv_tower, init_normal_, prior_bias"),
    walkthrough=(
        "Graded by loading the library module's state_dict (strict) into yours, built with the\n"
        "same arguments, and comparing forward outputs: use the library's attribute names\n"
        "(`lateral`, `output`, `extra`; `cls_tower`, `reg_tower`, `cls_logits`, `bbox_pred`,\n"
        "`centerness`, `scales`). A case whose keys differ scores 0 and says which keys.\n"
        "1. `FPN` ([fpn] Sec. 3): 1x1 laterals, a top-down pass that upsamples (nearest) to the\n"
        "   lateral's size and adds, a 3x3 output conv per level; the extra-level rule\n"
        "   ([fcos] Sec. 3.2 \"p5\", [focal] \"c5\", \"maxpool\", \"none\"); norm None or \"gn\".\n"
        "2. `FCOSHead` ([fcos] Fig. 2): two towers, class logits on one, box and centerness on the\n"
        "   other; a learnable scale per level (or none); relu or exp; levels concatenated.\n"
        "Hidden families: extra-source, norm-gn, levels, head-convs, level-scales-off, exp, random.\n")))

_add(Unit(
    "fcos_loss_inference", "The FCOS loss and inference", "fcos_loss_inference.py",
    (Item(FCOS, "fcos_loss"), Item(FCOS, "select_candidates"),
     Item("fcos_from_scratch.models.postprocess", "top_candidates"),
     Item("fcos_from_scratch.models.postprocess", "postprocess_detections")),
    {"fcos_loss": 5, "select_candidates": 4, "top_candidates": 2, "postprocess_detections": 2},
    fcos_loss_inference_cases,
    allowed=("from fcos_from_scratch.models.detectors.fcos import SCORE_THRESH_ON, FCOSConfig",
             "from fcos_from_scratch.models.matching import BACKGROUND",
             "from fcos_from_scratch.models.postprocess import MASKED",
             "from fcos_from_scratch.ops import batched_nms, clip_boxes_to_image, generalized_box_iou_loss, "
             "sigmoid_focal_loss",
             "from fcos_from_scratch.ops.box_coders import decode_ltrb, ltrb_to_local_box"),
    walkthrough=(
        "1. `fcos_loss` ([fcos] Eq. (2)): focal loss over every (point, class) / N_pos, GIoU\n"
        "   ([giou]) on positives weighted by the centerness target / its sum (or / N_pos with\n"
        "   box_weighting=\"none\"), centerness BCE / N_pos; N_pos at least 1. Gradients are graded;\n"
        "   a batch with no positive must stay finite and differentiable.\n"
        "2. `top_candidates`: the best k (cell, class) pairs of a level, or k cells per class.\n"
        "3. `select_candidates` ([fcos] Sec. 4.1): threshold sigmoid(cls) (or the score), score\n"
        "   sqrt(cls x ctr), top-k per level, decode. Candidates are graded as a set per image\n"
        "   (the order among equal scores is free; MASKED rows are ignored).\n"
        "4. `postprocess_detections`: clip, class-aware NMS, keep the best, rescale.\n"
        "Hidden families: random, no-positives, all-positives, threshold-on, per-class-topk, ties,\n"
        "no-candidates, detections-per-img.\n")))


# ---------------------------------------------------------------------------
# training: the student's FCOS parts inside the library's FCOS, graded on test AP50
# ---------------------------------------------------------------------------

# The graded run: 10 epochs of 100 steps (batch 8) on 800 small images, one CPU thread;
# the library's parts reach test AP50 0.47 (measured in assignments/README.md).
TRAINING_RUN = dict(epochs=10, num_train=800, num_test=100, min_side=64, max_side=128, max_digits=2,
                    digit_low=16, digit_high=48, fpn_channels=32, head_convs=1, batch_size=8, lr=4e-3)
# A few seconds: the same path, for the default test run (its AP50 means nothing).
TINY_TRAINING_RUN = dict(TRAINING_RUN, epochs=1, num_train=8, num_test=4, batch_size=4)
# (minimum test AP50, fraction of the points), best first; stated in the walkthrough.
AP50_THRESHOLDS = ((0.40, 1.0), (0.30, 0.75), (0.20, 0.5), (0.10, 0.25))


def digits_test_split(seed: int, run: dict):
    """The test images (uint8, H x W x 3) and their ground truth, drawn from the grading seed."""
    import tempfile

    from fcos_from_scratch.data import DigitsConfig, build_dataset

    config = DigitsConfig(num_train=0, num_val=0, num_test=run["num_test"], seed=1 + int(seed) % 100_000,
                          min_side=run["min_side"], max_side=run["max_side"], max_digits=run["max_digits"],
                          digit_height=(run["digit_low"], run["digit_high"]))
    images, targets = [], []
    with tempfile.TemporaryDirectory(prefix="training_unit_test_") as root:
        dataset = build_dataset("digits", "test", root=root, config=config)
        for index in range(len(dataset)):
            image, target = dataset[index]  # (3, H, W) in [0, 1], exactly k / 255
            images.append((image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous())  # (H, W, 3)
            targets.append({"boxes": target["boxes"], "labels": target["labels"]})
    return images, targets


def training_cases(seed: int, run: dict = TRAINING_RUN) -> List[Case]:
    """One run; the seed draws the test images (labels kept here) and the model's initialisation."""
    images, targets = digits_test_split(seed, run)
    return [Case("train_and_evaluate", [images], dict(run, seed=int(seed) % 100_000), family="digits",
                 label="AP50", reference=targets)]


def training_metrics(case: Case, flat: Optional[dict]) -> Optional[dict]:
    """AP50 and AP of the child's detections against the parent's ground truth (None: unusable)."""
    from fcos_from_scratch.engine.loop import flatten_metrics
    from fcos_from_scratch.evaluation import DetectionEvaluator

    if flat is None:
        return None
    targets = case.reference
    try:
        if int(flat["out|len"]) != len(targets):
            return None
        preds = [{k: torch.from_numpy(np.array(flat[f"out[{i}].{k}|tensor"])) for k in ("boxes", "scores", "labels")}
                 for i in range(len(targets))]
        for p in preds:
            p["boxes"], p["scores"], p["labels"] = p["boxes"].float(), p["scores"].float(), p["labels"].long()
            if not (torch.isfinite(p["boxes"]).all() and torch.isfinite(p["scores"]).all()):
                return None
        evaluator = DetectionEvaluator(num_classes=10)
        evaluator.update(preds, targets)
        metrics = flatten_metrics(evaluator.compute())
    except (KeyError, ValueError, TypeError, RuntimeError):
        return None
    return {"AP50": max(0.0, metrics["AP50"]), "AP": max(0.0, metrics["AP"])}


def training_steps(case: Case) -> int:
    run = case.kwargs
    return run["epochs"] * math.ceil(run["num_train"] / run["batch_size"])


def training_judge(case: Case, flat: Optional[dict]):
    """(fraction of the points, message) from the test AP50 and the thresholds."""
    metrics = training_metrics(case, flat)
    if metrics is None:
        return 0.0, "no usable detections: the run failed (see below) or returned malformed output"
    ap50 = metrics["AP50"]
    fraction = next((f for low, f in AP50_THRESHOLDS if ap50 >= low), 0.0)
    return fraction, (f"test AP50 {ap50:.3f} (AP {metrics['AP']:.3f}) after {training_steps(case)} steps: "
                      f"{fraction:.0%} of the points")


def training_leaderboard(case: Case, flat: Optional[dict], seconds: float) -> list:
    """Gradescope's leaderboard entries; the seconds are the grader's own clock."""
    metrics = training_metrics(case, flat) or {"AP50": 0.0, "AP": 0.0}
    return [{"name": "AP50", "value": round(metrics["AP50"], 4), "order": "desc"},
            {"name": "AP", "value": round(metrics["AP"], 4), "order": "desc"},
            {"name": "steps", "value": training_steps(case)},
            {"name": "seconds", "value": round(float(seconds), 1), "order": "asc"}]


def training_unit(run: dict) -> "Unit":
    """The training unit with another run (tests use TINY_TRAINING_RUN)."""
    return dataclasses.replace(UNITS["training"], make_cases=lambda seed: training_cases(seed, run))


_add(Unit(
    "training", "Train your FCOS on digits", "training.py",
    (Item(FCOS, "FCOSHead"), Item(FCOS, "assign_targets"), Item(FCOS, "fcos_loss"), Item(FCOS, "select_candidates")),
    {"AP50": 20},
    training_cases,
    allowed=("from fcos_from_scratch.models.detectors.fcos import MAX_EXP_INPUT, REG_ACTIVATIONS, "
             "SCORE_THRESH_ON, FCOSConfig, FCOSTargets, candidate_mask, centerness_target",
             "from fcos_from_scratch.models.anchors import per_level_values",
             "from fcos_from_scratch.models.heads import concat_levels, conv_tower, init_normal_, prior_bias",
             "from fcos_from_scratch.models.matching import BACKGROUND",
             "from fcos_from_scratch.models.postprocess import MASKED, top_candidates",
             "from fcos_from_scratch.ops import box_area, generalized_box_iou_loss, sigmoid_focal_loss",
             "from fcos_from_scratch.ops.box_coders import decode_ltrb, encode_ltrb, ltrb_to_local_box"),
    timeout=900.0, case_seconds=840,
    drivers=(("train_and_evaluate", "training_run"),),
    driver_files=(str(Path(__file__).resolve().parent / "training_run.py"),),
    judge=training_judge, leaderboard=training_leaderboard,
    walkthrough=(
        "Paste your `FCOSHead` (fpn_head), `assign_targets` (fcos_targets), `fcos_loss` and\n"
        "`select_candidates` (fcos_loss_inference) into training.py. The grader builds the\n"
        "library's FCOS (tiny trunk, FPN, your head), trains it with your assignment and loss\n"
        "on the embedded digits data (800 images of 64-128 px, 10 epochs of 100 steps, batch 8,\n"
        "AdamW, one CPU thread: a few minutes) and runs your inference on 100 test images\n"
        "drawn from the grading seed; their labels stay with the grader, which computes AP50.\n"
        "Points (20) by test AP50 ([coco] IoU 0.5): >= 0.40 all, >= 0.30 75 %, >= 0.20 half,\n"
        ">= 0.10 a quarter, below that 0. The library's own parts reach about 0.47.\n"
        "Your AP50, AP, steps and seconds go to the leaderboard. One run takes a few minutes:\n"
        "pass the earlier units first.\n")))
