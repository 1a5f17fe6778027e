"""Boxes and captions drawn on an image: the one drawing routine of the package.

Everything that draws boxes on pixels (``predict``, ``data.show``, the lessons)
calls :func:`draw_boxes`, so every picture follows the same rule:

* a continuous box ``[x1, x2) x [y1, y2)`` covers pixel columns ``x1 .. x2 - 1``
  (``docs/CONVENTIONS.md``), and Pillow's rectangle includes its last pixel, so
  the outline is drawn from ``(x1, y1)`` to ``(x2 - 1, y2 - 1)``;
* each caption (class name, and the score if given) sits on a filled label of the
  box's colour just above the box (inside it when the box touches the top edge),
  in black or white, whichever contrasts with the label, so captions stay readable
  on any background;
* captions never overlap: they are placed best score first, and one that would
  cover an earlier caption moves down until it is free; none leaves the image.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float RGB in [0, 1] -> an RGB ``PIL.Image``."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)  # (H, W, 3)


def draw_boxes(
    image,
    boxes: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    scores: Optional[torch.Tensor] = None,
    class_names: Sequence[str] = (),
    *,
    score_threshold: float = 0.0,
    width: int = 2,
    title: str = "",
) -> Image.Image:
    """Draw xyxy boxes with their class (and score) captions.

    Args:
        image: (3, H, W) float tensor in [0, 1] or a ``PIL.Image`` (copied).
        boxes: (N, 4) xyxy pixels, continuous.
        labels: (N,) int classes 0..K-1 (colour and caption), or None.
        scores: (N,) scores, or None; boxes below ``score_threshold`` are skipped.
        class_names: names for the labels (the label number when missing).
        width: outline width in pixels.
        title: optional text in the top-left corner.

    Returns:
        A new RGB ``PIL.Image``.
    """
    pil = to_pil(image) if torch.is_tensor(image) else image.convert("RGB").copy()
    captions = labels is not None or scores is not None
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.zeros(len(boxes), dtype=torch.int64) if labels is None else torch.as_tensor(labels)
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"boxes, labels and scores need the same length, got {len(boxes)}, "
                         f"{len(labels)} and {None if scores is None else len(scores)}")
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=12)
    keep = [i for i in range(len(boxes)) if scores is None or float(scores[i]) >= score_threshold]
    if scores is not None:  # best first: the best captions get the best places
        keep.sort(key=lambda i: -float(scores[i]))
    placed: List[Tuple[float, float, float, float]] = []
    captions_at = []
    for index in keep:
        label = int(labels[index])
        if captions:
            text = class_names[label] if 0 <= label < len(class_names) else str(label)
            if scores is not None:
                text += f" {float(scores[index]):.2f}"
            rect = _caption_rect(draw, font, text, boxes[index].tolist(), pil.size, placed)
            placed.append(rect)
            captions_at.append((index, text, rect))
    for index in reversed(keep):  # lowest score first, so the best boxes are drawn on top
        x1, y1, x2, y2 = boxes[index].tolist()
        colour = PALETTE[int(labels[index]) % len(PALETTE)]
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
    for index, text, (left, top, right, bottom) in reversed(captions_at):
        colour = PALETTE[int(labels[index]) % len(PALETTE)]
        draw.rectangle([left, top, right, bottom], fill=colour)
        text_top = draw.textbbox((0, 0), text, font=font)[1]
        draw.text((left + 1, top - text_top + 1), text, fill=_ink(colour), font=font)
    if title:
        draw.text((3, 2), title, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return pil


def _ink(colour: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Black on a light label, white on a dark one (ITU-R BT.601 luma)."""
    red, green, blue = colour
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 128 else (255, 255, 255)


def _caption_rect(draw, font, text: str, box: List[float], image_size: Tuple[int, int],
                  placed: List[Tuple[float, float, float, float]]) -> Tuple[float, float, float, float]:
    """Where a caption goes: above the box (inside if no room), shifted right-to-left to fit
    the image and down past every caption already ``placed``."""
    image_w, image_h = image_size
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 2, bottom - top + 2
    x1, y1 = box[0], box[1]
    x = max(0.0, min(x1, image_w - width))
    y = y1 - height if y1 >= height else y1
    for _ in range(len(placed) + 1):  # each move clears at least one caption
        hit = [r for r in placed if x < r[2] and r[0] < x + width and y < r[3] and r[1] < y + height]
        if not hit:
            break
        y = max(r[3] for r in hit) + 1
    y = max(0.0, min(y, image_h - height))
    return (x, y, x + width, y + height)
