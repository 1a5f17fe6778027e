"""Does the proxy task rank FPN-FCOS above the all-skip decoder, and how fast is a candidate?

    OMP_NUM_THREADS=1 python benchmarks/bench_nas_proxy.py                  # 5 seeds, the default proxy
    OMP_NUM_THREADS=1 python benchmarks/bench_nas_proxy.py --seeds 3 --extra fig4 --random 4

Scores, with the default ``ProxyConfig`` (the cached trunk is trained first if
missing), each named candidate over ``--seeds`` seeds (a seed sets the decoder's
initial weights and batch order; the split, crops and trunk are fixed):

* ``fpn``: plain FCOS's decoder, FPN + FCOSHead (the digits preset's, at the proxy width);
* ``all_skip``: every op a skip, every merge a sum (``nas.space.ALL_SKIP_ARCHITECTURE``);
* ``--extra`` names (e.g. ``fig4``) and ``--random N`` uniformly sampled architectures.

It prints the mean and standard deviation of R = -(L_cls + L_reg + L_ctr) on
meta-val, the gap FPN - all-skip in units of their pooled standard deviation, and
each candidate's process CPU time and wall time (1 thread; on a shared machine the
wall time is inflated by the other processes, the CPU time much less).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fcos_from_scratch.nas.proxy import ProxyConfig, evaluate_candidate, prepare  # noqa: E402
from fcos_from_scratch.nas.space import sample_architecture  # noqa: E402


def summarise(name, runs):
    rewards = [r["reward"] for r in runs]
    std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
    cpu = statistics.mean(r["cpu_s"] for r in runs)
    wall = statistics.mean(r["wall_s"] for r in runs)
    print(f"{name:10s} R = {statistics.mean(rewards):.4f} +- {std:.4f} (n={len(rewards)})  "
          f"cls {statistics.mean(r['loss_cls'] for r in runs):.3f} box {statistics.mean(r['loss_box'] for r in runs):.3f} "
          f"ctr {statistics.mean(r['loss_ctr'] for r in runs):.3f}  {cpu:.1f} CPU-s, {wall:.1f} wall-s per candidate",
          flush=True)
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--extra", nargs="*", default=[], help="more named architectures, e.g. fig4")
    parser.add_argument("--random", type=int, default=0, help="this many sampled architectures, each trained once")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ProxyConfig()
    start, wall = time.process_time(), time.perf_counter()
    data = prepare(config)
    print(f"prepare (split, crops, trunk, features): {time.process_time() - start:.1f} CPU-s, "
          f"{time.perf_counter() - wall:.1f} wall-s", flush=True)
    results = {}
    for name in ["fpn", "all_skip"] + list(args.extra):
        results[name] = summarise(name, [evaluate_candidate(name, data, config, seed=s) for s in range(args.seeds)])
    fpn, skip = results["fpn"], results["all_skip"]
    pooled = ((statistics.variance(fpn) + statistics.variance(skip)) / 2) ** 0.5 if args.seeds > 1 else float("nan")
    print(f"FPN - all-skip = {statistics.mean(fpn) - statistics.mean(skip):.4f} "
          f"= {(statistics.mean(fpn) - statistics.mean(skip)) / pooled:.1f} pooled standard deviations; "
          f"worst FPN seed {min(fpn):.4f} vs best all-skip seed {max(skip):.4f}")
    rng = random.Random(0)
    for k in range(args.random):
        summarise(f"random{k}", [evaluate_candidate(sample_architecture(rng), data, config, seed=0)])


if __name__ == "__main__":
    main()
