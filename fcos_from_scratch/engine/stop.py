"""Stopping a run cleanly: SIGINT (Ctrl-C) or SIGTERM during training.

While the training loop runs, :class:`StopRequest` turns the first signal into a
flag; the loop finishes the current step, writes ``last.pt`` (mid-epoch, so
``--resume=auto`` continues at the next batch) and raises
:class:`TrainingInterrupted`. A second signal stops at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Dict, Optional

from . import distributed as dist_utils


class TrainingInterrupted(RuntimeError):
    """SIGINT (Ctrl-C) or SIGTERM stopped training; ``last.pt`` was written first.

    Attributes:
        step: optimiser steps in ``last.pt``.
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        checkpoint: the path of ``last.pt``.
    """

    def __init__(self, step: int, signal_name: str, checkpoint: Path) -> None:
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint
        super().__init__(f"{signal_name} received: training stopped at step {step}; {checkpoint} is "
                         f"saved; continue with --resume=auto --out={checkpoint.parent}")


class StopRequest:
    """While training, SIGINT/SIGTERM only set a flag; the loop checkpoints and stops.

    A second signal stops at once (``KeyboardInterrupt``). Handlers can only be
    installed from the main thread; elsewhere signals keep their default action.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        """True on every rank once any rank's main process got a signal."""
        return dist_utils.broadcast_float(float(self.signum is not None)) > 0
