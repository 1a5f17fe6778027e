"""COCO-format detection sets: any ``instances_*.json`` plus an image folder.

Conversions at this edge (``docs/CONVENTIONS.md``):

* COCO ``bbox = [x, y, w, h]`` is already continuous (x, y is the top-left corner
  of the box, not of a pixel centre), so ``xyxy = (x, y, x + w, y + h)``; no +1.
* Category ids (COCO's are 1..90 with gaps) map to contiguous labels 0..K-1 in
  increasing id order; ``dataset.category_ids[label]`` maps back.
* ``iscrowd`` regions are kept in :meth:`CocoDetection.coco_gt` (evaluation
  ignores detections that fall on them) and left out of training targets unless
  ``keep_crowd=True``; the target's ``iscrowd`` mask says which boxes they are.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .common import BadSampleError, DetectionDataset, check_boxes_in_image, xywh_to_xyxy


def read_json(path: Path) -> dict:
    """Load a COCO json file; a missing or malformed file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise ValueError(f"{path}: a COCO detection file needs a list under {key!r}")
    return data


def _image_size(image: dict, source: str) -> Tuple[int, int]:
    try:
        height, width = int(image["height"]), int(image["width"])
    except (KeyError, TypeError, ValueError):
        raise BadSampleError(f"{source}: image entry has no valid 'height'/'width'") from None
    if height <= 0 or width <= 0:
        raise BadSampleError(f"{source}: image size must be positive, got (H, W) = {(height, width)}")
    return height, width


def _parse_annotation(ann: dict, cat_to_label: Dict[int, int], source: str) -> Tuple[torch.Tensor, int, bool]:
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise BadSampleError(f"{source}: annotation {ann.get('id')} needs bbox [x, y, w, h], got {bbox!r}")
    try:
        box = xywh_to_xyxy([float(v) for v in bbox])
    except (TypeError, ValueError):
        raise BadSampleError(f"{source}: annotation {ann.get('id')} has a non-numeric bbox {bbox!r}") from None
    if ann.get("category_id") not in cat_to_label:
        raise BadSampleError(
            f"{source}: annotation {ann.get('id')} has unknown category_id {ann.get('category_id')!r}"
        )
    # A negative width or height would make x2 < x1: reported as an inverted box.
    return box, cat_to_label[ann["category_id"]], bool(ann.get("iscrowd", 0))


class CocoDetection(DetectionDataset):
    """A COCO-json detection set.

    Args:
        image_dir: folder the images' ``file_name`` entries are relative to.
        ann_file: the COCO json (``images``, ``annotations``, ``categories``).
        transforms: callable ``(image, target) -> (image, target)``.
        skip_bad: skip bad images with one warning line instead of raising.
        keep_crowd: keep ``iscrowd`` boxes in training targets (default: drop them).
        name: used in messages and the load report.
    """

    def __init__(
        self,
        image_dir,
        ann_file,
        transforms: Optional[Callable] = None,
        skip_bad: bool = False,
        keep_crowd: bool = False,
        name: Optional[str] = None,
    ):
        super().__init__(name or Path(ann_file).name, transforms, skip_bad)
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.keep_crowd = keep_crowd
        self._data = read_json(self.ann_file)
        categories = sorted(self._data["categories"], key=lambda c: c["id"])
        self.category_ids = tuple(int(c["id"]) for c in categories)
        self.class_names = tuple(str(c.get("name", c["id"])) for c in categories)
        cat_to_label = {cid: label for label, cid in enumerate(self.category_ids)}
        self._build_records(cat_to_label)
        self.finish_loading()

    def _build_records(self, cat_to_label: Dict[int, int]) -> None:
        anns_per_image: Dict[int, List[dict]] = defaultdict(list)
        known = {image.get("id") for image in self._data["images"]}
        for ann in self._data["annotations"]:
            if ann.get("image_id") not in known:
                message = f"{self.ann_file}: annotation {ann.get('id')} points at unknown image_id {ann.get('image_id')!r}"
                if not self.skip_bad:
                    raise BadSampleError(message)
                self.report.skip(message)
                continue
            anns_per_image[ann["image_id"]].append(ann)
        for image in sorted(self._data["images"], key=lambda im: im.get("id")):
            try:
                self.records.append(self._make_record(image, anns_per_image[image["id"]], cat_to_label))
            except BadSampleError as err:
                if not self.skip_bad:
                    raise
                self.report.skip(str(err))
        self._kept_ids = {record["image_id"] for record in self.records}

    def _make_record(self, image: dict, anns: List[dict], cat_to_label: Dict[int, int]) -> dict:
        file = self.image_dir / str(image.get("file_name", ""))
        source = f"{file} (image_id {image.get('id')})"
        if not image.get("file_name") or not file.is_file():
            raise BadSampleError(f"{source}: image file not found")
        size = _image_size(image, source)
        parsed = [_parse_annotation(ann, cat_to_label, source) for ann in anns]
        boxes = torch.stack([p[0] for p in parsed]) if parsed else torch.zeros(0, 4)
        labels = torch.tensor([p[1] for p in parsed], dtype=torch.int64)
        crowd = torch.tensor([p[2] for p in parsed], dtype=torch.bool)
        boxes, keep = check_boxes_in_image(boxes, size, source, self.report)
        if not self.keep_crowd:
            keep &= ~crowd
        target = {"boxes": boxes[keep], "labels": labels[keep], "iscrowd": crowd[keep]}
        return {"file": file, "image_id": int(image["id"]), "size": size, "target": target,
                "info": image}

    def coco_gt(self) -> dict:
        """The ground truth in COCO json form (all kept images, crowd regions included).

        Boxes are the file's own ``[x, y, w, h]``; evaluation should use this dict,
        not the training targets, so crowd regions are honoured.
        """
        images = [record["info"] for record in self.records]
        anns = [a for a in self._data["annotations"] if a.get("image_id") in self._kept_ids]
        return {"images": images, "annotations": anns, "categories": self._data["categories"]}
