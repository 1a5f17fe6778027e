"""Time nms, batched_nms and soft_nms against torchvision, more cases than bench_ops.

    python benchmarks/bench_ops_nms.py              # our timings only
    /path/to/venv-with-torchvision/bin/python benchmarks/bench_ops_nms.py

Ours and torchvision's are timed in the same process, interleaved run by run.
``--stat median`` (default) compares medians like ``bench_ops``; on a machine
shared with other jobs ``--stat min`` is steadier, and ``--clock cpu`` counts only
this process's CPU time (``time.process_time``, all threads), which other jobs
barely move. Goal (issue 2): ours / torchvision <= 3 for nms and batched_nms at
1k-5k boxes, uniform and clustered, 2 threads.
torchvision's CPU nms is a single-threaded C++ loop; its batched_nms runs one nms
on offset boxes up to 1000 boxes and one nms per category above.

Box sets: "bench" are ``bench_ops``'s generators; "refs" are those of
``tests/reference/make_nms_refs.py`` (uniform: 16-100 px sides in a 1000 x 1000
image; clustered: 20 objects of 50-300 px, every coordinate jittered by 10% of
the object's size). batched_nms uses ``--classes`` random categories.
"""

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))

import bench_ops  # noqa: E402  (box generators, torchvision if importable)
import make_nms_refs  # noqa: E402  (the test suite's box generators)
from fcos_from_scratch import ops  # noqa: E402

GENERATORS = {
    "bench": (bench_ops.uniform_boxes, bench_ops.clustered_boxes),
    "refs": (make_nms_refs.uniform_boxes, make_nms_refs.clustered_boxes),
}


def nms_cases(family, num_classes, generator, sizes=(1000, 2000, 5000)):
    """(name, our call, torchvision's call or None) for nms and batched_nms."""
    tv = bench_ops.tv_ops
    rows = []
    for kind, make in zip(("uniform", "clustered"), GENERATORS[family]):
        for n in sizes:
            boxes, scores = make(n, generator), torch.rand(n, generator=generator)
            idxs = torch.randint(num_classes, (n,), generator=generator)
            rows.append((f"nms {family} {kind} {n}",
                         lambda b=boxes, s=scores: ops.nms(b, s, 0.5),
                         tv and (lambda b=boxes, s=scores: tv.nms(b, s, 0.5))))
            rows.append((f"batched_nms {family} {kind} {n} K={num_classes}",
                         lambda b=boxes, s=scores, i=idxs: ops.batched_nms(b, s, i, 0.5),
                         tv and (lambda b=boxes, s=scores, i=idxs: tv.batched_nms(b, s, i, 0.5))))
    return rows


def time_pair(ours, theirs, repeats, stat="median", clock="wall"):
    """Seconds of ``ours`` and ``theirs`` (None when missing), interleaved."""
    now = time.perf_counter if clock == "wall" else time.process_time
    reduce = statistics.median if stat == "median" else min
    times = {ours: [], theirs: []}
    for _ in range(repeats + 1):  # the first round warms up
        for call in (ours, theirs) if theirs is not None else (ours,):
            start = now()
            call()
            times[call].append(now() - start)
    return reduce(times[ours][1:]), (reduce(times[theirs][1:]) if theirs else None)


def soft_nms_cases(generator):
    """soft_nms rows (no torchvision baseline: torchvision has no Soft-NMS)."""
    rows = []
    for n in (1000, 2000):
        boxes = make_nms_refs.clustered_boxes(n, generator)
        scores = torch.rand(n, generator=generator)
        for method in ("linear", "gaussian"):
            rows.append((f"soft_nms {method} clustered {n}",
                         lambda b=boxes, s=scores, m=method: ops.soft_nms(b, s, method=m), None))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, nargs="+", default=[10])
    parser.add_argument("--families", nargs="+", default=["bench", "refs"], choices=GENERATORS)
    parser.add_argument("--stat", default="median", choices=["median", "min"])
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument("--no-soft", action="store_true", help="skip the soft_nms rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    tv = "not importable" if bench_ops.tv_ops is None else sys.modules["torchvision"].__version__
    print(f"torch {torch.__version__}, threads {args.threads}, torchvision {tv}, "
          f"{args.stat} of {args.repeats} runs, {args.clock} clock")
    print(f"{'op':<46} {'ours ms':>9} {'tv ms':>9} {'ours/tv':>8}")
    rows = [row for family in args.families for k in args.classes
            for row in nms_cases(family, k, generator)]
    if not args.no_soft:
        rows += soft_nms_cases(generator)
    for name, ours, theirs in rows:
        ours_s, their_s = time_pair(ours, theirs or None, args.repeats, args.stat, args.clock)
        ratio = f"{ours_s / their_s:8.2f}" if their_s else f"{'-':>8}"
        their_ms = f"{their_s * 1e3:9.3f}" if their_s else f"{'-':>9}"
        print(f"{name:<46} {ours_s * 1e3:9.3f} {their_ms} {ratio}")


if __name__ == "__main__":
    main()
