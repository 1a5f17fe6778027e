"""Draw a grid of (augmented) samples with their boxes and labels into a PNG.

    python -m fcos_from_scratch.data.show --dataset digits --out docs/images/digits_grid.png

Each cell is one training item exactly as the model would get it (after the
dataset's default training transforms, unless ``--no-augment``), with every box
drawn and its class name written above it; the cell title is the image id and,
for digits, the left-to-right number.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from PIL import Image

from ..visualize.draw import draw_boxes
from .registry import DATASETS, build_dataset

def draw_sample(image: torch.Tensor, target: dict, class_names: Sequence[str], title: str = "") -> Image.Image:
    """One (3, H, W) [0, 1] image with its boxes and labels drawn on it."""
    return draw_boxes(image, target["boxes"], target["labels"], class_names=class_names, title=title)


def make_grid(cells: List[Image.Image], columns: int, cell_size: int = 256, gap: int = 4) -> Image.Image:
    """Tile images (each fitted into ``cell_size`` squares) into one picture."""
    rows = (len(cells) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (cell_size + gap) + gap, rows * (cell_size + gap) + gap), (40, 40, 40))
    for i, cell in enumerate(cells):
        scale = cell_size / max(cell.size)
        fitted = cell.resize((max(1, round(cell.width * scale)), max(1, round(cell.height * scale))),
                             Image.BILINEAR)
        grid.paste(fitted, (gap + (i % columns) * (cell_size + gap), gap + (i // columns) * (cell_size + gap)))
    return grid


def show(dataset_name: str, out: Path, split: str = "train", root: Optional[str] = None, count: int = 12,
         columns: int = 4, augment: bool = True, seed: int = 0) -> Path:
    """Write a grid of ``count`` samples of ``dataset_name`` to ``out``; return the path."""
    random.seed(seed)
    dataset = build_dataset(dataset_name, split, root, train=True, augment=augment)
    if augment:  # show augmentation at work: each step fires with probability >= 0.5 here
        for step in dataset.transforms.augment.transforms:
            step.p = max(step.p, 0.5)
    cells = []
    for index in range(min(count, len(dataset))):
        image, target = dataset[index]
        title = f"id {target['image_id']}"
        if hasattr(dataset, "digit_string"):
            title += f"  '{dataset.digit_string(index)}'"
        cells.append(draw_sample(image, target, dataset.class_names, title))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(cells, columns).save(out, optimize=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--split", default="train")
    parser.add_argument("--root", default=None, help="data folder (default: $FCOS_DATA_ROOT or ~/.cache/fcos_from_scratch)")
    parser.add_argument("--out", default=None, help="PNG path (default: <dataset>_grid.png)")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="show the images as stored")
    args = parser.parse_args(argv)
    out = show(args.dataset, Path(args.out or f"{args.dataset}_grid.png"), args.split, args.root,
               args.count, args.columns, not args.no_augment, args.seed)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
