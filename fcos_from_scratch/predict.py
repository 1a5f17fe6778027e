"""Draw a trained detector's boxes on images.

    python -m fcos_from_scratch.predict --checkpoint runs/digits/best.pt img1.png img2.jpg \
        [--out predictions] [--score_threshold 0.3] [--device auto]

Each input ``name.ext`` is written as ``<out>/name_pred.png`` with one rectangle and
``label score`` caption per detection, and the detections are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .data import build_transforms
from .engine.evaluate import load_model
from .visualize.draw import draw_boxes

# Distinct colours (tab10) so neighbouring classes differ.


def read_image(path: Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]; FileNotFoundError/ValueError name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as pil:
            array = np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: torch.Tensor,
                  transform: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """Detections for one (3, H, W) image, boxes in the image's own pixel coordinates.

    Args:
        model: a detector in eval mode.
        image: (3, H, W) float in [0, 1].
        transform: the evaluation pipeline of the training data (a resize, or
            nothing); the model maps its boxes back through ``orig_size``.

    Returns:
        ``boxes`` (N, 4) xyxy pixels of ``image``, ``scores`` (N,), ``labels`` (N,).
    """
    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "orig_size": (height, width)}
    if transform is not None:
        image, target = transform(image, target)
    target["image_size"] = tuple(image.shape[-2:])
    out = model(image[None].to(device), [target])[0]
    return {"boxes": out["boxes"].float().cpu(), "scores": out["scores"].float().cpu(),
            "labels": out["labels"].cpu()}


def draw_detections(image: torch.Tensor, detections: Dict[str, torch.Tensor],
                    class_names: Sequence[str] = (), score_threshold: float = 0.3) -> Image.Image:
    """A PIL image with one rectangle and ``label score`` caption per kept detection."""
    return draw_boxes(image, detections["boxes"], detections["labels"], detections["scores"],
                      class_names, score_threshold=score_threshold)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fcos_from_scratch.predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="last.pt or best.pt from training")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", default="predictions", help="output folder")
    parser.add_argument("--score_threshold", "--score-threshold", type=float, default=0.3)
    parser.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    model, config, extra = load_model(args.checkpoint, args.device)
    names: List[str] = list(extra.get("class_names") or [])
    transform = build_transforms(config.dataset, train=False, min_size=config.min_size,
                                 max_size=config.max_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.images):
        image = read_image(path)
        detections = predict_image(model, image, transform)
        target = out / f"{path.stem}_pred.png"
        draw_detections(image, detections, names, args.score_threshold).save(target)
        kept = int((detections["scores"] >= args.score_threshold).sum())
        print(f"{path} -> {target} ({kept} detections with score >= {args.score_threshold})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
