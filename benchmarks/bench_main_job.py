"""The main job end to end, with a profile of where its time goes.

    python benchmarks/bench_main_job.py                   # the default preset, fresh data cache
    python benchmarks/bench_main_job.py --keep-cache      # reuse $FCOS_DATA_ROOT's digits
    python benchmarks/bench_main_job.py --max_steps=200   # any --key=value of the trainer

Runs exactly what ``python -m fcos_from_scratch.train`` runs (the same ``fit``, the
same preset and overrides), with timers wrapped around its phases, and prints:

* wall time of the whole run and of each phase: data generation (building the
  digits cache), training steps split into *data* (waiting for the next batch),
  *forward* (model + loss), *backward* (backward pass, clipping, optimiser step),
  and *evaluation* (val and test);
* steps per second of the training loop;
* the final test metrics.

The phase timers read ``time.perf_counter`` around the engine's own functions, so
the run itself is unchanged (same steps, same numbers). Timings depend on the
machine and its load; compare shares and steps/s between runs on the same machine.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fcos_from_scratch.config import config_from_cli  # noqa: E402
from fcos_from_scratch.engine import builders, loop, trainer  # noqa: E402

TIMES = defaultdict(float)
COUNTS = defaultdict(int)


def timed(name, function):
    """``function`` wrapped so that its wall time is added to ``TIMES[name]``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start
            COUNTS[name] += 1
    return wrapper


def instrument() -> None:
    """Wrap the engine's phases with timers (the computation is unchanged)."""
    loop._clip_and_step = timed("backward", loop._clip_and_step)  # backward + clip + step
    loop._train_step = timed("step", loop._train_step)  # forward + backward
    trainer._evaluate = timed("evaluation", trainer._evaluate)
    builders.build_split = timed("datasets", builders.build_split)  # the cache is built here
    original_epoch = loop.train_one_epoch

    def epoch(*args, **kwargs):  # the loop's time outside _train_step is data loading
        start = time.perf_counter()
        result = original_epoch(*args, **kwargs)
        TIMES["loop"] += time.perf_counter() - start
        return result

    trainer.train_one_epoch = epoch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-cache", action="store_true",
                        help="reuse $FCOS_DATA_ROOT (default: a fresh temporary data root)")
    args, overrides = parser.parse_known_args(argv)
    scratch = None
    if not args.keep_cache:
        scratch = tempfile.mkdtemp(prefix="bench_main_job_")
        os.environ["FCOS_DATA_ROOT"] = scratch
    out = tempfile.mkdtemp(prefix="bench_main_job_run_")
    config = config_from_cli([f"--out={out}", "--progress=false"] + overrides)
    instrument()
    start = time.perf_counter()
    result = trainer.fit(config, stream=open(os.devnull, "w"))
    wall = time.perf_counter() - start

    forward = TIMES["step"] - TIMES["backward"]
    data = TIMES["loop"] - TIMES["step"]
    rows = [("data generation + datasets", TIMES["datasets"]), ("data (waiting for batches)", data),
            ("forward + loss", forward), ("backward + optimiser", TIMES["backward"]),
            ("evaluation (val + test)", TIMES["evaluation"])]
    other = wall - sum(t for _, t in rows)
    print(f"main job: {result.steps} steps, wall {wall:.1f} s ({wall / 60:.2f} min), "
          f"{result.steps / max(TIMES['loop'], 1e-9):.2f} steps/s in the training loop")
    for name, seconds in rows + [("other (model build, checkpoints, plots)", other)]:
        print(f"  {name:40s} {seconds:7.1f} s  {100 * seconds / wall:5.1f} %")
    print("test metrics: " + " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
    shutil.rmtree(out, ignore_errors=True)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
