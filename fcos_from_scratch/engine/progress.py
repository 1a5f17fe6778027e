"""A small progress bar with ETA, and the ``metrics.jsonl`` writer.

The bar redraws one line with ``\\r`` on a terminal and prints a plain line every
``every`` steps when the output is a file or a pipe (CI logs stay readable)::

    epoch 3/12 [#########...........] 45/100 0:00:12<0:00:15 loss 1.234 cls 0.512 lr 2.0e-03
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, TextIO, Union


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (``?`` for an unknown or infinite duration)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_terms(values: Mapping[str, float]) -> str:
    """``name value`` pairs; a term called ``loss_cls`` is shown as ``cls``."""
    parts = []
    for name, value in values.items():
        short = name[5:] if name.startswith("loss_") else name
        parts.append(f"{short} {value:.2e}" if name == "lr" else f"{short} {value:.3f}")
    return " ".join(parts)


class ProgressBar:
    """Text progress bar for one epoch.

    Args:
        total: number of steps in the epoch.
        desc: prefix, e.g. ``"epoch 3/12"``.
        stream: where to write (default stderr).
        width: characters of the bar itself.
        every: on a non-terminal stream, print a line every ``every`` steps.
        enabled: False silences it (non-zero ranks, tests).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        stream: Optional[TextIO] = None,
        width: int = 20,
        every: int = 10,
        enabled: bool = True,
    ) -> None:
        self.total, self.desc, self.width = max(int(total), 1), desc, width
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.enabled = max(int(every), 1), enabled
        self.start = time.perf_counter()
        self.isatty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.count = 0
        self.last_line = ""

    def render(self, count: int, values: Mapping[str, float]) -> str:
        """The line shown after ``count`` finished steps."""
        elapsed = time.perf_counter() - self.start
        rate = elapsed / count if count else float("inf")
        eta = rate * (self.total - count)
        filled = int(self.width * min(count, self.total) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.desc} [{bar}] {count}/{self.total} {format_seconds(elapsed)}<{format_seconds(eta)}"
        terms = format_terms(values)
        return f"{line} {terms}" if terms else line

    def update(self, values: Mapping[str, float], n: int = 1) -> None:
        self.count += n
        self.last_line = self.render(self.count, values)
        if not self.enabled:
            return
        if self.isatty:
            self.stream.write("\r" + self.last_line)
            self.stream.flush()
        elif self.count % self.every == 0 or self.count == self.total:
            self.stream.write(self.last_line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.isatty:
            self.stream.write("\n")
            self.stream.flush()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the fact visible
    return value


class MetricsWriter:
    """Append-only ``metrics.jsonl``: one JSON object per line.

    Each record has a ``kind`` (``"train"`` per logged step, ``"epoch"`` per
    finished epoch, ``"eval"`` per evaluation) plus its values. Disabled writers
    (non-zero ranks) drop every record.
    """

    def __init__(self, path: Union[str, os.PathLike], enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        record: Dict[str, Any] = {"kind": kind, "time": round(time.time(), 3)}
        record.update({k: _jsonable(v) for k, v in values.items()})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop records of steps > ``step`` and cut-short epoch records (a resumed run re-logs
        them), and lines a killed write left unreadable. Returns how many unreadable lines
        were dropped."""
        if not self.enabled or not self.path.exists():
            return 0
        records, unreadable = read_metrics(self.path, with_unreadable=True)
        kept = [r for r in records if r.get("step", -1) <= step
                and not (r.get("partial") and r.get("step", -1) == step)]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)
        return unreadable


def read_metrics(path: Union[str, os.PathLike], with_unreadable: bool = False):
    """All records of a ``metrics.jsonl`` file, in order.

    A line that is not a JSON object (e.g. the last line of a run killed mid-write)
    is skipped; with ``with_unreadable`` the result is ``(records, skipped count)``.
    """
    records, unreadable = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                unreadable += 1
    return (records, unreadable) if with_unreadable else records
