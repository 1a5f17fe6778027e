"""Evaluate detections: ``python -m fcos_from_scratch.evaluate --gt GT.json --dets DETS.json``.

Or evaluate a trained model: ``--checkpoint runs/digits/best.pt [--dataset digits]
[--split test]`` rebuilds the model from the checkpoint's config and prints COCO and
VOC numbers on that split (default: the dataset and test split it was trained for).

Prints pycocotools' 12-line summary and a per-class AP table; ``--voc`` adds
PASCAL VOC numbers (all four devkit modes, computed from the same files:
crowd GT are treated as VOC "difficult"); ``--plots DIR`` writes the PR curves
and a TIDE-style error breakdown as PNGs. All logic lives in
:mod:`fcos_from_scratch.evaluation`; this module only parses arguments.
"""

import argparse
import os
import sys

from .evaluation import coco_to_detections, evaluate_coco, load_coco_gt, load_coco_results, voc_eval
from .evaluation.parse import parse_coco_gt
from .evaluation.report import (
    format_error_breakdown,
    format_per_class_table,
    format_summary,
    plot_error_breakdown,
    plot_pr_curves,
)
from .evaluation.tide import tide_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fcos_from_scratch.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", help="COCO ground-truth json")
    parser.add_argument("--dets", help="COCO results json (a list of detections, xywh boxes)")
    parser.add_argument("--voc", action="store_true", help="also print VOC mAP (07 / all-point, legacy / continuous)")
    parser.add_argument("--plots", metavar="DIR", help="write pr_curves.png and error_breakdown.png here")
    parser.add_argument("--checkpoint", help="a last.pt/best.pt written by the trainer")
    parser.add_argument("--dataset", choices=("digits", "voc", "coco"),
                        help="with --checkpoint: dataset to evaluate on (default: the training one)")
    parser.add_argument("--split", help="with --checkpoint: split (default: the config's test_split)")
    parser.add_argument("--root", help="with --checkpoint: dataset root (default: the training one)")
    parser.add_argument("--device", default="auto", help="with --checkpoint: cpu, cuda, ... (default: auto)")
    return parser


def coco_to_voc_targets(coco_gt: dict) -> list:
    """Per-image VOC targets (xyxy, label = category id) from a COCO gt; crowd -> difficult."""
    gt = parse_coco_gt(coco_gt)
    boxes = gt.boxes.copy()
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    return [{"boxes": boxes[gt.image == i], "labels": gt.category_ids[gt.category[gt.image == i]],
             "difficult": gt.iscrowd[gt.image == i]} for i in range(len(gt.image_ids))]


def voc_report(coco_gt: dict, coco_dets: list) -> str:
    """VOC mAP in the four devkit modes, from COCO files."""
    image_ids = sorted(int(image["id"]) for image in coco_gt["images"])
    targets = coco_to_voc_targets(coco_gt)
    preds = [{k: v.numpy() for k, v in p.items()} for p in coco_to_detections(coco_dets, image_ids)]
    lines = ["PASCAL VOC mAP@0.5 (devkit rules)"]
    for use_07 in (True, False):
        for legacy in (True, False):
            result = voc_eval(targets, preds, 0.5, use_07_metric=use_07, legacy_pixel=legacy)
            lines.append(f"  {'11-point (VOC07)' if use_07 else 'all-point (VOC10+)':<20} "
                         f"{'legacy +1 pixels' if legacy else 'continuous':<17} mAP = {result['mAP']:.4f}")
    return "\n".join(lines)


def evaluate_checkpoint_cli(args) -> int:
    """``--checkpoint``: run the model on a dataset split and print its metrics."""
    from .engine.evaluate import evaluate_checkpoint  # the engine pulls in torch.utils.data
    from .train import format_metrics

    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"error: --checkpoint {args.checkpoint!r} is not a file")
    metrics = evaluate_checkpoint(args.checkpoint, args.dataset, args.split, root=args.root, device=args.device)
    print(format_metrics(metrics))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint:
        return evaluate_checkpoint_cli(args)
    if args.dataset or args.split or args.root:
        raise SystemExit("error: --dataset/--split/--root need --checkpoint")
    if not args.gt or not args.dets:
        raise SystemExit("error: --gt and --dets are both required")
    coco_gt = load_coco_gt(args.gt)
    coco_dets = load_coco_results(args.dets)
    result = evaluate_coco(coco_gt, coco_dets)
    print(format_summary(result.stats))
    print()
    print(format_per_class_table(result))
    if args.voc:
        print()
        print(voc_report(coco_gt, coco_dets))
    if args.plots:
        breakdown = tide_errors(coco_gt, coco_dets)
        print()
        print(format_error_breakdown(breakdown))
        for path in (plot_pr_curves(result, os.path.join(args.plots, "pr_curves.png")),
                     plot_error_breakdown(breakdown, os.path.join(args.plots, "error_breakdown.png"))):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
