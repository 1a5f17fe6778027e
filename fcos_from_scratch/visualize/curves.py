"""PNG plots of the training curves from ``metrics.jsonl`` (as [fcos-light] Figs. 9-12).

One figure per logged scalar of the train records against the global step: every
loss term (``loss_cls.png``, ...), the total (``loss.png``), the learning rate
(``lr.png``) and any other scalar a model reports (a learned sigma, positives).
Figures are drawn on matplotlib's ``Figure`` with the Agg canvas directly, so no
display is needed and importing this module never changes pyplot's backend (a
notebook keeps its inline plots).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Keys of "train" records that are bookkeeping, not curves.
_NOT_CURVES = {"kind", "time", "step", "epoch"}


def curves_from_records(records: Iterable[dict]) -> Dict[str, List[tuple]]:
    """``{name: [(step, value), ...]}`` for every numeric field of the train records."""
    curves: Dict[str, List[tuple]] = {}
    for record in records:
        if record.get("kind") != "train":
            continue
        for name, value in record.items():
            if name in _NOT_CURVES or not isinstance(value, (int, float)):
                continue
            curves.setdefault(name, []).append((record["step"], float(value)))
    return curves


def plot_curve(points: List[tuple], name: str, path: Union[str, os.PathLike], log_y: bool = False) -> Path:
    """Write one curve as a PNG and return its path."""
    steps = [p[0] for p in points]
    values = [p[1] for p in points]
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, values, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(name)
    ax.set_title(name)
    if log_y and all(v > 0 for v in values):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_metrics(metrics_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> List[Path]:
    """Plot every loss term, the total loss, the LR and the other logged scalars of a run.

    Args:
        metrics_path: the run's ``metrics.jsonl``.
        out_dir: folder for the PNGs (created if needed).

    Returns:
        Paths of the PNGs written (``loss*.png``, ``lr.png``, ...).
    """
    from ..engine.progress import read_metrics

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = curves_from_records(read_metrics(metrics_path))
    written = []
    for name, points in sorted(curves.items()):
        written.append(plot_curve(points, name, out_dir / f"{name}.png", log_y=name == "lr"))
    return written
