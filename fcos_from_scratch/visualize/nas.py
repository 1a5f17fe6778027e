"""Pictures of the decoder search: one architecture's blocks and wires, and the reward curve.

:func:`draw_architecture` draws an architecture of ``nas.space`` as two graphs:

* **FPN** (left): the inputs c3, c4, c5, then the 7 blocks in order. An arrow from
  a pool entry into a block is labelled by the op applied to it; the block's
  circle says how the two are merged (``+`` sum, ``cat`` concat + 1x1 conv). The
  last three blocks feed P5, P4, P3; dangling blocks (no later block reads them,
  [nas-fcos] Eq. (1)) are added to every output level (dashed).
* **Head** (right): p (a pyramid level) and o0 = the first op, then the 5 blocks;
  each block keeps its two op outputs (small squares, o1 and o2) in the pool, so
  later blocks may read them. The last merge is the tower's output. Under it,
  the weight-sharing index of each level (layers before it are level-specific).

Drawn on matplotlib's ``Figure`` with the Agg canvas, so no display is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..nas.space import (CONCAT, INPUTS, NUM_LEVELS, OPS, SKIP, Architecture, dangling_outputs)

SHORT_OPS = {"sep_conv_3x3": "sep3", "sep_conv_3x3_dil3": "sep3 d3", "sep_conv_5x5_dil6": "sep5 d6",
             "skip": "skip", "deform_conv_3x3": "dcn3"}
OP_COLORS = ("tab:blue", "tab:cyan", "tab:purple", "0.6", "tab:red")  # by op index
Point = Tuple[float, float]


def _node(ax, xy: Point, text: str, color: str = "white", size: float = 0.28, square: bool = False) -> None:
    from matplotlib.patches import Circle, Rectangle

    x, y = xy
    patch = (Rectangle((x - size, y - size), 2 * size, 2 * size, facecolor=color, edgecolor="black", zorder=3)
             if square else Circle(xy, size, facecolor=color, edgecolor="black", zorder=3))
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=7, zorder=4)


def _wire(ax, start: Point, end: Point, op: Optional[int] = None, dashed: bool = False, rad: float = 0.15) -> None:
    color = "0.3" if op is None else OP_COLORS[op]
    ax.annotate("", xy=end, xytext=start, zorder=2,
                arrowprops=dict(arrowstyle="->", color=color, lw=1.0 if op in (None, SKIP) else 1.6,
                                linestyle="--" if dashed else "-", shrinkA=9, shrinkB=9,
                                connectionstyle=f"arc3,rad={rad}"))
    if op is not None:
        mx, my = (start[0] + 2 * end[0]) / 3, (start[1] + 2 * end[1]) / 3
        ax.text(mx, my + 0.12 * (1 if rad >= 0 else -2), SHORT_OPS[OPS[op]], fontsize=6, color=color, ha="center", zorder=5,
                bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.8))


def _merge_label(agg: int) -> str:
    return "cat" if agg == CONCAT else "+"


def draw_fpn(ax, arch: Architecture) -> None:
    """The FPN graph of ``arch`` on ``ax``."""
    where: Dict[int, Point] = {i: (0.0, 2.0 * i) for i in range(len(INPUTS))}  # c3, c4, c5
    for i, name in enumerate(INPUTS):
        _node(ax, where[i], name, color="0.85")
    for t, block in enumerate(arch.fpn):
        xy = (1.5 * (t + 1), 0.5 + 1.5 * (t % 3) + 0.3 * (t // 3))
        where[len(INPUTS) + t] = xy
        _wire(ax, where[block.id1], xy, block.op1, rad=0.15)
        _wire(ax, where[block.id2], xy, block.op2, rad=-0.15)  # the other way: two reads of one entry
        _node(ax, xy, f"{_merge_label(block.agg)}\nx{t + 1}", color="lightyellow", size=0.36)
    last = len(INPUTS) + len(arch.fpn)
    outputs = {f"P{5 - k}": where[last - 3 + k] for k in range(3)}  # x5 -> P5, x6 -> P4, x7 -> P3
    for k, (name, source) in enumerate(outputs.items()):
        xy = (1.5 * (len(arch.fpn) + 1.5), 2.0 * (2 - k))
        _wire(ax, source, xy)
        for t in dangling_outputs(arch):
            _wire(ax, where[len(INPUTS) + t], xy, dashed=True)
        _node(ax, xy, name, color="lightgreen")
    ax.set_title("FPN: 7 blocks over c3, c4, c5 (dashed: dangling, added to every level)", fontsize=8)


def draw_head(ax, arch: Architecture) -> None:
    """The head graph of ``arch`` on ``ax`` (one tower; the class and box towers share it)."""
    where: Dict[int, Point] = {0: (0.0, 0.0), 1: (1.2, 0.0)}
    _node(ax, where[0], "p", color="lightgreen")
    _wire(ax, where[0], where[1], arch.head_op)
    _node(ax, where[1], "o0", color="lightyellow", square=True)
    for t, block in enumerate(arch.head):
        x = 1.2 + 2.0 * (t + 1)
        o1, o2, merged = (x - 0.7, 1.3), (x - 0.7, -1.3), (x, 0.0)
        base = 2 + 3 * t
        _wire(ax, where[block.id1], o1, block.op1)
        _wire(ax, where[block.id2], o2, block.op2)
        _wire(ax, o1, merged)
        _wire(ax, o2, merged)
        where.update({base: o1, base + 1: o2, base + 2: merged})
        _node(ax, o1, f"o1.{t + 1}", color="white", size=0.22, square=True)
        _node(ax, o2, f"o2.{t + 1}", color="white", size=0.22, square=True)
        _node(ax, merged, f"{_merge_label(block.agg)}\na{t + 1}", color="lightyellow", size=0.36)
    sharing = ", ".join(f"P{3 + level}: {i}" for level, i in enumerate(arch.share_from[:NUM_LEVELS]))
    ax.set_title("head tower: first op, then 5 blocks; output a5", fontsize=8)
    ax.text(0.0, -2.3, f"level-specific layers before index i_l (0 = all shared): {sharing}", fontsize=7)


def draw_architecture(arch: Architecture, path: Union[str, os.PathLike], title: str = "") -> Path:
    """Write the picture of ``arch`` (FPN and head) as a PNG; returns the path."""
    figure = Figure(figsize=(15, 3.6))
    FigureCanvasAgg(figure)
    fpn_ax, head_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1.0]})
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.08, top=0.86, wspace=0.04)  # no tight bbox: a second draw
    draw_fpn(fpn_ax, arch)
    draw_head(head_ax, arch)
    for ax, (xlim, ylim) in ((fpn_ax, ((-0.7, 15.0), (-0.8, 4.8))), (head_ax, ((-0.7, 12.0), (-2.6, 2.0)))):
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.axis("off")
    legend = "   ".join(f"{SHORT_OPS[name]} = {name}" for name in OPS)
    figure.text(0.5, 0.02, f"ops: {legend}; cat = concat + 1x1 conv", ha="center", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def plot_rewards(rewards: Sequence[float], path: Union[str, os.PathLike], batch: int = 4) -> Path:
    """Reward of every candidate in search order, the best so far and a moving mean; a PNG."""
    figure = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    steps = list(range(1, len(rewards) + 1))
    best, running = [], float("-inf")
    for r in rewards:
        running = max(running, r)
        best.append(running)
    mean = [sum(rewards[max(0, i - batch + 1):i + 1]) / len(rewards[max(0, i - batch + 1):i + 1])
            for i in range(len(rewards))]
    ax.plot(steps, rewards, "o", markersize=3, color="0.5", label="candidate")
    ax.plot(steps, mean, color="tab:blue", label=f"mean of the last {batch}")
    ax.plot(steps, best, color="tab:red", label="best so far")
    ax.set_xlabel("candidate")
    ax.set_ylabel("reward R = -(L_cls + L_reg + L_ctr)")
    ax.legend(fontsize=7)
    figure.subplots_adjust(left=0.15, right=0.97, bottom=0.14, top=0.95)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
