"""Evaluate detections: ``python -m fcos_from_scratch.evaluate --gt GT.json --dets DETS.json``.

Or evaluate a trained model: ``--checkpoint runs/digits/best.pt [--dataset digits]
[--split test]`` rebuilds the model from the checkpoint's config and prints COCO and
VOC numbers on that split (default: the dataset and test split it was trained for).

Prints pycocotools' 12-line summary and a per-class AP table; ``--voc`` adds
PASCAL VOC numbers (all four devkit modes, computed from the same files:
crowd GT are treated as VOC "difficult"); ``--plots DIR`` writes the PR curves
and a TIDE-style error breakdown as PNGs. With ``--checkpoint``, ``--voc`` and
``--plots`` report on the model's detections and the split's ground truth.
All logic lives in :mod:`fcos_from_scratch.evaluation`; this module only parses
arguments. Errors are one ``error:`` line (exit 2: bad argument, 1: failure).
"""

import os
import sys

from .command import ArgumentParser, UsageError, run_command
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


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m fcos_from_scratch.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--gt", help="COCO ground-truth json")
    parser.add_argument("--dets", help="COCO results json (a list of detections, xywh boxes)")
    parser.add_argument("--voc", action="store_true", help="also print VOC mAP (07 / all-point, legacy / continuous)")
    parser.add_argument("--plots", metavar="DIR", help="write pr_curves.png and error_breakdown.png here")
    parser.add_argument("--checkpoint", help="a last.pt/best.pt written by the trainer")
    parser.add_argument("--dataset", choices=("digits", "digits_imbalanced", "voc", "coco"),
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
    """``--checkpoint``: run the model on a dataset split and print its metrics (and the
    ``--voc`` / ``--plots`` reports of its detections)."""
    from .engine.evaluate import checkpoint_detections  # the engine pulls in torch.utils.data
    from .train import format_metrics

    metrics, dataset, results = checkpoint_detections(args.checkpoint, args.dataset, args.split,
                                                      root=args.root, device=args.device)
    print(format_metrics(metrics))
    if args.voc or args.plots:
        if not callable(getattr(dataset, "coco_gt", None)):
            raise UsageError("--voc/--plots need a dataset with COCO ground truth (coco_gt())")
        print()
        report(dataset.coco_gt(), results, voc=args.voc, plots=args.plots, summary=False)
    return 0


def report(coco_gt: dict, coco_dets: list, voc: bool = False, plots: str = "", summary: bool = True) -> None:
    """The printed report of one set of detections: summary, per-class AP, VOC, plots."""
    result = evaluate_coco(coco_gt, coco_dets)
    if summary:
        print(format_summary(result.stats))
        print()
    print(format_per_class_table(result))
    if voc:
        print()
        print(voc_report(coco_gt, coco_dets))
    if plots:
        breakdown = tide_errors(coco_gt, coco_dets)
        print()
        print(format_error_breakdown(breakdown))
        for path in (plot_pr_curves(result, os.path.join(plots, "pr_curves.png")),
                     plot_error_breakdown(breakdown, os.path.join(plots, "error_breakdown.png"))):
            print(f"wrote {path}")


def check_args(args) -> None:
    """Every argument, before any file is read or model built (UsageError: exit 2)."""
    if args.checkpoint:
        if args.gt or args.dets:
            raise UsageError("--gt/--dets evaluate a results file; --checkpoint runs a model on a "
                             "dataset split: pass one or the other")
        if not os.path.isfile(args.checkpoint):
            raise UsageError(f"--checkpoint {args.checkpoint!r} is not a file")
    else:
        if args.dataset or args.split or args.root:
            raise UsageError("--dataset/--split/--root need --checkpoint")
        if not args.gt or not args.dets:
            raise UsageError("--gt and --dets are both required (or pass --checkpoint)")
        for flag, path in (("--gt", args.gt), ("--dets", args.dets)):
            if not os.path.isfile(path):
                raise UsageError(f"{flag} {path!r} is not a file")
    if args.plots and os.path.exists(args.plots) and not os.path.isdir(args.plots):
        raise UsageError(f"--plots {args.plots!r} is a file; give a folder")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _main(args))


def _main(args) -> int:
    check_args(args)
    if args.checkpoint:
        return evaluate_checkpoint_cli(args)
    coco_gt = load_coco_gt(args.gt)
    coco_dets = load_coco_results(args.dets)
    report(coco_gt, coco_dets, voc=args.voc, plots=args.plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
