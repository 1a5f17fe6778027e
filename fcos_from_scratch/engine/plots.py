"""PNG plots of the training curves from ``metrics.jsonl`` (seed 000 figs. 9-12).

One figure per loss term (``loss_cls.png``, ``loss_reg.png``, ...), one for the
total (``loss.png``) and one for the learning rate (``lr.png``), each against the
global step. Matplotlib's Agg backend is used so no display is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from .progress import read_metrics  # noqa: E402

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
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(steps, values, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(name)
    ax.set_title(name)
    if log_y and all(v > 0 for v in values):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_metrics(metrics_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> List[Path]:
    """Plot every loss term, the total loss and the LR of a run.

    Args:
        metrics_path: the run's ``metrics.jsonl``.
        out_dir: folder for the PNGs (created if needed).

    Returns:
        Paths of the PNGs written (``loss*.png`` and ``lr.png``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = curves_from_records(read_metrics(metrics_path))
    written = []
    for name, points in sorted(curves.items()):
        if name.startswith("loss") or name == "lr":
            written.append(plot_curve(points, name, out_dir / f"{name}.png", log_y=name == "lr"))
    return written
