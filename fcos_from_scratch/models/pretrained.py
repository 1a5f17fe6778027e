"""Load pretrained weights from a local ``.pth`` file or a URL (downloaded once, checked).

``--pretrained PATH_OR_URL`` accepts

* a local path: loaded as is;
* an ``http(s)://`` or ``file://`` URL: downloaded once into the cache directory
  (``$FCOS_FROM_SCRATCH_CACHE``, else ``~/.cache/fcos_from_scratch``), then read from
  there. The download goes to a temporary file in the same directory and is renamed
  into place only after its checksum passed, so an interrupted download never leaves
  a broken file behind.

Checksums follow torchvision's file naming: ``resnet18-f37072fd.pth`` promises that
the file's SHA-256 starts with ``f37072fd``. A file whose name carries no such
prefix is not checked unless ``sha256=`` is given. Files already in the cache are
trusted (as ``torch.hub`` does) and never downloaded again.

Checkpoints are read with ``torch.load(weights_only=True)``: a plain state dict, or
a dict holding one under ``"model"`` or ``"state_dict"``.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

__all__ = [
    "CACHE_ENV",
    "default_cache_dir",
    "is_url",
    "sha256_prefix_from_name",
    "download_to_cache",
    "resolve_checkpoint",
    "load_state_dict_file",
    "load_pretrained",
]

CACHE_ENV = "FCOS_FROM_SCRATCH_CACHE"
_URL_SCHEMES = ("http", "https", "file")
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")  # torchvision: name-<sha256 prefix>.pth
_CHUNK = 1 << 20
_MAX_LISTED_KEYS = 10


def default_cache_dir() -> Path:
    """``$FCOS_FROM_SCRATCH_CACHE`` if set, else ``~/.cache/fcos_from_scratch``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fcos_from_scratch"


def is_url(path_or_url: str) -> bool:
    """True for ``http://``, ``https://`` and ``file://`` URLs."""
    return urllib.parse.urlparse(str(path_or_url)).scheme in _URL_SCHEMES


def sha256_prefix_from_name(filename: str) -> Optional[str]:
    """The hex SHA-256 prefix a torchvision-style name promises, or None.

    ``"resnet18-f37072fd.pth"`` -> ``"f37072fd"``; ``"weights.pth"`` -> None.
    """
    match = _HASH_IN_NAME.search(filename)
    return match.group(1) if match else None


def _url_filename(url: str) -> str:
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name:
        raise ValueError(f"URL {url!r} does not end in a file name")
    return name


def _stream_to_temp(url: str, directory: Path) -> Tuple[Path, str]:
    """Download ``url`` into a temporary file in ``directory``; return it and its SHA-256."""
    digest = hashlib.sha256()
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".download-", delete=False)
    temp = Path(handle.name)
    try:
        with handle, urllib.request.urlopen(url) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                handle.write(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, digest.hexdigest()


def download_to_cache(url: str, cache_dir: Union[str, Path, None] = None,
                      sha256: Optional[str] = None, check_hash: bool = True) -> Path:
    """Return the cached copy of ``url``, downloading it first if it is not cached.

    Args:
        url: http(s):// or file:// URL of the file.
        cache_dir: where to keep it; default :func:`default_cache_dir`.
        sha256: expected SHA-256 (full or a prefix); default: the prefix in the
            file name (torchvision's convention), if any.
        check_hash: set False to skip the checksum.

    Returns:
        Path of the cached file, ``cache_dir / <file name of the URL>``.

    Raises:
        ValueError: the downloaded file's checksum does not match (nothing is cached).
    """
    if not is_url(url):
        raise ValueError(f"url must be an http(s):// or file:// URL, got {url!r}")
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = directory / _url_filename(url)
    if target.is_file():
        return target  # cache hit: trusted, never downloaded again
    directory.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {url} to {target}", file=sys.stderr)
    temp, digest = _stream_to_temp(url, directory)
    expected = (sha256 or sha256_prefix_from_name(target.name) or "").lower()
    if check_hash and expected and not digest.startswith(expected):
        temp.unlink(missing_ok=True)
        raise ValueError(
            f"checksum mismatch for {url}: its SHA-256 is {digest}, expected it to start "
            f"with {expected!r}; the file was not cached"
        )
    os.replace(temp, target)  # atomic on one file system
    return target


def resolve_checkpoint(path_or_url: Union[str, Path], cache_dir: Union[str, Path, None] = None,
                       sha256: Optional[str] = None, check_hash: bool = True) -> Path:
    """Local path of a checkpoint: the path itself, or the cached download of a URL.

    Raises:
        FileNotFoundError: a local path that does not exist.
    """
    if is_url(str(path_or_url)):
        return download_to_cache(str(path_or_url), cache_dir, sha256, check_hash)
    path = Path(path_or_url).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint {str(path)!r} does not exist")
    return path


def load_state_dict_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a state dict (tensors by key) from a ``.pth`` file, safely (weights_only).

    Raises:
        ValueError: the file holds something other than a state dict.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in ("model", "state_dict"):
            if _is_state_dict(obj.get(key)):
                return obj[key]
    if not _is_state_dict(obj):
        raise ValueError(
            f"checkpoint {str(path)!r} holds no state dict: expected a dict of tensors, "
            "or one under the key 'model' or 'state_dict'"
        )
    return obj


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _compare_keys(model: nn.Module, state_dict: Dict[str, torch.Tensor]
                  ) -> Tuple[List[str], List[str], List[str]]:
    """Missing keys, unexpected keys and shape mismatches of ``state_dict`` vs ``model``."""
    expected = model.state_dict()
    given = dict(state_dict)
    for key in list(given):
        # A frozen BatchNorm has running stats but no num_batches_tracked: not an error.
        prefix = key[: -len("num_batches_tracked")]
        if key.endswith("num_batches_tracked") and key not in expected \
                and prefix + "running_mean" in expected:
            del given[key]
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in given if k in expected and given[k].shape != expected[k].shape
    ]
    return missing, unexpected, mismatched


def _listing(title: str, keys: List[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = f", ... ({len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else ""
    return f"{title} ({len(keys)}): [{shown}{more}]"


def load_pretrained(model: nn.Module, path_or_url: Union[str, Path], strict: bool = True,
                    cache_dir: Union[str, Path, None] = None, sha256: Optional[str] = None,
                    check_hash: bool = True) -> Tuple[List[str], List[str]]:
    """Load a checkpoint into ``model``, failing with the file name and the bad keys.

    Args:
        model: the module to fill (a classifier with torchvision's key names, say).
        path_or_url: local ``.pth`` path or http(s)/file URL (see module docstring).
        strict: require the keys to match exactly (shapes must match either way).
        cache_dir, sha256, check_hash: passed to :func:`download_to_cache`.

    Returns:
        (missing_keys, unexpected_keys): both empty when ``strict``.

    Raises:
        ValueError: the keys (strict) or shapes do not match; raised before any
            tensor of ``model`` is changed.
    """
    path = resolve_checkpoint(path_or_url, cache_dir, sha256, check_hash)
    state_dict = load_state_dict_file(path)
    missing, unexpected, mismatched = _compare_keys(model, state_dict)
    if mismatched or (strict and (missing or unexpected)):
        parts = [_listing("missing keys", missing), _listing("unexpected keys", unexpected)]
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=False)
    return missing, unexpected
