"""COCO ground truth and results, checked and turned into flat numpy arrays.

pycocotools keeps every annotation as a Python dict and loops over them; we read
each field once into a column (``(G,)`` or ``(G, 4)`` arrays) so that the
evaluator can work on whole arrays. Every malformed entry raises ``ValueError``
naming the list, the entry's index and the field, e.g.
``coco_dets[12]['bbox']: width and height must be >= 0, got [3.0, 4.0, -1.0, 2.0]``.

Defaults where pycocotools would crash with a ``KeyError``: a missing
``iscrowd`` is 0, a missing ground-truth ``area`` is the box's ``w * h``.
"""

from dataclasses import dataclass

from itertools import chain

import numpy as np


@dataclass
class CocoGroundTruth:
    """COCO ground truth as columns. G annotations, I images, K categories.

    Attributes:
        image_ids: (I,) int64, sorted image ids (pycocotools' ``params.imgIds``).
        category_ids: (K,) int64, sorted category ids (``params.catIds``).
        category_names: K names, ``str(id)`` where the json gives none.
        image: (G,) int64 index into ``image_ids``.
        category: (G,) int64 index into ``category_ids``.
        boxes: (G, 4) float64, xywh pixels exactly as in the json.
        area: (G,) float64, the annotation's ``area`` field (used for area ranges).
        iscrowd: (G,) bool.
        ids: (G,) int64 annotation ids.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    category_names: list
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    ids: np.ndarray


@dataclass
class CocoDetections:
    """COCO results as columns. D detections.

    Attributes:
        image: (D,) int64 index into ``CocoGroundTruth.image_ids``.
        category: (D,) int64 index into ``CocoGroundTruth.category_ids``.
        boxes: (D, 4) float64, xywh pixels.
        scores: (D,) float64.
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @property
    def area(self) -> np.ndarray:
        """(D,) float64 ``w * h``, the detection area pycocotools' ``loadRes`` uses."""
        return self.boxes[:, 2] * self.boxes[:, 3]


def _entries(container, key: str, where: str) -> list:
    if not isinstance(container, dict):
        raise ValueError(f"{where} must be a dict with '{key}', got {type(container).__name__}")
    if key not in container:
        raise ValueError(f"{where} has no '{key}' list")
    entries = container[key]
    if not isinstance(entries, list):
        raise ValueError(f"{where}['{key}'] must be a list, got {type(entries).__name__}")
    return entries


def _find_bad(entries: list, field: str, where: str, check) -> None:
    """Loop (only on the error path) to name the first entry whose ``field`` fails."""
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}[{i}] must be a dict, got {type(entry).__name__}")
        if field not in entry:
            raise ValueError(f"{where}[{i}] has no field '{field}'")
        message = check(entry[field])
        if message:
            raise ValueError(f"{where}[{i}]['{field}']: {message}, got {entry[field]!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _number_problem(value):
    if not _is_number(value):
        return "must be a number"
    if not np.isfinite(value):
        return "must be finite"
    return None


def _int_problem(value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        return "must be an integer"
    return None


def _flag_problem(value):
    if not isinstance(value, (int, np.integer)):  # bool is an int subclass: allowed
        return "must be 0, 1 or a bool"
    return None


def _bbox_problem(value):
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return "must be a list of 4 numbers [x, y, w, h]"
    if not all(_is_number(v) for v in value):
        return "must contain numbers only"
    if not all(np.isfinite(v) for v in value):
        return "must be finite"
    if value[2] < 0 or value[3] < 0:
        return "width and height must be >= 0"
    return None


def _values(entries: list, field: str, default) -> list:
    """``entry[field]`` for every entry; ``default`` is a scalar or one value per entry."""
    if default is None:
        return [entry[field] for entry in entries]
    if not isinstance(default, list):
        default = [default] * len(entries)
    return [entry.get(field, d) for entry, d in zip(entries, default)]


def _fast_column(values: list, field: str, dtype, allow_bool: bool):
    """The common case in one vectorised pass; ``None`` if anything looks wrong."""
    n = len(values)
    if field == "bbox":
        if n and not (np.fromiter(map(len, values), np.int64, count=n) == 4).all():
            return None
        column = np.fromiter(chain.from_iterable(values), np.float64, count=4 * n).reshape(n, 4)
        good = np.isfinite(column).all() and (column[:, 2:] >= 0).all()
        return column if good else None
    column = np.asarray(values)
    if n and column.ndim != 1:
        return None
    if dtype is np.int64:
        kinds = "iub" if allow_bool else "iu"
        return column.astype(np.int64) if (n == 0 or column.dtype.kind in kinds) else None
    if n and (column.dtype.kind not in "iuf" or not np.isfinite(column).all()):
        return None
    return column.astype(np.float64)


def _column(entries: list, field: str, where: str, dtype, check, default=None) -> np.ndarray:
    """Read ``entry[field]`` of every entry into one numpy array, checking it.

    The fast path reads and checks the whole column at once; any failure
    (missing field, wrong type, non-finite value) falls back to a loop that names
    the offending entry.
    """
    try:
        column = _fast_column(_values(entries, field, default), field, dtype,
                              allow_bool=check is _flag_problem)
        if column is not None:
            return column
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        pass
    if default is not None:
        entries = [{**e, field: v} for e, v in zip(entries, _values(entries, field, default))]
    _find_bad(entries, field, where, check)
    raise ValueError(f"{where}: field '{field}' could not be read")  # pragma: no cover


def _index_of(ids: np.ndarray, sorted_ids: np.ndarray, entries, field: str, where: str):
    """Map raw ids to positions in ``sorted_ids``; unknown ids name their entry."""
    index = np.searchsorted(sorted_ids, ids)
    index = np.minimum(index, max(len(sorted_ids) - 1, 0))
    known = (sorted_ids[index] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise ValueError(f"{where}[{i}]['{field}']: unknown id {entries[i][field]!r}")
    return index.astype(np.int64)


def _unique_ids(entries: list, where: str) -> np.ndarray:
    ids = _column(entries, "id", where, np.int64, _int_problem)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1][0]
        i = int(np.flatnonzero(ids == dup)[1])
        raise ValueError(f"{where}[{i}]['id']: duplicate id {int(dup)}")
    return ids


def parse_coco_gt(coco_gt: dict, name: str = "coco_gt") -> CocoGroundTruth:
    """Check a COCO ground-truth dict and read it into columns.

    Args:
        coco_gt: dict with ``images`` (each with ``id``), ``categories`` (``id``,
            optional ``name``) and ``annotations`` (``id``, ``image_id``,
            ``category_id``, ``bbox`` xywh, optional ``area``, ``iscrowd``).
        name: how error messages call the dict.

    Returns:
        A :class:`CocoGroundTruth`.
    """
    images = _entries(coco_gt, "images", name)
    categories = _entries(coco_gt, "categories", name)
    anns = _entries(coco_gt, "annotations", name)
    image_ids = np.sort(_unique_ids(images, f"{name}['images']"))
    cat_raw = _unique_ids(categories, f"{name}['categories']")
    cat_order = np.argsort(cat_raw, kind="stable")
    names = [str(categories[i].get("name", categories[i]["id"])) for i in cat_order]
    where = f"{name}['annotations']"
    ids = _unique_ids(anns, where)
    boxes = _column(anns, "bbox", where, np.float64, _bbox_problem)
    box_area = (boxes[:, 2] * boxes[:, 3]).tolist()  # the default for a missing 'area'
    area = _column(anns, "area", where, np.float64, _number_problem, default=box_area)
    iscrowd = _column(anns, "iscrowd", where, np.int64, _flag_problem, default=0)
    return CocoGroundTruth(
        image_ids=image_ids,
        category_ids=cat_raw[cat_order],
        category_names=names,
        image=_index_of(_column(anns, "image_id", where, np.int64, _int_problem),
                        image_ids, anns, "image_id", where),
        category=_index_of(_column(anns, "category_id", where, np.int64, _int_problem),
                           cat_raw[cat_order], anns, "category_id", where),
        boxes=boxes,
        area=area,
        iscrowd=iscrowd != 0,
        ids=ids,
    )


def parse_coco_dets(coco_dets: list, gt: CocoGroundTruth, name: str = "coco_dets") -> CocoDetections:
    """Check a COCO results list against the ground truth and read it into columns.

    Args:
        coco_dets: list of dicts with ``image_id``, ``category_id``, ``bbox`` (xywh,
            finite, ``w, h >= 0``) and a finite ``score``. May be empty.
        gt: the parsed ground truth; ids it does not know are errors.
        name: how error messages call the list.

    Returns:
        A :class:`CocoDetections`.
    """
    if not isinstance(coco_dets, list):
        raise ValueError(f"{name} must be a list of dicts, got {type(coco_dets).__name__}")
    for i in (0, len(coco_dets) - 1) if coco_dets else ():
        if not isinstance(coco_dets[i], dict):
            raise ValueError(f"{name}[{i}] must be a dict, got {type(coco_dets[i]).__name__}")
    image = _column(coco_dets, "image_id", name, np.int64, _int_problem)
    category = _column(coco_dets, "category_id", name, np.int64, _int_problem)
    return CocoDetections(
        image=_index_of(image, gt.image_ids, coco_dets, "image_id", name),
        category=_index_of(category, gt.category_ids, coco_dets, "category_id", name),
        boxes=_column(coco_dets, "bbox", name, np.float64, _bbox_problem),
        scores=_column(coco_dets, "score", name, np.float64, _number_problem),
    )
