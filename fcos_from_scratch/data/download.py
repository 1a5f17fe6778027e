"""Resumable downloads with a checksum, for the scripts in ``data_scripts/``.

Only the standard library (``urllib``). Nothing here runs at import time, and
nothing in the package or the tests downloads from the network: tests point these
functions at archives they build themselves (``file://`` URLs or plain paths).

* **Resume**: a partial ``<name>.part`` is continued with an HTTP ``Range`` request
  (for local sources, by seeking); a server that ignores ``Range`` restarts it.
* **Checksum**: the finished file's MD5 must match, else it is deleted and the
  error says so (run again to re-download).
* **Progress**: one line on stderr, updated in place.
* **Offline**: a clear message that names the URL and says what to do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

CHUNK = 1 << 20  # 1 MiB


class DownloadError(RuntimeError):
    """A download that cannot finish; the message says why and what to do."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_path(source: str) -> Optional[Path]:
    """The file behind a ``file://`` URL or a plain path; ``None`` for remote URLs."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(source)
    return None


def _open(source: str, offset: int) -> Tuple[BinaryIO, Optional[int], bool]:
    """Open ``source`` at byte ``offset``: (stream, total size or None, resumed?)."""
    local = _local_path(source)
    if local is not None:
        if not local.is_file():
            raise DownloadError(f"{local}: source file not found")
        stream = open(local, "rb")
        stream.seek(offset)
        return stream, local.stat().st_size, True
    request = urllib.request.Request(source, headers={"User-Agent": "fcos_from_scratch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range past the end: the part file is already whole
            return open(os.devnull, "rb"), offset, True
        raise DownloadError(f"{source}: server answered HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        host = urllib.parse.urlparse(source).netloc
        raise DownloadError(
            f"cannot reach {host} to download {source} ({getattr(err, 'reason', err)}).\n"
            "You seem to be offline. Download the file by hand, put it in a folder and pass "
            "--source-dir FOLDER, or train on the embedded dataset instead: "
            "python -m fcos_from_scratch.train --dataset=digits (no download needed)."
        ) from err
    resumed = offset > 0 and response.status == 206
    length = response.headers.get("Content-Length")
    total = (int(length) + (offset if resumed else 0)) if length else None
    return response, total, resumed


def _progress(name: str, done: int, total: Optional[int], quiet: bool) -> None:
    if quiet:
        return
    if total:
        sys.stderr.write(f"\r{name}: {done / 2**20:8.1f} / {total / 2**20:.1f} MiB ({100 * done / total:5.1f} %)")
    else:
        sys.stderr.write(f"\r{name}: {done / 2**20:8.1f} MiB")
    sys.stderr.flush()


def download_file(source: str, dest: Path, md5: Optional[str] = None, quiet: bool = False) -> Path:
    """Download ``source`` (URL, ``file://`` URL or path) to ``dest``, resuming and checking MD5.

    Returns:
        ``dest``. An existing ``dest`` with the right checksum is not downloaded again.

    Raises:
        DownloadError: offline, HTTP error, or checksum mismatch (the bad file is
            deleted so the next run starts clean).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    stream, total, resumed = _open(source, offset)
    if not resumed:
        offset = 0
    with stream, open(part, "ab" if resumed else "wb") as out:
        done = offset
        for block in iter(lambda: stream.read(CHUNK), b""):
            out.write(block)
            done += len(block)
            _progress(dest.name, done, total, quiet)
    if not quiet:
        sys.stderr.write("\n")
    if md5 is not None:
        actual = md5sum(part)
        if actual != md5:
            part.unlink()
            raise DownloadError(f"{dest.name}: checksum mismatch (MD5 {actual}, expected {md5}); "
                                "the file was deleted, run the script again to re-download")
    os.replace(part, dest)
    return dest


def extract(archive: Path, dest: Path) -> None:
    """Unpack a .tar/.tar.gz/.zip into ``dest``, refusing members that escape it."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            names = handle.namelist()
            _check_members(names, root, archive)
            handle.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as handle:
            _check_members(handle.getnames(), root, archive)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: also refuse links out
                handle.extractall(dest, filter="data")
            else:
                handle.extractall(dest)
    else:
        raise DownloadError(f"{archive}: not a tar or zip archive")


def _check_members(names, root: Path, archive: Path) -> None:
    for name in names:
        target = (root / name).resolve()
        if root != target and root not in target.parents:
            raise DownloadError(f"{archive}: member {name!r} would be written outside {root}")


def fetch_all(items, root: Path, keep_archives: bool = True, source_dir: Optional[str] = None,
              quiet: bool = False) -> None:
    """Download (or take from ``source_dir``) each ``(url, filename, md5)`` and extract it into ``root``."""
    root = Path(root).expanduser()
    downloads = root / "downloads"
    for url, filename, md5 in items:
        source = str(Path(source_dir) / filename) if source_dir else url
        archive = download_file(source, downloads / filename, md5, quiet=quiet)
        if not quiet:
            print(f"extracting {archive.name} into {root}")
        extract(archive, root)
        if not keep_archives:
            archive.unlink()
    if not keep_archives:
        shutil.rmtree(downloads, ignore_errors=True)
