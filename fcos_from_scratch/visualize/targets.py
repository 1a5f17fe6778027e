"""Draw what FCOS target assignment does to an image, as a PNG.

Left: the ground-truth boxes and, as dots, the points that each box received
(colour = box, dot size = pyramid level), with the number of points per level.
Right: the centerness target ([fcos] Eq. (3)) of every pixel with respect to the
smallest box that contains it, as a heat map (red = 1 at the centre, blue = 0 on
the border; as in [fcos-light] Fig. 6).

    python -m fcos_from_scratch.visualize.targets --out targets.png   # a demo image
    python -m fcos_from_scratch.visualize.targets --digits 3 --sizes 0,32,64,inf
"""

import argparse
import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..models.detectors.fcos import FCOS_SIZES_OF_INTEREST, assign_targets, make_points

MAX_HEAT_POINTS = 400  # the heat map uses at most this many points per side


def _assign(image_size, boxes, strides, sizes_of_interest, radius):
    """Targets for one image: FCOSTargets and the (N_l, 2) points of each level."""
    height, width = image_size
    points = make_points([(math.ceil(height / s), math.ceil(width / s)) for s in strides], strides)
    labels = torch.zeros(len(boxes), dtype=torch.int64)
    targets = assign_targets(points, strides, boxes[None].float(), labels[None],
                             torch.ones(1, len(boxes), dtype=torch.bool),
                             sizes_of_interest=sizes_of_interest, center_sampling_radius=radius)
    return targets, points


def centerness_map(image_size: Tuple[int, int], boxes: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Centerness target on a pixel grid (coarser for big images): ((H', W'), step)."""
    height, width = image_size
    step = max(1, math.ceil(max(height, width) / MAX_HEAT_POINTS))
    targets, _ = _assign(image_size, boxes, [step], (0.0, math.inf), 0.0)
    grid = (math.ceil(height / step), math.ceil(width / step))
    return targets.centerness[0].reshape(grid), step


def _draw_points(axis, matched: torch.Tensor, points, palette) -> list:
    """Scatter each level's positive points in their box's colour; returns 'P3: n' labels."""
    start, counts = 0, []
    for level, level_points in enumerate(points):
        level_matched = matched[start:start + len(level_points)]  # (N_l,)
        start += len(level_points)
        counts.append(f"P{level + 3}: {int((level_matched >= 0).sum())}")
        for index, colour in enumerate(palette):
            chosen = level_points[level_matched == index]
            axis.scatter(chosen[:, 0], chosen[:, 1], s=4 + 6 * level ** 2, c=colour,
                         edgecolors="black", linewidths=0.4)
    return counts


def plot_target_assignment(
    image: Optional[torch.Tensor],
    boxes: torch.Tensor,
    path,
    *,
    image_size: Optional[Tuple[int, int]] = None,
    strides: Sequence[int] = (8, 16, 32, 64, 128),
    sizes_of_interest: Sequence[float] = FCOS_SIZES_OF_INTEREST,
    center_sampling_radius: float = 1.5,
) -> Path:
    """Write the two-panel PNG described in the module docstring.

    Args:
        image: (3, H, W) float in [0, 1], or None for a grey canvas of ``image_size``.
        boxes: (M, 4) xyxy pixels.
        path: where to write the PNG (parent folders are created).
        image_size: (H, W), needed only when ``image`` is None.
        strides, sizes_of_interest, center_sampling_radius: as in ``assign_targets``.

    Returns:
        The path written.
    """
    if image is None and image_size is None:
        raise ValueError("give an image (3, H, W) or an image_size (H, W)")
    if image is not None and (image.dim() != 3 or image.shape[0] != 3):
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (M, 4), got {tuple(boxes.shape)}")
    height, width = image_size if image is None else tuple(image.shape[-2:])
    canvas = torch.full((height, width, 3), 0.5) if image is None else image.permute(1, 2, 0)
    targets, points = _assign((height, width), boxes, list(strides), sizes_of_interest,
                              center_sampling_radius)

    figure = Figure(figsize=(12, 6 * height / max(width, 1) + 0.8))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.imshow(canvas.clamp(0, 1).numpy(), extent=(0, width, height, 0))
    palette = [f"C{i % 10}" for i in range(len(boxes))]
    counts = _draw_points(left, targets.matched_idxs[0], points, palette)
    for index, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        for axis in (left, right):
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                     edgecolor=palette[index] if axis is left else "white", linewidth=1.5))
    left.set_title("points per box (dot size = level)\n" + ", ".join(counts), fontsize=9)
    heat, _ = centerness_map((height, width), boxes)
    shown = right.imshow(heat.numpy(), cmap="jet", vmin=0, vmax=1, extent=(0, width, height, 0))
    figure.colorbar(shown, ax=right, fraction=0.046)
    right.set_title("centerness target, [fcos] Eq. (3)", fontsize=9)
    for axis in (left, right):
        axis.set_xlim(0, width)
        axis.set_ylim(height, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Draw FCOS target assignment as a PNG.")
    parser.add_argument("--out", default="fcos_targets.png")
    parser.add_argument("--digits", type=int, default=-1,
                        help="index of a digits train image (default: a synthetic demo)")
    parser.add_argument("--sizes", default="",
                        help="sizes of interest, e.g. 0,32,64,inf (P3..P5); default [fcos]'s")
    args = parser.parse_args(argv)
    sizes = tuple(float(v) for v in args.sizes.split(",")) if args.sizes else FCOS_SIZES_OF_INTEREST
    strides = [8 * 2 ** level for level in range(len(sizes) - 1)]
    if args.digits >= 0:
        from ..data import build_dataset

        image, target = build_dataset("digits", "train", train=False)[args.digits]
        path = plot_target_assignment(image, target["boxes"], args.out, strides=strides,
                                      sizes_of_interest=sizes)
    else:
        boxes = torch.tensor([[40.0, 60, 200, 300], [90, 120, 150, 200], [260, 40, 500, 220],
                              [300, 300, 330, 330]])
        path = plot_target_assignment(None, boxes, args.out, image_size=(384, 512), strides=strides,
                                      sizes_of_interest=sizes)
    print(path)


if __name__ == "__main__":
    main()
