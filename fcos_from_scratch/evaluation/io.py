"""COCO json in and out, and per-image dicts <-> COCO dicts.

The library works in per-image dicts with ``xyxy`` boxes and 0-based labels;
COCO files hold ``xywh`` boxes and arbitrary category ids. The conversions live
here, at the edge, and nowhere else:

* :func:`targets_to_coco` -- per-image targets -> a COCO ground-truth dict;
* :func:`detections_to_coco` / :func:`coco_to_detections` -- per-image
  predictions <-> a COCO results list (``xyxy <-> xywh``, label <-> category id);
* :func:`load_coco_gt`, :func:`load_coco_results`, :func:`save_coco_results` --
  files, with errors naming the file, entry and field.
"""

import json
import os

import numpy as np
import torch

from ..ops import box_convert
from .inputs import check_per_image
from .parse import parse_coco_dets, parse_coco_gt


def load_json(path, what: str = "json file"):
    """Read a json file; a missing file or malformed json names the path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: malformed json ({error.msg} at line {error.lineno}, "
                             f"column {error.colno})") from None


def load_coco_gt(path) -> dict:
    """Load and check a COCO ground-truth file (see :func:`.parse.parse_coco_gt`)."""
    gt = load_json(path, "COCO ground-truth file")
    parse_coco_gt(gt, name=os.fspath(path))
    return gt


def load_coco_results(path, coco_gt: dict = None) -> list:
    """Load a COCO results file (a json list); checked against ``coco_gt`` if given."""
    results = load_json(path, "COCO results file")
    if not isinstance(results, list):
        raise ValueError(f"{path}: a COCO results file holds a json list, got {type(results).__name__}")
    if coco_gt is not None:
        parse_coco_dets(results, parse_coco_gt(coco_gt), name=os.fspath(path))
    return results


def save_coco_results(results: list, path) -> None:
    """Write a COCO results list as json (creating the parent folder)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f)


def _image_ids(items, image_ids):
    if image_ids is None:
        image_ids = [int(item.get("image_id", i)) for i, item in enumerate(items)]
    image_ids = [int(i) for i in image_ids]
    if len(image_ids) != len(items):
        raise ValueError(f"image_ids has {len(image_ids)} entries for {len(items)} images")
    return image_ids


def _map_labels(labels: np.ndarray, mapping, where: str) -> list:
    if mapping is None:
        return labels.tolist()
    try:
        return [int(mapping[int(label)]) for label in labels]
    except KeyError as error:
        raise ValueError(f"{where}: label {error.args[0]} has no entry in the label -> category map") from None


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return box_convert(torch.from_numpy(boxes), "xyxy", "xywh").numpy()


def detections_to_coco(preds, image_ids=None, label_to_category=None) -> list:
    """Per-image predictions -> a COCO results list.

    Args:
        preds: list of dicts with ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,).
        image_ids: one COCO image id per entry (default: each dict's
            ``image_id``, else its position).
        label_to_category: {label: category_id}; identity when ``None``.

    Returns:
        list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
    """
    preds = check_per_image(preds, "preds", ("boxes", "scores", "labels"))
    results = []
    for i, (pred, image_id) in enumerate(zip(preds, _image_ids(preds, image_ids))):
        categories = _map_labels(pred["labels"], label_to_category, f"preds[{i}]")
        for box, score, cat in zip(_xyxy_to_xywh(pred["boxes"]).tolist(), pred["scores"].tolist(), categories):
            results.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": score})
    return results


def coco_to_detections(results, image_ids, category_to_label=None) -> list:
    """A COCO results list -> per-image predictions (the inverse of :func:`detections_to_coco`).

    Args:
        results: COCO results list; an unknown image id (or, with a map, an
            unknown category id) is an error naming the entry.
        image_ids: the COCO image ids, in the order the output list should have.
        category_to_label: {category_id: label}; identity when ``None``.

    Returns:
        list of dicts with ``boxes`` (N, 4) float64 xyxy, ``scores`` (N,)
        float64 and ``labels`` (N,) int64 tensors, one per image id.
    """
    if not isinstance(results, list):
        raise ValueError(f"results must be a list of dicts, got {type(results).__name__}")
    image_ids = [int(i) for i in image_ids]
    if category_to_label is not None:
        known = set(category_to_label)
    else:  # identity: any integer category id is accepted
        known = {r["category_id"] for r in results if isinstance(r, dict)
                 and isinstance(r.get("category_id"), (int, np.integer))}
    reference = parse_coco_gt({"images": [{"id": i} for i in image_ids], "annotations": [],
                               "categories": [{"id": int(c)} for c in known]}, name="image_ids")
    dets = parse_coco_dets(results, reference, name="results")
    # reference.image_ids is image_ids sorted, so argsort maps its index to our slot.
    position = np.argsort(image_ids, kind="stable")[dets.image]  # (D,)
    labels = np.array(_map_labels(reference.category_ids[dets.category], category_to_label, "results"),
                      dtype=np.int64)
    boxes = box_convert(torch.from_numpy(dets.boxes), "xywh", "xyxy")
    out = []
    for i in range(len(image_ids)):
        keep = torch.from_numpy(np.flatnonzero(position == i))
        out.append({"boxes": boxes[keep], "scores": torch.from_numpy(dets.scores)[keep],
                    "labels": torch.from_numpy(labels)[keep]})
    return out


def targets_to_coco(targets, image_ids=None, label_to_category=None, categories=None,
                    category_names=None) -> dict:
    """Per-image targets -> a COCO ground-truth dict.

    Args:
        targets: list of dicts with ``boxes`` (M, 4) xyxy, ``labels`` (M,), optional
            ``area`` (M,) (default: box ``w * h``) and ``iscrowd`` (M,).
            ``difficult`` is a VOC notion and is not exported.
        image_ids: as in :func:`detections_to_coco`.
        label_to_category: {label: category_id}; identity when ``None``.
        categories: category ids to declare, also those without any GT (they
            matter: detections of them must be accepted). Default: the values of
            ``label_to_category``, else the labels present.
        category_names: optional {category_id: name}.

    Returns:
        dict with ``images``, ``annotations`` (ids from 1), ``categories``.
    """
    targets = check_per_image(targets, "targets", ("boxes", "labels"), optional=("area", "iscrowd"))
    image_ids = _image_ids(targets, image_ids)
    annotations = []
    for i, (target, image_id) in enumerate(zip(targets, image_ids)):
        xywh = _xyxy_to_xywh(target["boxes"])
        area = target.get("area", xywh[:, 2] * xywh[:, 3]).tolist()
        crowd = target.get("iscrowd", np.zeros(len(xywh), bool)).astype(int).tolist()
        cats = _map_labels(target["labels"], label_to_category, f"targets[{i}]")
        for box, a, c, cat in zip(xywh.tolist(), area, crowd, cats):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": box, "area": a, "iscrowd": c})
    if categories is None:
        categories = (label_to_category.values() if label_to_category is not None
                      else {a["category_id"] for a in annotations})
    names = category_names or {}
    return {"images": [{"id": i} for i in image_ids], "annotations": annotations,
            "categories": [{"id": int(c), "name": str(names.get(int(c), c))} for c in sorted(set(categories))]}
