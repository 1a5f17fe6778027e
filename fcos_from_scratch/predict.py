"""Draw a trained detector's boxes on images, print them, export them as COCO json.

    python -m fcos_from_scratch.predict --checkpoint runs/digits/best.pt img1.png img2.jpg \
        [--out predictions] [--score_threshold 0.3] [--json dets.json] [--device auto]

Each input ``name.ext`` is written as ``<out>/name_pred.png`` with one rectangle and
``label score`` caption per detection (two inputs with the same name get
``name_pred.png`` and ``name_2_pred.png``: no output overwrites another), and its
detections are printed, one line each. ``--json`` writes every kept detection as a
COCO results list (``image_id`` = position of the image on the command line, from
1; ``file_name``; ``bbox`` as xywh pixels; ``score``; ``category_id`` as in the
training data). An input that cannot be read is reported and skipped; the exit
status is then 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .command import ArgumentParser, UsageError, run_command
from .data import build_transforms
from .engine.evaluate import load_model
from .evaluation.io import detections_to_coco
from .visualize.draw import draw_boxes


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


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = ArgumentParser(prog="python -m fcos_from_scratch.predict",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="last.pt or best.pt from training")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", default="predictions", help="output folder for the drawn images")
    parser.add_argument("--score_threshold", "--score-threshold", type=float, default=0.3,
                        help="draw, print and export detections scoring at least this (0..1)")
    parser.add_argument("--json", metavar="PATH", default="", help="also write the detections as COCO json")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    args = parser.parse_args(argv)
    if not 0.0 <= args.score_threshold <= 1.0:
        raise UsageError(f"--score_threshold must be in [0, 1], got {args.score_threshold}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out={args.out!r} is a file, not a folder")
    if args.json and Path(args.json).is_dir():
        raise UsageError(f"--json={args.json!r} is a folder; give a file name, e.g. dets.json")
    return args


def output_names(paths: Sequence[Path], out: Path) -> List[Path]:
    """``<out>/<stem>_pred.png`` per input, made unique (``<stem>_2_pred.png``, ...)."""
    used, names = set(), []
    for path in paths:
        stem, n = path.stem, 1
        while f"{stem}{'' if n == 1 else f'_{n}'}_pred.png" in used:
            n += 1
        name = f"{stem}{'' if n == 1 else f'_{n}'}_pred.png"
        used.add(name)
        names.append(out / name)
    return names


def to_coco_results(detections: Dict[str, torch.Tensor], image_id: int, file_name: str,
                    category_ids: Sequence[int] = ()) -> List[dict]:
    """One image's detections as COCO result entries (``bbox`` = xywh pixels), with its file name.

    ``category_ids[label]`` is the COCO category of each label (the training data's);
    without it the label itself is written.
    """
    label_to_category = dict(enumerate(int(c) for c in category_ids)) if category_ids else None
    return [dict(entry, file_name=file_name)
            for entry in detections_to_coco([detections], [image_id], label_to_category)]


def _keep(detections: Dict[str, torch.Tensor], threshold: float) -> Dict[str, torch.Tensor]:
    kept = detections["scores"] >= threshold
    return {k: v[kept] for k, v in detections.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit status 0 when every image was processed, 1 when some could not be read,
    2 for a bad argument or checkpoint (one ``error:`` line each)."""
    return run_command(lambda: _predict(parse_args(argv)))


def _predict(args) -> int:
    model, config, extra = load_model(args.checkpoint, args.device)
    names: List[str] = list(extra.get("class_names") or [])
    transform = build_transforms(config.dataset, train=False, min_size=config.min_size,
                                 max_size=config.max_size, input_size=config.input_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in args.images]
    results, failed = [], []
    for image_id, (path, target) in enumerate(zip(paths, output_names(paths, out)), start=1):
        try:
            image = read_image(path)
        except (OSError, ValueError) as err:
            failed.append(str(path))
            print(f"error: {err}; skipped", file=sys.stderr)
            continue
        detections = _keep(predict_image(model, image, transform), args.score_threshold)
        draw_detections(image, detections, names, args.score_threshold).save(target)
        print(f"{path} -> {target} ({len(detections['scores'])} detections with score >= "
              f"{args.score_threshold})")
        for box, score, label in zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                     detections["labels"].tolist()):
            name = names[label] if 0 <= label < len(names) else str(label)
            print(f"  {name:>8s} {score:.3f}  x1={box[0]:.1f} y1={box[1]:.1f} x2={box[2]:.1f} y2={box[3]:.1f}")
        results += to_coco_results(detections, image_id, str(path), extra.get("category_ids") or ())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results) + "\n")
        print(f"wrote {len(results)} detections to {args.json}")
    if failed:
        print(f"error: {len(failed)} of {len(paths)} images could not be read: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
