"""Draw what the Faster R-CNN RPN does to one image, as three PNGs ([faster-rcnn] Sec. 3.1).

1. ``anchors.png``: the anchors of one cell per level (one size per level, every
   aspect ratio) at the centre of the image, plus every anchor the RPN labels an
   object (IoU >= 0.7 or a box's best anchor) in the image's ground truth.
2. ``proposals.png``: left, the RPN's candidates before NMS (per-level top-n,
   clipped, small ones removed); right, the proposals after NMS 0.7 per level.
3. ``rois.png``: the RoIs the second stage trains on: positives (IoU >= 0.5 with a
   box, green) and sampled negatives (red), ground-truth boxes appended.

::

    from fcos_from_scratch.visualize.rpn import rpn_pictures
    rpn_pictures(model, image, target, "pictures/")   # a FasterRCNN, an image in [0, 1]
"""

from pathlib import Path
from typing import Dict, Sequence, Union

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..models.detectors.faster_rcnn import assign_targets
from ..models.detectors.rpn import OBJECT, assign_anchor_targets, proposal_candidates
from ..ops import batched_nms

LEVEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
MAX_DRAWN = 300  # boxes per panel, best first (more is only ink)


def _panel(figure, position, image, title):
    axis = figure.add_subplot(*position)
    axis.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axis.set_title(title, fontsize=9)
    axis.set_axis_off()
    return axis


def _boxes(axis, boxes, colour, width=1.0, alpha=0.8):
    for x1, y1, x2, y2 in boxes[:MAX_DRAWN].tolist():
        axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour,
                                 linewidth=width, alpha=alpha))


def _save(figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


@torch.no_grad()
def rpn_pictures(model, image: torch.Tensor, target: Dict[str, torch.Tensor],
                 out_dir: Union[str, Path], seed: int = 0) -> Sequence[Path]:
    """Write ``anchors.png``, ``proposals.png`` and ``rois.png`` for one image.

    Args:
        model: a ``FasterRCNN`` (any weights; trained ones give meaningful proposals).
        image: (3, H, W) in [0, 1]; target: ``boxes`` (M, 4) xyxy, ``labels`` (M,).
        out_dir: folder for the PNGs (created).
        seed: for the RoI sampler's draws.

    Returns:
        The three paths.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    batch, sizes, levels = model.pyramid([image])
    rpn = model.rpn
    objectness, _, anchors, proposals, counts = rpn.predict(tuple(batch.shape[-2:]), levels[model.rpn_first_level:])
    gt = target["boxes"].float()
    height, width = image.shape[-2:]

    figure = Figure(figsize=(6, 6))
    axis = _panel(figure, (1, 1, 1), image, "anchors: one cell per level (colour), and object anchors (white)")
    labels, _ = assign_anchor_targets(anchors, [gt], rpn.matcher)
    _boxes(axis, anchors[0][labels[0] == OBJECT], "white", alpha=0.6)
    start = 0
    for level, count in enumerate(counts):
        level_anchors = anchors[0][start:start + count]
        per_cell = rpn.head.cls_logits.out_channels
        centre = torch.tensor([width / 2, height / 2] * 2)
        cell = ((level_anchors.reshape(-1, per_cell, 4).mean(1) - centre).abs().sum(1)).argmin()
        _boxes(axis, level_anchors.reshape(-1, per_cell, 4)[cell], LEVEL_COLOURS[level % 5], width=2.0)
        start += count
    _boxes(axis, gt, "yellow", width=2.0)
    paths = [_save(figure, out_dir / "anchors.png")]

    (found,) = proposal_candidates(proposals, objectness, sizes, counts,
                                   pre_nms_top_n=rpn.pre_nms_top_n["testing"], min_size=rpn.min_size,
                                   score_thresh=rpn.score_thresh)
    order = found.scores.argsort(descending=True)
    keep = batched_nms(found.boxes, found.scores, found.levels, rpn.nms_thresh)
    keep = keep[:rpn.post_nms_top_n["testing"]]
    figure = Figure(figsize=(12, 6))
    before = _panel(figure, (1, 2, 1), image, f"before NMS: {len(found.boxes)} candidates (best {MAX_DRAWN})")
    _boxes(before, found.boxes[order], "cyan", alpha=0.4)
    after = _panel(figure, (1, 2, 2), image, f"after NMS {rpn.nms_thresh} per level: {len(keep)} proposals")
    _boxes(after, found.boxes[keep], "cyan", alpha=0.6)
    paths.append(_save(figure, out_dir / "proposals.png"))

    torch.manual_seed(seed)
    rois, roi_labels, _ = assign_targets([found.boxes[keep]], [gt], [target["labels"]],
                                         model.box_matcher, model.box_sampler)
    figure = Figure(figsize=(6, 6))
    positive = roi_labels[0] > 0
    axis = _panel(figure, (1, 1, 1), image, f"sampled RoIs: {int(positive.sum())} positive (green), "
                                             f"{int((~positive).sum())} negative (red)")
    _boxes(axis, rois[0][~positive], "red", alpha=0.5)
    _boxes(axis, rois[0][positive], "lime", width=1.5)
    paths.append(_save(figure, out_dir / "rois.png"))
    model.train(was_training)
    return paths
