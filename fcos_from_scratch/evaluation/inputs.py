"""Checking per-image prediction / target dicts, the library's own format.

One dict per image, torch tensors or numpy arrays:

* targets: ``boxes`` (M, 4) xyxy pixels, ``labels`` (M,) int >= 0, optional
  ``difficult`` (M,) bool, ``iscrowd`` (M,) bool, ``area`` (M,) float,
  ``image_id`` int;
* preds: ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,) float, ``labels`` (N,) int.

Each error names the list, the image index and the key, e.g.
``preds[3]['boxes']: x2 < x1 in row 5``.
"""

import numpy as np
import torch

_FLOAT_KEYS = ("boxes", "scores", "area")
_BOOL_KEYS = ("difficult", "iscrowd")


def to_numpy(value) -> np.ndarray:
    """A tensor (any device, detached) or array-like as a numpy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _check_array(array: np.ndarray, key: str, where: str) -> np.ndarray:
    if key == "boxes":
        if array.ndim != 2 or array.shape[1] != 4:
            if array.size == 0:
                return np.zeros((0, 4))
            raise ValueError(f"{where}: must have shape (N, 4), got {tuple(array.shape)}")
    elif array.ndim != 1:
        raise ValueError(f"{where}: must have shape (N,), got {tuple(array.shape)}")
    if key in _BOOL_KEYS:
        return array.astype(bool)
    if array.dtype.kind not in "iufb":
        raise ValueError(f"{where}: must be numeric, got dtype {array.dtype}")
    if key == "labels":
        if array.dtype.kind == "f" and not np.all(array == np.round(array)):
            raise ValueError(f"{where}: labels must be integers")
        if (array < 0).any():
            raise ValueError(f"{where}: labels must be >= 0, got {array.min()}")
        return array.astype(np.int64)
    array = array.astype(np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{where}: non-finite value in row {int(np.argwhere(bad)[0][0])}")
    if key == "boxes":
        for axis, name in ((0, "x"), (1, "y")):
            wrong = array[:, axis + 2] < array[:, axis]
            if wrong.any():
                raise ValueError(f"{where}: {name}2 < {name}1 (negative size) in row {int(np.argmax(wrong))}")
    return array


def check_per_image(items, name: str, required, optional=()) -> list:
    """Validate a list of per-image dicts and convert their arrays to numpy.

    Args:
        items: list (or tuple) of dicts.
        name: the argument's name, for error messages.
        required: keys every dict must have.
        optional: keys that are converted when present.

    Returns:
        A list of dicts of numpy arrays (boxes/scores/area float64, labels int64,
        flags bool); ``difficult`` defaults to all False. Other keys are copied.
    """
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{name} must be a list of per-image dicts, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{name}[{i}] must be a dict, got {type(item).__name__}")
        missing = [k for k in required if k not in item]
        if missing:
            raise ValueError(f"{name}[{i}] has no key {missing[0]!r} (needs {list(required)})")
        checked = dict(item)
        for key in tuple(required) + tuple(k for k in optional if k in item):
            checked[key] = _check_array(to_numpy(item[key]), key, f"{name}[{i}][{key!r}]")
        lengths = {k: len(checked[k]) for k in tuple(required) + tuple(optional) if k in checked}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{name}[{i}]: lengths differ between keys: {lengths}")
        if "difficult" in optional and "difficult" not in checked:
            checked["difficult"] = np.zeros(len(checked[required[0]]), dtype=bool)
        out.append(checked)
    return out
