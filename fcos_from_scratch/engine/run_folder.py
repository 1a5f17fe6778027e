"""The run folder (``--out``): never clobbered, checked before anything is written.

A folder "holds a run" when it contains any file a run writes (``RUN_FILES``).
Training into such a folder is refused unless the run resumes it (``--resume``)
or the user asks to replace it (``--overwrite``): re-running the default command
must never silently replace a good ``best.pt`` by a worse one, truncate
``metrics.jsonl`` or overwrite ``config.json``.

Interrupted atomic writes (``kill -9`` during ``torch.save``) leave hidden
temporary files next to the checkpoint, each the size of a checkpoint;
:func:`remove_stale_temp_files` clears them when a run starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

# Every file a training run writes into its folder (plots are regenerated anyway).
RUN_FILES = ("config.json", "last.pt", "best.pt", "metrics.jsonl", "metrics.json")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked; the message says what to do instead."""


def existing_run_files(out: Union[str, os.PathLike]) -> List[str]:
    """Names of the :data:`RUN_FILES` present in ``out`` (empty if it holds no run)."""
    out = Path(out)
    return [name for name in RUN_FILES if (out / name).exists()]


def check_run_folder(out: Union[str, os.PathLike], resume: str = "", overwrite: bool = False) -> None:
    """Refuse to start a fresh run in a folder that already holds one.

    Args:
        out: the run folder (``--out``).
        resume: ``--resume`` (any value means the folder is being continued).
        overwrite: ``--overwrite``: replacing the previous run is what the user wants.

    Raises:
        RunFolderError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set,
            or ``out`` exists and is not a folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out={str(out)!r} is a file, not a folder; choose another --out")
    found = existing_run_files(out)
    if found and not resume and not overwrite:
        raise RunFolderError(
            f"--out={str(out)!r} already holds a run ({', '.join(found)}); resume it with "
            f"--resume=auto, replace it with --overwrite, or choose another --out")


def check_writable(out: Union[str, os.PathLike]) -> None:
    """Create ``out`` if needed and make sure a file can be written in it.

    Raises:
        RunFolderError: naming the folder and the operating system's reason.
    """
    out = Path(out)
    probe = out / f".write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunFolderError(f"--out={str(out)!r} is not a writable folder "
                             f"({err.strerror or err}); choose another --out") from None


def clear_run_files(out: Union[str, os.PathLike]) -> List[str]:
    """Delete the :data:`RUN_FILES` of a previous run (``--overwrite``); returns their names."""
    out = Path(out)
    found = existing_run_files(out)
    for name in found:
        (out / name).unlink()
    return found


def remove_stale_temp_files(out: Union[str, os.PathLike]) -> List[str]:
    """Delete leftovers of interrupted atomic writes (``.last.pt.*.tmp`` and the like).

    Only one run writes into a folder, so at its start every such file is stale.
    """
    out = Path(out)
    if not out.is_dir():
        return []
    removed = []
    for path in [*out.glob(".*.tmp"), *out.glob("*.jsonl.tmp")]:
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed
