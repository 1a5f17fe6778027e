"""The digit-sequence task of [digits-lab]: read each image's number, left to right.

Task 2 of [digits-lab]: keep the detections above a confidence threshold, sort
them by the x of their box centres, join their digits ("4071"); an image with no
detection reads as the empty number. The score is whole-number accuracy against
the image's true number. The threshold is searched on the validation split
([digits-lab]: 0.45 -> 0.90, step 0.01 implied by its chosen values), then applied
to the test split::

    python -m fcos_from_scratch.sequence --checkpoint runs/digits/best.pt --out runs/digits/sequence

Works for any detector checkpoint trained on ``digits``. Predictions are made
once per split (score >= 0.05) and re-filtered at every threshold, with no second
forward pass. At each threshold the COCO AP of the *thresholded* detections is
reported too, as [digits-lab] did (it lowers AP: the standard number is the
unthresholded one, also printed). Writes to ``--out``: ``pred.json`` (COCO results
on test, unthresholded), ``pred.csv`` (``image_id,pred_label``; -1 when nothing is
kept, the lab's convention), ``threshold_sweep.png`` and ``sweep.json``.

``--overlap_iou T`` (off by default, which is the lab's rule) adds one rule for
reading: the digits of a number never overlap (nor do the stray digits in this
dataset), so of two kept detections whose boxes overlap with IoU > T only the
higher-scoring one is read -- class-agnostic NMS. A detector's class-wise NMS
keeps a "3" and an "8" on the same glyph, and both would be read.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from .evaluation import coco_eval, detections_to_coco, save_coco_results
from .ops import nms

PREDICT_SCORE_THRESH = 0.05  # the stored predictions: everything a threshold could keep
DIGIT_CLASSES = tuple(range(10))  # labels 0..9 are the digits themselves
NO_NUMBER = -1  # pred.csv value of an image with no kept detection ([digits-lab])
DEFAULT_THRESHOLDS = (0.45, 0.90, 0.01)  # start, stop (inclusive), step ([digits-lab])


def threshold_grid(start: float = 0.45, stop: float = 0.90, step: float = 0.01) -> List[float]:
    """``start, start + step, ..., stop`` rounded to 1e-6, every value inside (0, 1).

    Raises:
        ValueError: naming ``thresholds`` when a bound is outside (0, 1), start > stop or step <= 0.
    """
    if not (0.0 < start < 1.0 and 0.0 < stop < 1.0):
        raise ValueError(f"thresholds must lie inside (0, 1), got start={start}, stop={stop}")
    if start > stop or not step > 0:
        raise ValueError(f"thresholds need start <= stop and step > 0, got {start}, {stop}, {step}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    return [round(start + i * step, 6) for i in range(count)]


def read_number(detection: Dict[str, torch.Tensor], threshold: float) -> str:
    """The digits with score >= ``threshold``, sorted by box centre x, joined ("" if none).

    Args:
        detection: ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,) digits 0..9.
    """
    keep = detection["scores"] >= threshold
    boxes, labels = detection["boxes"][keep], detection["labels"][keep]
    centres = (boxes[:, 0] + boxes[:, 2]) / 2  # (N,)
    order = torch.argsort(centres, stable=True)  # ties: the higher-scoring (earlier) first
    return "".join(str(int(label)) for label in labels[order])


def one_digit_per_place(detections: Sequence[Dict[str, torch.Tensor]], overlap_iou: float) -> List[Dict]:
    """Class-agnostic NMS: of boxes overlapping with IoU > ``overlap_iou``, the best-scoring stays.

    Applied to the stored (score >= 0.05) detections once; thresholding afterwards
    gives the same result as thresholding first (a suppressed box always scores
    below the box that suppressed it). ``overlap_iou`` = 0 returns them unchanged.
    """
    if not 0.0 <= overlap_iou < 1.0:
        raise ValueError(f"overlap_iou must be in [0, 1) (0 = off), got {overlap_iou}")
    if overlap_iou == 0.0:
        return list(detections)
    kept = []
    for d in detections:
        keep = nms(d["boxes"].float(), d["scores"].float(), overlap_iou)  # (K,) by decreasing score
        kept.append({k: v[keep] for k, v in d.items()})
    return kept


def number_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Fraction of images whose whole number is read exactly."""
    if len(predicted) != len(truth) or not truth:
        raise ValueError(f"need one prediction per image and at least one image, got "
                         f"{len(predicted)} predictions for {len(truth)} images")
    return sum(p == t for p, t in zip(predicted, truth)) / len(truth)


def thresholded(detections: Sequence[Dict[str, torch.Tensor]], threshold: float) -> List[Dict]:
    return [{k: v[d["scores"] >= threshold] for k, v in d.items()} for d in detections]


def sweep(detections, truth: Sequence[str], coco_gt: dict, image_ids: Sequence[int],
          thresholds: Sequence[float], label_to_category=None) -> List[Dict[str, float]]:
    """Accuracy and thresholded AP/AP50 at every threshold (no new forward pass)."""
    rows = []
    for threshold in thresholds:
        numbers = [read_number(d, threshold) for d in detections]
        kept = detections_to_coco(thresholded(detections, threshold), image_ids, label_to_category)
        stats = coco_eval(coco_gt, kept) if kept else {"AP": 0.0, "AP50": 0.0}
        rows.append({"threshold": threshold, "accuracy": number_accuracy(numbers, truth),
                     "AP": float(stats["AP"]), "AP50": float(stats["AP50"])})
    return rows


def best_threshold(rows: Sequence[Dict[str, float]]) -> float:
    """The threshold of the highest accuracy; ties go to the lowest threshold."""
    if not rows:
        raise ValueError("the threshold sweep is empty")
    best = max(row["accuracy"] for row in rows)
    return min(row["threshold"] for row in rows if row["accuracy"] == best)


@torch.no_grad()
def predict_split(model: torch.nn.Module, dataset, batch_size: int = 8,
                  score_thresh: float = PREDICT_SCORE_THRESH):
    """Detections (score >= ``score_thresh``), COCO image ids and true numbers of a split."""
    if len(dataset) == 0:
        raise ValueError(f"split {getattr(dataset, 'split', '?')!r} is empty: nothing to read")
    if not hasattr(dataset, "digit_string"):
        raise ValueError(f"dataset {type(dataset).__name__} has no true numbers: the sequence "
                         "task needs the digits dataset")
    model.eval()
    device = next(model.parameters()).device
    detections, image_ids, truth = [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = [image.to(device) for image, _ in items]
        for (_, target), output in zip(items, model(images)):
            keep = output["scores"] >= score_thresh
            detections.append({k: v[keep].cpu() for k, v in output.items()})
            image_ids.append(int(target["image_id"]))
        truth.extend(dataset.digit_string(i) for i in range(start, start + len(items)))
    return detections, image_ids, truth


def write_csv(path: Path, image_ids: Sequence[int], numbers: Sequence[str]) -> None:
    """``image_id,pred_label`` rows; -1 for an image with no kept digit."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "pred_label"])
        for image_id, number in zip(image_ids, numbers):
            writer.writerow([image_id, number if number else NO_NUMBER])


def plot_sweep(rows: Sequence[Dict[str, float]], chosen: float, path: Path) -> None:
    """Accuracy and thresholded AP against the threshold (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    thresholds = [row["threshold"] for row in rows]
    axis.plot(thresholds, [row["accuracy"] for row in rows], label="whole-number accuracy")
    axis.plot(thresholds, [row["AP"] for row in rows], label="AP (thresholded detections)")
    axis.plot(thresholds, [row["AP50"] for row in rows], label="AP50 (thresholded)", linestyle="--")
    axis.axvline(chosen, color="gray", linestyle=":", label=f"chosen {chosen:.2f}")
    axis.set_xlabel("confidence threshold")
    axis.set_ylim(0, 1)
    axis.legend(loc="lower left")
    axis.set_title("validation split")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def run_sequence_task(model, val_set, test_set, out: Path, thresholds: Sequence[float],
                      batch_size: int = 8, label_to_category=None, log=print,
                      overlap_iou: float = 0.0) -> Dict[str, float]:
    """Search the threshold on ``val_set``, apply it to ``test_set``, write the files.

    ``overlap_iou`` > 0 reads each number after :func:`one_digit_per_place` (the
    sweep's AP columns and ``pred.json`` too); 0 is the lab's rule.
    """
    out.mkdir(parents=True, exist_ok=True)
    val_dets, val_ids, val_truth = predict_split(model, val_set, batch_size)
    val_dets = one_digit_per_place(val_dets, overlap_iou)
    rows = sweep(val_dets, val_truth, val_set.coco_gt(), val_ids, thresholds, label_to_category)
    chosen = best_threshold(rows)
    test_dets, test_ids, test_truth = predict_split(model, test_set, batch_size)
    test_dets = one_digit_per_place(test_dets, overlap_iou)
    numbers = [read_number(d, chosen) for d in test_dets]
    results = detections_to_coco(test_dets, test_ids, label_to_category)
    save_coco_results(results, out / "pred.json")
    write_csv(out / "pred.csv", test_ids, numbers)
    plot_sweep(rows, chosen, out / "threshold_sweep.png")
    test_stats = coco_eval(test_set.coco_gt(), results) if results else {"AP": 0.0, "AP50": 0.0}
    summary = {"threshold": chosen, "overlap_iou": overlap_iou, "val_accuracy": max(r["accuracy"] for r in rows),
               "test_accuracy": number_accuracy(numbers, test_truth),
               "test_AP": float(test_stats["AP"]), "test_AP50": float(test_stats["AP50"])}
    (out / "sweep.json").write_text(json.dumps({"summary": summary, "val_sweep": rows}, indent=1))
    for row in rows:
        log(f"thr {row['threshold']:.2f}  acc {row['accuracy']:.4f}  AP {row['AP']:.4f}  AP50 {row['AP50']:.4f}")
    log(f"chosen threshold {chosen:.2f} (val accuracy {summary['val_accuracy']:.4f})")
    log(f"test: whole-number accuracy {summary['test_accuracy']:.4f}; unthresholded AP "
        f"{summary['test_AP']:.4f}, AP50 {summary['test_AP50']:.4f}")
    return summary


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fcos_from_scratch.sequence",
                                     description="Read digit sequences; search the threshold on val.")
    parser.add_argument("--checkpoint", required=True, help="best.pt/last.pt of a digits run")
    parser.add_argument("--out", default="", help="output folder (default: <checkpoint dir>/sequence)")
    parser.add_argument("--thresholds", default="0.45,0.90,0.01", help="start,stop,step inside (0, 1)")
    parser.add_argument("--data_root", default=None, help="dataset root (default: the run's)")
    parser.add_argument("--val_split", default="val")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overlap_iou", type=float, default=0.0,
                        help="read only the best of digits overlapping with IoU above this "
                             "(class-agnostic NMS; digits never overlap); 0 = off, the lab's rule")
    return parser.parse_args(argv)


def parse_thresholds(text: str) -> List[float]:
    parts = [p for p in str(text).split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise ValueError(f"--thresholds expects start,stop,step, got {text!r}")
    return threshold_grid(*values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .engine import builders
    from .engine.evaluate import load_model

    args = parse_args(argv)
    thresholds = parse_thresholds(args.thresholds)
    if not 0.0 <= args.overlap_iou < 1.0:
        raise ValueError(f"--overlap_iou must be in [0, 1) (0 = off), got {args.overlap_iou}")
    model, config, _ = load_model(args.checkpoint, args.device)
    if config.dataset not in ("digits", "digits_imbalanced"):
        raise ValueError(f"--checkpoint {args.checkpoint} was trained on {config.dataset!r}; the "
                         "sequence task needs a digits checkpoint")
    num_digits = len(DIGIT_CLASSES)
    if getattr(config.model, "num_classes", num_digits) != num_digits:
        raise ValueError(f"--checkpoint {args.checkpoint} has num_classes={config.model.num_classes}; "
                         f"the digits task has {num_digits} classes")
    if args.data_root is not None:
        config = config.replace(data_root=args.data_root)
    val_set = builders.build_split(config, args.val_split, train=False)
    test_set = builders.build_split(config, args.test_split, train=False)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "sequence"
    label_to_category = {label: cid for label, cid in enumerate(getattr(test_set, "category_ids", ()))} or None
    run_sequence_task(model, val_set, test_set, out, thresholds, args.batch_size, label_to_category,
                      overlap_iou=args.overlap_iou)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
