"""PASCAL VOC detection (VOC2007, VOC2012) read straight from a VOCdevkit folder.

Layout (as the devkit tarballs unpack)::

    ROOT/VOCdevkit/VOC2007/Annotations/000005.xml
                          /ImageSets/Main/trainval.txt   (one image id per line)
                          /JPEGImages/000005.jpg

Coordinates. The devkit numbers pixels from 1 and its boxes are inclusive:
``xmin = 1`` is the first pixel column and a box with ``xmin = 1, xmax = 10`` covers
10 columns (its devkit width is ``xmax - xmin + 1``). In our continuous convention
(``docs/CONVENTIONS.md``) pixel column ``c`` (0-based) spans ``[c, c + 1)``, so::

    x1 = xmin - 1,   y1 = ymin - 1,   x2 = xmax,   y2 = ymax

and ``x2 - x1`` equals the devkit width. The legacy ``+ 1`` survives only inside the
VOC metric's ``legacy_pixel`` mode, never here.

``difficult`` objects are kept: they are left out of training targets by default
(``keep_difficult=False``), and :meth:`VOCDetection.coco_gt` keeps them with
``"difficult": 1`` / ``"ignore": 1`` so evaluation can ignore them, as the devkit does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch

from .common import BadSampleError, DetectionDataset, check_boxes_in_image

# The devkit's order (VOCdevkit/VOCcode/VOCinit.m); label i is VOC_CLASSES[i].
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# What `--dataset voc` trains and tests on, as [fcos-light] and [cs771-hw3] did:
# 07+12 trainval / 07 test.
VOC_SPLITS = {
    "train": (("2007", "trainval"), ("2012", "trainval")),
    "trainval": (("2007", "trainval"), ("2012", "trainval")),
    "test": (("2007", "test"),),
    "val": (("2007", "test"),),
}


def find_devkit(root) -> Path:
    """``root`` itself if it is a VOCdevkit folder, else ``root/VOCdevkit``."""
    root = Path(root).expanduser()
    if root.name != "VOCdevkit" and (root / "VOCdevkit").is_dir():
        root = root / "VOCdevkit"
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no VOCdevkit folder; run `python data_scripts/download_voc.py --root {root.parent}`"
        )
    return root


def _text(node: ET.Element, path: str, source: str) -> str:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        raise BadSampleError(f"{source}: missing <{path}>")
    return found.text.strip()


def _number(node: ET.Element, path: str, source: str) -> float:
    text = _text(node, path, source)
    try:
        return float(text)
    except ValueError:
        raise BadSampleError(f"{source}: <{path}> must be a number, got {text!r}") from None


def parse_voc_xml(path: Path):
    """Read one annotation file.

    Args:
        path: ``Annotations/<id>.xml``.

    Returns:
        ``(size, boxes, labels, difficult)``: (H, W); (M, 4) float32 xyxy in our
        continuous convention; (M,) int64 labels; (M,) bool.

    Raises:
        BadSampleError: missing or malformed file, no ``<size>``, an unknown class,
            a box with ``xmin >= xmax`` or ``ymin >= ymax``.
    """
    source = str(path)
    if not Path(path).is_file():
        raise BadSampleError(f"{source}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise BadSampleError(f"{source}: malformed XML ({err})") from None
    if root.find("size") is None:
        raise BadSampleError(f"{source}: missing <size>")
    size = (int(_number(root, "size/height", source)), int(_number(root, "size/width", source)))
    if min(size) <= 0:
        raise BadSampleError(f"{source}: <size> must be positive, got (H, W) = {size}")
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        box, label, hard = _parse_object(obj, source)
        boxes.append(box)
        labels.append(label)
        difficult.append(hard)
    return (
        size,
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(difficult, dtype=torch.bool),
    )


def _parse_object(obj: ET.Element, source: str):
    """One ``<object>``: continuous xyxy box, label, difficult flag."""
    name = _text(obj, "name", source)
    if name not in VOC_CLASSES:
        raise BadSampleError(f"{source}: unknown class {name!r} (expected one of the 20 VOC classes)")
    xmin, ymin, xmax, ymax = (_number(obj, f"bndbox/{k}", source) for k in ("xmin", "ymin", "xmax", "ymax"))
    if xmin >= xmax or ymin >= ymax:
        raise BadSampleError(f"{source}: box of {name!r} has xmin >= xmax or ymin >= ymax: "
                             f"{(xmin, ymin, xmax, ymax)}")
    flag = obj.find("difficult")
    hard = flag is not None and (flag.text or "0").strip() == "1"
    return [xmin - 1.0, ymin - 1.0, xmax, ymax], VOC_CLASSES.index(name), hard  # devkit -> continuous


class VOCDetection(DetectionDataset):
    """PASCAL VOC detection from a VOCdevkit folder, several (year, set) pairs at once.

    Args:
        root: a VOCdevkit folder or the folder that contains it.
        image_sets: ``(year, set)`` pairs, e.g. ``(("2007", "trainval"), ("2012", "trainval"))``.
        transforms: callable ``(image, target) -> (image, target)``.
        skip_bad: skip bad images with one warning line instead of raising.
        keep_difficult: keep ``difficult`` objects in the targets (default: drop
            them, as for training; they always stay in :meth:`coco_gt`).

    Image ids are 1..N in the order of the set files.
    """

    def __init__(
        self,
        root,
        image_sets: Sequence[Tuple[str, str]] = (("2007", "trainval"),),
        transforms: Optional[Callable] = None,
        skip_bad: bool = False,
        keep_difficult: bool = False,
    ):
        name = "VOC " + "+".join(f"{year} {split}" for year, split in image_sets)
        super().__init__(name, transforms, skip_bad)
        self.devkit = find_devkit(root)
        self.keep_difficult = keep_difficult
        self.class_names = VOC_CLASSES
        self.category_ids = tuple(range(1, len(VOC_CLASSES) + 1))
        for year, split in image_sets:
            for stem in self._read_set(year, split):
                try:
                    self.records.append(self._make_record(year, stem))
                except BadSampleError as err:
                    if not skip_bad:
                        raise
                    self.report.skip(str(err))
        for image_id, record in enumerate(self.records, start=1):
            record["image_id"] = image_id
        self.finish_loading()

    def _read_set(self, year: str, split: str):
        path = self.devkit / f"VOC{year}" / "ImageSets" / "Main" / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image set file not found (year {year!r}, set {split!r})")
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]

    def _make_record(self, year: str, stem: str) -> dict:
        folder = self.devkit / f"VOC{year}"
        file = folder / "JPEGImages" / f"{stem}.jpg"
        size, boxes, labels, difficult = parse_voc_xml(folder / "Annotations" / f"{stem}.xml")
        if not file.is_file():
            raise BadSampleError(f"{file}: image file not found (listed in the {year} image set)")
        boxes, keep = check_boxes_in_image(boxes, size, str(folder / "Annotations" / f"{stem}.xml"), self.report)
        gt = {"boxes": boxes[keep], "labels": labels[keep], "difficult": difficult[keep]}
        train_keep = torch.ones_like(gt["difficult"]) if self.keep_difficult else ~gt["difficult"]
        target = {key: value[train_keep] for key, value in gt.items()}
        return {"file": file, "size": size, "target": target, "gt": gt,
                "file_name": f"VOC{year}/JPEGImages/{stem}.jpg"}

    def coco_gt(self) -> dict:
        """Ground truth as a COCO dict: every box, ``difficult`` ones flagged.

        ``bbox`` is ``[x1, y1, w, h]`` in our continuous convention (so ``w`` is the
        devkit's ``xmax - xmin + 1``); category ids are ``label + 1``.
        """
        images, annotations = [], []
        for record in self.records:
            height, width = record["size"]
            images.append({"id": record["image_id"], "file_name": record["file_name"],
                           "height": height, "width": width})
            gt = record["gt"]
            for box, label, hard in zip(gt["boxes"].tolist(), gt["labels"].tolist(), gt["difficult"].tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": record["image_id"],
                    "category_id": self.category_ids[label], "bbox": [box[0], box[1], w, h],
                    "area": w * h, "iscrowd": 0, "difficult": int(hard), "ignore": int(hard),
                })
        categories = [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}
