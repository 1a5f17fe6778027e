"""Time ``roi_align`` (512 RoIs on 2 x 256 x 64 x 64, 7 x 7) against torchvision.

    python benchmarks/bench_ops_roi_align.py                  # our timings only
    /path/to/venv-with-torchvision/bin/python benchmarks/bench_ops_roi_align.py

Ours and torchvision's are timed in the same process, interleaved run by run, and
the medians compared, so a noisy shared machine moves both alike. Goal (issue 2):
ours / torchvision <= 3 with 2 threads. torchvision's CPU kernel is single-threaded
C++; ours is a few dozen tensor ops ending in one fused gather-and-weighted-sum.

RoI sets (boxes in image pixels of a 512 x 512 image, spatial_scale 1/8):
  small    sides uniform in [1, 121) px, as in benchmarks/bench_ops.py (~1-15 map pixels);
  mixed    sides log-uniform in [16, 256] px, like RPN proposals (2-32 map pixels);
  large    sides uniform in [256, 512] px (32-64 map pixels: up to 10 x 10 samples a bin).
"""

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_ops import time_pair  # noqa: E402  (interleaved medians, shared with bench_ops)
from fcos_from_scratch.ops import roi_align  # noqa: E402

try:  # torchvision is a baseline only, never a dependency
    from torchvision.ops import roi_align as tv_roi_align
except Exception:  # ImportError, or its compiled ops failing to load
    tv_roi_align = None

IMAGE, K, B = 512.0, 512, 2


def make_rois(kind, generator):
    """(K, 5) RoIs ``[batch_index, x1, y1, x2, y2]`` in image pixels."""
    u = torch.rand(K, 2, generator=generator)
    if kind == "small":
        sides = u * 120 + 1
    elif kind == "mixed":
        sides = torch.exp(math.log(16) + u * (math.log(256) - math.log(16)))
    else:
        sides = 256 + u * 256
    centres = torch.rand(K, 2, generator=generator) * IMAGE
    index = torch.randint(B, (K, 1), generator=generator).float()
    return torch.cat([index, centres - sides / 2, centres + sides / 2], dim=1)


def forward_and_backward(fn, features, rois, args):
    """A call that runs ``fn`` forward and backward (input gradient only)."""
    leaf = features.clone().requires_grad_(True)

    def run():
        leaf.grad = None
        fn(leaf, rois, *args).sum().backward()
    return run


def cases(generator):
    """(name, our call, torchvision's call or None) for every timed configuration."""
    features = torch.randn(B, 256, 64, 64, generator=generator)
    rows = []
    for kind in ("small", "mixed", "large"):
        rois = make_rois(kind, generator)
        for ratio, aligned in ((-1, False), (-1, True), (2, True)):
            args = (7, 1 / 8, ratio, aligned)
            rows.append((f"{kind} sr={ratio} aligned={aligned}",
                         lambda r=rois, a=args: roi_align(features, r, *a),
                         tv_roi_align and (lambda r=rois, a=args: tv_roi_align(features, r, *a))))
        args = (7, 1 / 8, -1, True)
        rows.append((f"{kind} sr=-1 aligned=True fwd+bwd",
                     forward_and_backward(roi_align, features, rois, args),
                     tv_roi_align and forward_and_backward(tv_roi_align, features, rois, args)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    version = "not importable" if tv_roi_align is None else sys.modules["torchvision"].__version__
    print(f"torch {torch.__version__}, threads {args.threads}, torchvision {version}")
    print(f"roi_align: {K} RoIs on ({B}, 256, 64, 64), output 7x7, spatial_scale 1/8")
    print(f"{'RoIs / settings':<36} {'ours ms':>9} {'tv ms':>9} {'ours/tv':>8}")
    for name, ours, theirs in cases(generator):
        with torch.enable_grad() if "bwd" in name else torch.no_grad():
            ours_s, their_s = time_pair(ours, theirs or None, args.repeats)
        ratio = f"{ours_s / their_s:8.2f}" if their_s else f"{'-':>8}"
        their_ms = f"{their_s * 1e3:9.2f}" if their_s else f"{'-':>9}"
        print(f"{name:<36} {ours_s * 1e3:9.2f} {their_ms} {ratio}")


if __name__ == "__main__":
    main()
