"""Reports for humans: the 12-line COCO summary, a per-class table, PR curves, errors.

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas directly
(no ``pyplot``), so nothing here touches the user's global backend and it runs
on machines without a display.
"""

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .coco import AREA_RANGES, IOU_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS, STAT_DEFINITIONS, CocoEvaluation
from .tide import ERROR_TYPES, TideBreakdown

_LINE = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"


def format_summary(stats: dict) -> str:
    """The 12 lines ``COCOeval.summarize`` prints, character for character.

    Args:
        stats: the dict returned by :func:`coco_eval` (or ``CocoEvaluation.stats``).
    """
    lines = []
    for key, is_ap, iou_thr, area, max_det in STAT_DEFINITIONS:
        title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
        iou = (f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if iou_thr is None
               else f"{iou_thr:0.2f}")
        lines.append(_LINE.format(title, kind, iou, area, max_det, stats[key]))
    return "\n".join(lines)


def _class_ap(result: CocoEvaluation, k: int, t=None) -> float:
    values = result.precision[:, :, k, 0, -1] if t is None else result.precision[t, :, k, 0, -1]
    present = values[values > -1]
    return float(present.mean()) if present.size else -1.0


def format_per_class_table(result, names=None) -> str:
    """A per-class AP table.

    Args:
        result: a :class:`CocoEvaluation` (columns AP, AP50, AP75) or a
            ``{label: AP}`` dict such as ``voc_eval(...)["per_class"]``.
        names: optional {id: name}; a ``CocoEvaluation`` brings its own.

    Returns:
        Text, one row per class; ``-`` marks a class without GT.
    """
    fmt = lambda v: "      -" if v < 0 else f"{100 * v:7.2f}"  # noqa: E731
    if isinstance(result, CocoEvaluation):
        names = names or dict(zip(result.category_ids.tolist(), result.category_names))
        t50, t75 = (int(np.flatnonzero(IOU_THRESHOLDS == t)[0]) for t in (0.5, 0.75))
        rows = [(int(cid), _class_ap(result, k), _class_ap(result, k, t50), _class_ap(result, k, t75))
                for k, cid in enumerate(result.category_ids)]
        header = f"{'id':>5}  {'class':<20} {'AP':>7} {'AP50':>7} {'AP75':>7}"
    else:
        rows = [(int(cid), float(ap)) for cid, ap in sorted(result.items())]
        header = f"{'id':>5}  {'class':<20} {'AP':>7}"
    names = names or {}
    lines = [header, "-" * len(header)]
    for cid, *values in rows:
        lines.append(f"{cid:>5}  {str(names.get(cid, cid))[:20]:<20} " + " ".join(fmt(v) for v in values))
    return "\n".join(lines)


def _save(figure: Figure, path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


def plot_pr_curves(result: CocoEvaluation, path, iou_threshold=0.5, area="all", max_dets=100,
                   max_classes=20) -> str:
    """Interpolated precision-recall curves, one line per class, saved as a PNG.

    Args:
        result: from :func:`evaluate_coco`.
        path: the PNG file to write.
        iou_threshold: one of ``IOU_THRESHOLDS``.
        area, max_dets: which COCO setting to draw.
        max_classes: draw at most this many classes (highest AP first).

    Returns:
        The path written.
    """
    hits = np.flatnonzero(np.isclose(IOU_THRESHOLDS, iou_threshold))
    if len(hits) == 0 or area not in AREA_RANGES or max_dets not in MAX_DETS:
        raise ValueError(f"no COCO setting iou_threshold={iou_threshold}, area={area!r}, max_dets={max_dets}")
    a, m = list(AREA_RANGES).index(area), MAX_DETS.index(max_dets)
    curves = result.precision[hits[0], :, :, a, m]  # (R, K)
    present = [k for k in range(curves.shape[1]) if curves[0, k] > -1]
    present.sort(key=lambda k: -curves[:, k].mean())
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot(1, 1, 1)
    for k in present[:max_classes]:
        axes.plot(RECALL_THRESHOLDS, curves[:, k],
                  label=f"{result.category_names[k]} (AP={100 * curves[:, k].mean():.1f})")
    axes.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02),
             title=f"PR curves @ IoU={iou_threshold:.2f}, area={area}, maxDets={max_dets}")
    axes.grid(alpha=0.3)
    if present:
        axes.legend(fontsize=7, loc="lower left")
    return _save(figure, path)


def format_error_breakdown(breakdown: TideBreakdown) -> str:
    """TIDE-style table: count and AP gained (in AP points) per error type."""
    lines = [f"AP@{breakdown.pos_threshold:g} before fixes: {100 * breakdown.ap:.2f}",
             f"{'error':<6} {'count':>7} {'dAP':>7}", "-" * 22]
    for kind in ERROR_TYPES:
        lines.append(f"{kind:<6} {breakdown.counts[kind]:>7d} {100 * breakdown.delta_ap[kind]:7.2f}")
    return "\n".join(lines)


def plot_error_breakdown(breakdown: TideBreakdown, path) -> str:
    """Bar chart of the AP each error type costs, saved as a PNG."""
    figure = Figure(figsize=(6.4, 3.2))
    axes = figure.add_subplot(1, 1, 1)
    values = [100 * breakdown.delta_ap[k] for k in ERROR_TYPES]
    axes.barh(ERROR_TYPES[::-1], values[::-1], color="tab:red")
    for y, (kind, value) in enumerate(zip(ERROR_TYPES[::-1], values[::-1])):
        axes.text(value, y, f" {value:.1f} ({breakdown.counts[kind]})", va="center", fontsize=8)
    axes.set(xlabel="AP points gained if fixed (count in brackets)",
             title=f"TIDE-style error breakdown, AP@{breakdown.pos_threshold:g} = {100 * breakdown.ap:.1f}")
    figure.tight_layout()
    return _save(figure, path)
