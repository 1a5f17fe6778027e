"""Train a detector: ``python -m fcos_from_scratch.train [--preset=NAME] [--key=value ...]``.

With no arguments this trains the CPU-friendly ``digits`` preset on the embedded
digits dataset and writes ``runs/digits/metrics.json``. Examples::

    python -m fcos_from_scratch.train --epochs=4 --out=runs/quick
    python -m fcos_from_scratch.train --preset=voc_r18 --device=cuda
    python -m fcos_from_scratch.train --resume=auto            # continue runs/digits
    torchrun --nproc_per_node=2 -m fcos_from_scratch.train --preset=voc_r50

Every field of :class:`fcos_from_scratch.config.TrainConfig` is an option; run
with ``--help`` to list them with the preset's values.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, Sequence

from .config import PRESETS, TrainConfig, config_from_cli, describe, get_preset, parse_cli
from .engine.builders import resolve_device
from .engine.loop import NonFiniteLossError
from .engine.trainer import fit

METRIC_ORDER = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl", "VOC_mAP")


def usage(preset: str = "digits") -> str:
    """The ``--help`` text: presets and every option with its value in ``preset``."""
    config = get_preset(preset)
    return (
        f"{__doc__}\npresets: {', '.join(PRESETS)}\n\noptions (values of preset {preset!r}):\n"
        + describe(config)
    )


def format_metrics(metrics: dict) -> str:
    """One ``key value`` line per metric, in COCO's order."""
    keys = [k for k in METRIC_ORDER if k in metrics] + [k for k in metrics if k not in METRIC_ORDER]
    return "\n".join(f"  {k:8s} {metrics[k]:.4f}" for k in keys)


def _is_rank0() -> bool:
    """Only the first process of a ``torchrun`` launch prints (rank from the env)."""
    return os.environ.get("RANK", "0") == "0"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if "-h" in argv or "--help" in argv:
            print(usage(parse_cli([a for a in argv if a not in ("-h", "--help")])[0]))
            return 0
        config = config_from_cli(argv)
        resolve_device(config.device)  # fail before building data if e.g. CUDA is missing
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if _is_rank0():
        print("config (differences from the defaults):\n" + (describe(config, TrainConfig()) or "  none"))
    start = time.perf_counter()
    try:
        result = fit(config)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result.metrics and _is_rank0():
        minutes = (time.perf_counter() - start) / 60
        print(f"final metrics ({config.out}/metrics.json), {result.steps} steps in "
              f"{minutes:.1f} min:\n" + format_metrics(result.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
