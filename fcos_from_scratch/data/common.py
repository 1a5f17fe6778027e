"""What every detection dataset shares: the item contract, image loading, bad input.

The item contract (used by the trainer and the evaluator)::

    image, target = dataset[i]
    image:  (3, H, W) float32 in [0, 1] (before normalisation)
    target: {"boxes":     (M, 4) float32, xyxy absolute pixels, continuous,
             "labels":    (M,) int64 in 0..K-1,
             "image_id":  int (the id used in ``dataset.coco_gt()``),
             "orig_size": (H, W) of the image on disk,
             "difficult": (M,) bool   (VOC only),
             "iscrowd":   (M,) bool   (COCO only)}

Bad input (a corrupt or truncated image, a missing file, an annotation without a
size, an inverted box, a box outside the image) raises :class:`BadSampleError`
naming the file and the problem. With ``skip_bad=True`` the item is skipped with one
warning line and counted in ``dataset.report``. Degenerate boxes (zero width or
height) are dropped and counted, never passed on to produce NaN. Images with no
objects are valid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..ops import box_convert, clip_boxes_to_image

LOGGER = logging.getLogger("fcos_from_scratch.data")

# A box may stick out of the image by up to this many pixels (annotation rounding,
# VOC's 1-based xmin = 0 typos); it is clipped silently. More is bad input.
OUTSIDE_TOLERANCE = 1.0


class BadSampleError(ValueError):
    """An image or annotation that cannot be used; the message names the file."""


@dataclass
class LoadReport:
    """What a loader skipped, dropped and clipped; ``summary()`` is one line."""

    name: str
    num_images: int = 0
    skipped: List[str] = field(default_factory=list)  # "file: problem", one per item
    dropped_boxes: int = 0  # degenerate (zero width or height)
    clipped_boxes: int = 0  # stuck out by <= OUTSIDE_TOLERANCE, clipped

    def skip(self, message: str) -> None:
        """Record a skipped item and print its one warning line."""
        self.skipped.append(message)
        LOGGER.warning("skipped %s", message)

    def summary(self) -> str:
        return (
            f"{self.name}: {self.num_images} images, {len(self.skipped)} skipped (bad input), "
            f"{self.dropped_boxes} degenerate boxes dropped, {self.clipped_boxes} boxes clipped"
        )


def load_image(path: Path, expected_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Read an image file as a (3, H, W) float32 tensor in [0, 1].

    Args:
        path: image file (any format Pillow reads; grey and RGBA become RGB).
        expected_size: (H, W) the annotation claims; a different size is an error.

    Returns:
        (3, H, W) float32 tensor in [0, 1].

    Raises:
        BadSampleError: missing, unreadable, corrupt or truncated file, or a size
            that disagrees with ``expected_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise BadSampleError(f"{path}: image file not found")
    try:
        with Image.open(path) as pil:
            pil.load()  # decode now: a truncated file fails here, not later
            array = np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise BadSampleError(f"{path}: cannot decode image ({err})") from err
    height, width = array.shape[:2]
    if expected_size is not None and tuple(expected_size) != (height, width):
        raise BadSampleError(
            f"{path}: annotation says (H, W) = {tuple(expected_size)} but the image is "
            f"{(height, width)}"
        )
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)


def check_boxes_in_image(
    boxes: torch.Tensor, image_size: Tuple[int, int], source: str, report: LoadReport
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate annotation boxes; clip small overhangs, find degenerate boxes.

    Args:
        boxes: (M, 4) float32 xyxy pixels, straight from the annotation.
        image_size: (H, W) of the image.
        source: file name used in error messages.
        report: receives the clipped / dropped counts.

    Returns:
        ``(boxes, keep)``: the (M, 4) clipped boxes and an (M,) bool mask of the
        non-degenerate ones (width and height > 0).

    Raises:
        BadSampleError: a non-finite coordinate, an inverted box (x1 > x2 or
            y1 > y2) or a box outside the image by more than ``OUTSIDE_TOLERANCE``.
    """
    height, width = image_size
    if boxes.numel() == 0:
        return boxes.reshape(0, 4), torch.zeros(0, dtype=torch.bool)
    if not torch.isfinite(boxes).all():
        raise BadSampleError(f"{source}: box coordinates must be finite, got {boxes.tolist()}")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        raise BadSampleError(f"{source}: inverted box (x1 > x2 or y1 > y2): {boxes[inverted][0].tolist()}")
    size_xy = torch.tensor([float(width), float(height)])
    overhang = torch.cat([-boxes[:, :2], boxes[:, 2:] - size_xy], dim=1)  # (M, 4) per edge
    far = overhang.amax(dim=1) > OUTSIDE_TOLERANCE  # (M,)
    if far.any():
        raise BadSampleError(
            f"{source}: box {boxes[far][0].tolist()} lies outside the image (H, W) = {(height, width)}"
        )
    clipped = clip_boxes_to_image(boxes, (height, width))
    report.clipped_boxes += int((clipped != boxes).any(dim=1).sum())
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    report.dropped_boxes += int((~keep).sum())
    return clipped, keep


def xywh_to_xyxy(bbox: Sequence[float]) -> torch.Tensor:
    """One COCO ``[x, y, w, h]`` box as a (4,) float32 xyxy tensor."""
    return box_convert(torch.tensor([bbox], dtype=torch.float32), "xywh", "xyxy")[0]


class DetectionDataset(torch.utils.data.Dataset):
    """Base class: a list of records, image loading, transforms, skip_bad.

    Subclasses fill ``self.records`` (one dict per image with ``file``, ``image_id``,
    ``size`` (H, W) and the target tensors), ``self.class_names`` and
    ``self.category_ids`` (COCO category id of each contiguous label), and
    implement :meth:`coco_gt`.
    """

    def __init__(self, name: str, transforms: Optional[Callable] = None, skip_bad: bool = False):
        self.report = LoadReport(name)
        self.transforms = transforms
        self.skip_bad = skip_bad
        self.records: List[dict] = []
        self.class_names: Tuple[str, ...] = ()
        self.category_ids: Tuple[int, ...] = ()
        self._bad: set = set()

    # -- label maps ---------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_to_category_id(self, label: int) -> int:
        """COCO category id of contiguous label ``label`` (0..K-1)."""
        return self.category_ids[int(label)]

    def category_id_to_label(self, category_id: int) -> int:
        """Contiguous label (0..K-1) of COCO category id ``category_id``."""
        try:
            return self.category_ids.index(int(category_id))
        except ValueError:
            raise ValueError(f"category_id {category_id} is not one of {list(self.category_ids)}") from None

    def coco_gt(self) -> dict:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def finish_loading(self) -> None:
        """Record the image count; print the one-line summary if anything was lost."""
        self.report.num_images = len(self.records)
        if self.report.skipped or self.report.dropped_boxes:
            LOGGER.warning(self.report.summary())

    # -- items --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the transforms (augmentation off for the last E)."""
        if hasattr(self.transforms, "set_epoch"):
            self.transforms.set_epoch(epoch)

    def load_item(self, index: int) -> Tuple[torch.Tensor, dict]:
        """Image and target of record ``index`` before transforms."""
        record = self.records[index]
        image = load_image(record["file"], record["size"])
        target = {key: value.clone() for key, value in record["target"].items()}
        target["image_id"] = record["image_id"]
        target["orig_size"] = tuple(record["size"])
        return image, target

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, dict]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} images")
        for attempt in range(len(self.records)):
            current = (index + attempt) % len(self.records)
            if current in self._bad:
                continue
            try:
                image, target = self.load_item(current)
            except BadSampleError as err:
                if not self.skip_bad:
                    raise
                self._bad.add(current)
                self.report.skip(str(err))
                continue
            if self.transforms is not None:
                image, target = self.transforms(image, target)
            return image, target
        raise BadSampleError(f"{self.report.name}: every image is bad; nothing to load")
