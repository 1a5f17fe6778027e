"""Train a detector: ``python -m fcos_from_scratch.train [--preset=NAME] [--key=value ...]``.

With no arguments this trains the CPU-friendly ``digits`` preset on the embedded
digits dataset and writes ``runs/digits/metrics.json``. Examples::

    python -m fcos_from_scratch.train --epochs=4 --out=runs/quick
    python -m fcos_from_scratch.train --preset=voc_r18 --device=cuda
    python -m fcos_from_scratch.train --resume=auto            # continue runs/digits
    torchrun --nproc_per_node=2 -m fcos_from_scratch.train --preset=voc_r50

Every field of :class:`fcos_from_scratch.config.TrainConfig` and of the chosen
detector's config (e.g. ``FCOSConfig``) is an option; ``--help`` lists them with
the preset's values and what each means; ``--model NAME`` picks another detector.

A folder that already holds a run is never overwritten: continue it with
``--resume=auto``, replace it with ``--overwrite``, or pass another ``--out``.
Ctrl-C (or SIGTERM) saves ``last.pt`` and stops; ``--resume=auto`` continues at
the same batch. Errors are one ``error:`` line (exit 2: bad option, 1: failure).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Optional, Sequence

import dataclasses

from .command import run_command
from .config import PRESETS, config_from_cli, field_help, get_preset, non_defaults, parse_cli
from .engine.builders import resolve_device
from .engine.run_folder import check_run_folder
from .engine.trainer import fit

METRIC_ORDER = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl", "VOC_mAP")


def _options(config) -> str:
    """``--name=value  description`` for every field of one config dataclass."""
    help_text = field_help(type(config))
    lines = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
        lines.append(f"  --{f.name}={shown}\n      {help_text.get(f.name, '')}")
    return "\n".join(lines)


def usage(preset: str = "digits") -> str:
    """The ``--help`` text: presets, then every option with its value in ``preset``."""
    config = get_preset(preset)
    return (
        f"{__doc__}\npresets: {', '.join(PRESETS)}\n\n"
        f"training options (values of preset {preset!r}):\n{_options(config.train)}\n\n"
        f"{config.train.model} options (values of preset {preset!r}):\n{_options(config.model)}"
    )


def format_metrics(metrics: dict) -> str:
    """One ``key value`` line per metric, in COCO's order."""
    keys = [k for k in METRIC_ORDER if k in metrics] + [k for k in metrics if k not in METRIC_ORDER]
    return "\n".join(f"  {k:8s} {metrics[k]:.4f}" for k in keys)


def _is_rank0() -> bool:
    """Only the first process of a ``torchrun`` launch prints (rank from the env)."""
    return os.environ.get("RANK", "0") == "0"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, check, train; every failure is one ``error:`` line (see :mod:`..command`).

    Exit status: 0 done, 2 a bad option/path/checkpoint (nothing written), 1 a
    failure while training (NaN, unreadable image, no network), 130 interrupted
    (``last.pt`` saved first).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        return run_command(lambda: _print_help(argv))
    return run_command(lambda: _train(argv))


def _print_help(argv) -> int:
    print(usage(parse_cli([a for a in argv if a not in ("-h", "--help")])[0]))
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM before training starts: the same one-line answer as Ctrl-C


def _train(argv) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _run(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # the training loop installs its own
    try:
        return _run(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(argv) -> int:
    config = config_from_cli(argv)
    resolve_device(config.device)  # fail before building data if e.g. CUDA is missing
    check_run_folder(config.out, config.resume, config.overwrite)  # before anything is built
    if _is_rank0():
        print("config (differences from the defaults):\n" + (non_defaults(config) or "  none"))
    start = time.perf_counter()
    result = fit(config)
    if result.metrics and _is_rank0():
        minutes = (time.perf_counter() - start) / 60
        print(f"final metrics ({config.out}/metrics.json, {config.test_split} split), "
              f"{result.steps} steps in "
              f"{minutes:.1f} min:\n" + format_metrics(result.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
