"""Draw RefineDetLite's anchor refinement on one image, as a PNG ([refinedet] Fig. 1, [refinedetlite]).

Two panels over the same image and its ground-truth boxes (white):

1. **before**: the ``top`` anchors the ARM finds most object-like, as they are
   placed on the grid (SSD-style, one size per level, ratios 1, 2, 1/2);
2. **after**: the same anchors moved by the ARM's offsets -- the refined anchors
   the ODM classifies and regresses from. A trained ARM pulls them onto the digits.

Anchors the ARM filters out (background probability above 1 - theta) are not
drawn; the title counts them. Colours follow the pyramid level of each anchor.

::

    from fcos_from_scratch.visualize.refinedet import refinement_picture
    refinement_picture(model, image, target, "refinement.png")   # a RefineDetLite, an image in [0, 1]
"""

from pathlib import Path
from typing import Dict, Optional, Union

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

LEVEL_COLOURS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:blue")


@torch.no_grad()
def refinement_picture(model, image: torch.Tensor, target: Optional[Dict[str, torch.Tensor]],
                       path: Union[str, Path], top: int = 20) -> Path:
    """Write the before / after picture of the ``top`` most object-like anchors.

    Args:
        model: a ``RefineDetLite`` (any weights; trained ones show the refinement).
        image: (3, H, W) in [0, 1].
        target: optional dict with ``boxes`` (M, 4) xyxy pixels, drawn in white.
        path: the PNG to write (its folder is created).
        top: how many anchors to draw, by ARM objectness.

    Returns:
        The path written.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    was_training = model.training
    model.eval()
    batch, _ = model.preprocess([image])
    outputs, anchors, refined, filtered = model.cascade(batch)
    all_levels = _anchor_levels(model, batch, len(anchors))
    model.train(was_training)
    objectness = torch.softmax(outputs[0][0].float(), dim=-1)[:, 1].masked_fill(filtered[0], -1.0)  # (N,)
    chosen = objectness.topk(min(top, int((~filtered[0]).sum()) or 1)).indices  # (T,)
    levels = all_levels[chosen]
    figure = Figure(figsize=(10, 5))
    for column, (title, boxes) in enumerate((("anchors (before)", anchors[chosen]),
                                             ("ARM-refined anchors (after)", refined[0][chosen]))):
        axis = figure.add_subplot(1, 2, column + 1)
        axis.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), extent=(0, image.shape[2], image.shape[1], 0))
        for box, level in zip(boxes.tolist(), levels.tolist()):
            _rectangle(axis, box, LEVEL_COLOURS[level % len(LEVEL_COLOURS)], 1.2)
        if target is not None:
            for box in target["boxes"].tolist():
                _rectangle(axis, box, "white", 2.0, style="--")
        axis.set(xlim=(0, image.shape[2]), ylim=(image.shape[1], 0))
        axis.set_title(f"{title}: top {len(chosen)} by ARM objectness", fontsize=9)
        axis.set_axis_off()
    figure.suptitle(f"{int(filtered[0].sum())} of {len(anchors)} anchors filtered as background "
                    f"(theta = {model.config.negative_filter_theta}); colour = pyramid level", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _anchor_levels(model, batch: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """(N,) pyramid level of every anchor (ssd_anchors' order: level by level)."""
    sources = model.backbone(batch)
    per_cell = len(model.config.aspect_ratios)
    counts = [s.shape[-2] * s.shape[-1] * per_cell for s in sources]
    levels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    if len(levels) != num_anchors:
        raise ValueError(f"{len(levels)} anchors by level but {num_anchors} in total")
    return levels


def _rectangle(axis, box, colour, width, style="-"):
    x1, y1, x2, y2 = box
    axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=width,
                             linestyle=style))
