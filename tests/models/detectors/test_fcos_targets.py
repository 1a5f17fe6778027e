"""FCOS points, box coding, centerness and target assignment (models/detectors/fcos.py)."""

import math
import os

import pytest
import torch

from fcos_from_scratch.models.detectors.fcos import assign_targets, centerness_target, make_points
from fcos_from_scratch.models.images import pad_ground_truth
from fcos_from_scratch.models.matching import BACKGROUND
from fcos_from_scratch.ops.box_coders import decode_ltrb, encode_ltrb
from conftest import FIXTURES

FIXTURE = os.path.join(FIXTURES, "fcos_loss_refs.pt")


def assign_one(boxes, strides, feature_sizes, sizes_of_interest, radius, labels=None):
    """Assign targets for a single image; returns (targets, points per level)."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.arange(len(boxes)) if labels is None else torch.tensor(labels)
    gt_boxes, gt_labels, valid = pad_ground_truth([{"boxes": boxes, "labels": labels}])
    points = make_points(feature_sizes, strides)
    targets = assign_targets(points, strides, gt_boxes, gt_labels, valid,
                             sizes_of_interest=sizes_of_interest, center_sampling_radius=radius)
    return targets, points


def positives_at(targets, points, level_slice):
    """Sorted (x, y, matched) triples of the positive points in a slice of N."""
    matched = targets.matched_idxs[0, level_slice]
    pts = points[level_slice][matched >= 0]
    return sorted((float(x), float(y), int(m)) for (x, y), m in zip(pts, matched[matched >= 0]))


# --- points ------------------------------------------------------------------

def test_points_are_cell_centres_row_major():
    (p3, p4) = make_points([(2, 3), (1, 2)], [8, 16])
    # (i + 0.5) * s: x = 4, 12, 20 on row y = 4, then row y = 12.
    assert p3.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert p4.tolist() == [[8, 8], [24, 8]]
    # The FCOS code's floor(s / 2) + i * s is the same for even strides.
    for stride in (8, 16, 32, 64, 128):
        (points,) = make_points([(1, 5)], [stride])
        assert points[:, 0].tolist() == [stride // 2 + i * stride for i in range(5)]


def test_points_order_matches_feature_flatten():
    feature = torch.arange(12.0).reshape(1, 1, 3, 4)  # value = row * 4 + col
    (points,) = make_points([(3, 4)], [8])
    flat = feature.flatten(2)[0, 0]  # (12,)
    cols, rows = (points[:, 0] / 8 - 0.5), (points[:, 1] / 8 - 0.5)
    assert torch.equal(flat, rows * 4 + cols)


def test_make_points_rejects_mismatched_levels():
    with pytest.raises(ValueError, match="strides"):
        make_points([(2, 2)], [8, 16])


# --- box coding and centerness -------------------------------------------------

def test_encode_decode_are_inverse():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(7, 2, generator=generator) * 100
    strides = torch.tensor([8.0, 8, 16, 16, 32, 64, 128])
    boxes = torch.rand(3, 7, 4, generator=generator) * 200
    ltrb = encode_ltrb(points, boxes, strides)
    assert torch.allclose(decode_ltrb(points, ltrb, strides), boxes, atol=1e-4)
    # Hand value: point (10, 20), box (4, 8, 30, 26), stride 2 -> (6, 12, 20, 6) / 2.
    one = encode_ltrb(torch.tensor([[10.0, 20.0]]), torch.tensor([[4.0, 8, 30, 26]]), torch.tensor([2.0]))
    assert one.tolist() == [[3.0, 6.0, 10.0, 3.0]]


def test_centerness_hand_values():
    ltrb = torch.tensor([[5.0, 5, 5, 5], [1, 2, 3, 2], [0, 1, 4, 1], [2, 1, 1, 4]])
    expected = [1.0, math.sqrt(1 / 3), 0.0, math.sqrt(0.5 * 0.25)]  # [fcos] Eq. (3)
    assert torch.allclose(centerness_target(ltrb), torch.tensor(expected))


# --- assignment: hand-computed cases -------------------------------------------

def test_point_inside_two_boxes_goes_to_the_smaller():
    # One level, stride 8, 4 x 4 points at 4, 12, 20, 28; no size limit, no centre sampling.
    big, small = [0, 0, 32, 32], [8, 8, 24, 24]  # areas 1024 and 256
    targets, points = assign_one([big, small], [8], [(4, 4)], (0, math.inf), 0)
    grid = targets.matched_idxs[0].reshape(4, 4)
    # Points (12, 12), (20, 12), (12, 20), (20, 20) lie in both boxes -> small (1).
    assert grid.tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    # The regression target is the small box: point (12, 12) -> (4, 4, 12, 12) / 8.
    assert targets.ltrb[0, 5].tolist() == [0.5, 0.5, 1.5, 1.5]
    assert targets.labels[0, 5] == 1 and targets.labels[0, 0] == 0


def test_equal_areas_go_to_the_lower_index():
    box = [0, 0, 16, 16]
    targets, _ = assign_one([box, [8, 0, 24, 16]], [8], [(2, 3)], (0, math.inf), 0)
    # Point (12, 4) is inside both boxes (equal areas): index 0 wins.
    assert targets.matched_idxs[0, 1] == 0 and targets.matched_idxs[0, 2] == 1


def test_box_crossing_a_level_boundary():
    # Box 104 x 16; P3 (stride 8, points at 4 + 8i) keeps 0 <= max(l,t,r,b) < 64, P4
    # (stride 16, points at 8 + 16j) keeps max >= 64. For a point (x, y) inside the box
    # max(l, t, r, b) = max(x, 104 - x).
    targets, points = assign_one([[0, 0, 104, 16]], [8, 16], [(2, 13), (1, 6)], (0, 64, math.inf), 0)
    points = torch.cat(points)
    # P3: max < 64 only for x = 44 (60), 52 (52), 60 (60); x = 36, 68 give 68.
    p3 = positives_at(targets, points, slice(0, 26))
    assert p3 == sorted((x, y, 0) for x in (44.0, 52.0, 60.0) for y in (4.0, 12.0))
    # P4: x = 8 (96), 24 (80), 40 (64: lower bound inclusive), 72 (72), 88 (88);
    # x = 56 gives 56 < 64, and x = 104 is on the border (not strictly inside).
    p4 = positives_at(targets, points, slice(26, 32))
    assert [p[0] for p in p4] == [8.0, 24.0, 40.0, 72.0, 88.0]


def test_edge_of_centre_sampling_region():
    # Radius 1.5 strides = 12 px around the box centre; the comparison is strict.
    # Box centre (16, 16): points 4 and 28 are exactly 12 away -> negative.
    targets, _ = assign_one([[0, 0, 32, 32]], [8], [(4, 4)], (0, math.inf), 1.5)
    inner = [[-1, -1, -1, -1], [-1, 0, 0, -1], [-1, 0, 0, -1], [-1, -1, -1, -1]]
    assert targets.matched_idxs[0].reshape(4, 4).tolist() == inner
    # Shift the box by 0.1: centre 16.1, point 28 is 11.9 away (in), point 4 is 12.1 (out).
    targets, _ = assign_one([[0.1, 0.1, 32.1, 32.1]], [8], [(4, 4)], (0, math.inf), 1.5)
    shifted = [[-1, -1, -1, -1], [-1, 0, 0, 0], [-1, 0, 0, 0], [-1, 0, 0, 0]]
    assert targets.matched_idxs[0].reshape(4, 4).tolist() == shifted
    # A point must also be inside the box: a flat box 32 x 4 keeps only its row.
    targets, _ = assign_one([[0, 2, 32, 6]], [8], [(2, 4)], (0, math.inf), 1.5)
    assert targets.matched_idxs[0].tolist() == [-1, 0, 0, -1, -1, -1, -1, -1]


def test_image_without_boxes_is_all_background():
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    one = {"boxes": torch.tensor([[0.0, 0, 32, 32]]), "labels": torch.tensor([2])}
    gt_boxes, gt_labels, valid = pad_ground_truth([empty, one, empty])
    assert gt_boxes.shape == (3, 1, 4) and valid.tolist() == [[False], [True], [False]]
    targets = assign_targets(make_points([(4, 4)], [8]), [8], gt_boxes, gt_labels, valid,
                             sizes_of_interest=(0, math.inf))
    for index in (0, 2):
        assert (targets.labels[index] == BACKGROUND).all()
        assert (targets.matched_idxs[index] == BACKGROUND).all()
        assert (targets.centerness[index] == 0).all() and (targets.ltrb[index] == 0).all()
    assert (targets.labels[1] == 2).sum() == 4  # the centre 2 x 2 points (radius 1.5)


# --- assignment: properties and reference values -------------------------------

def random_targets(generator, batch, max_boxes, size=256.0):
    targets = []
    for _ in range(batch):
        count = int(torch.randint(0, max_boxes + 1, (1,), generator=generator))
        xy = torch.rand(count, 2, generator=generator) * size * 0.7
        wh = torch.rand(count, 2, generator=generator) * size * 0.5 + 4
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
        labels = torch.randint(0, 5, (count,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def test_batched_equals_per_image():
    generator = torch.Generator().manual_seed(1)
    targets = random_targets(generator, 4, 6)
    strides = [8, 16, 32, 64, 128]
    points = make_points([(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)], strides)
    batched = assign_targets(points, strides, *pad_ground_truth(targets))
    for index, target in enumerate(targets):
        single = assign_targets(points, strides, *pad_ground_truth([target]))
        for name in batched._fields:
            assert torch.equal(getattr(batched, name)[index], getattr(single, name)[0]), name


def test_assignment_matches_torchvision():
    """Frozen torchvision matching (tests/reference/make_fcos_loss_refs.py)."""
    ref = torch.load(FIXTURE, weights_only=True)
    size = ref["image_size"]
    points = make_points([(size // s, size // s) for s in ref["strides"]], ref["strides"])
    targets = [{"boxes": b, "labels": l} for b, l in zip(ref["boxes"], ref["labels"])]
    assigned = assign_targets(points, ref["strides"], *pad_ground_truth(targets))
    assert torch.equal(assigned.matched_idxs, ref["matched_idxs"])
    positive = assigned.matched_idxs >= 0
    assert torch.allclose(assigned.centerness[positive], ref["centerness_per_positive"], atol=1e-6)


def test_positive_targets_are_consistent():
    generator = torch.Generator().manual_seed(2)
    targets = random_targets(generator, 3, 8)
    strides = [8, 16, 32]
    points = make_points([(32, 32), (16, 16), (8, 8)], strides)
    out = assign_targets(points, strides, *pad_ground_truth(targets),
                         sizes_of_interest=(0, 32, 64, math.inf))
    positive = out.labels >= 0
    assert (out.ltrb[positive] > 0).all()  # strictly inside the box
    assert ((out.centerness[positive] > 0) & (out.centerness[positive] <= 1)).all()
    point_strides = torch.tensor([8.0] * 1024 + [16.0] * 256 + [32.0] * 64)
    decoded = decode_ltrb(torch.cat(points), out.ltrb, point_strides)
    assert torch.allclose(decoded[positive], out.boxes[positive], atol=1e-4)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="labels"):
        pad_ground_truth([{"boxes": torch.zeros(1, 4)}])
    with pytest.raises(ValueError, match="boxes"):
        pad_ground_truth([{"boxes": torch.zeros(4), "labels": torch.zeros(1, dtype=torch.int64)}])
    points = make_points([(2, 2)], [8])
    gt = pad_ground_truth([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="sizes_of_interest"):
        assign_targets(points, [8], *gt, sizes_of_interest=(0, 64, math.inf))
    with pytest.raises(ValueError, match="increase"):
        assign_targets(points, [8], *gt, sizes_of_interest=(64, 0))


# --- visualiser ------------------------------------------------------------------

def test_visualiser_writes_png_and_centerness_map(tmp_path):
    from PIL import Image

    from fcos_from_scratch.visualize.targets import centerness_map, plot_target_assignment

    boxes = torch.tensor([[8.0, 8, 40, 24], [50, 30, 60, 60]])
    heat, step = centerness_map((64, 80), boxes)
    assert step == 1 and heat.shape == (64, 80)
    # Pixel (row 16, col 24) has centre (24.5, 16.5): l, t, r, b = 16.5, 8.5, 15.5, 7.5.
    assert torch.isclose(heat[16, 24], torch.tensor(math.sqrt(15.5 / 16.5 * 7.5 / 8.5)))
    assert heat[0, 0] == 0 and heat[63, 79] == 0  # outside every box
    path = plot_target_assignment(torch.rand(3, 64, 80), boxes, tmp_path / "a" / "targets.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] > 200
    with pytest.raises(ValueError, match="image_size"):
        plot_target_assignment(None, boxes, tmp_path / "b.png")
