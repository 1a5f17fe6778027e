"""Time ``deform_conv2d`` against torchvision's C++ kernel, forward and forward+backward.

    /path/to/venv-with-torchvision/bin/python benchmarks/bench_deform_conv.py --threads 1

Ours and torchvision's are timed in the same process, interleaved run by run, and
the medians compared (``bench_ops.time_pair``), so a noisy shared machine moves
both alike. Shapes are those of a detection decoder: a 3 x 3 DCNv2 (mask, padding 1)
on FPN-like maps, with one and with two offset groups.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_ops import time_pair  # noqa: E402  (interleaved medians, shared with bench_ops)
from fcos_from_scratch.ops import deform_conv2d  # noqa: E402

try:  # torchvision is a baseline only, never a dependency
    from torchvision.ops import deform_conv2d as tv_deform_conv2d
except Exception:  # ImportError, or its compiled ops failing to load
    tv_deform_conv2d = None

# (name, B, C_in, C_out, H, W, offset groups)
SHAPES = [
    ("P3-like 64ch 48x48", 2, 64, 64, 48, 48, 1),
    ("P3-like 64ch 48x48 G_off=2", 2, 64, 64, 48, 48, 2),
    ("P5-like 128ch 16x16", 2, 128, 128, 16, 16, 1),
    ("big 256ch 32x32 G_off=2", 1, 256, 256, 32, 32, 2),
]


def make_call(fn, tensors, backward):
    leaves = [t.clone().requires_grad_(backward) for t in tensors]

    def run():
        x, off, w, b, m = leaves
        out = fn(x, off, w, b, padding=1, mask=m)
        if backward:
            for leaf in leaves:
                leaf.grad = None
            out.sum().backward()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    version = "not importable" if tv_deform_conv2d is None else sys.modules["torchvision"].__version__
    print(f"torch {torch.__version__}, threads {args.threads}, torchvision {version}")
    print(f"{'shape':<30} {'pass':<8} {'ours ms':>9} {'tv ms':>9} {'ours/tv':>8}")
    for name, B, C, C_out, H, W, G in SHAPES:
        tensors = (torch.randn(B, C, H, W, generator=g),
                   torch.randn(B, 2 * G * 9, H, W, generator=g) * 2,
                   torch.randn(C_out, C, 3, 3, generator=g) * 0.05,
                   torch.randn(C_out, generator=g),
                   torch.rand(B, G * 9, H, W, generator=g))
        for backward in (False, True):
            ours = make_call(deform_conv2d, tensors, backward)
            theirs = tv_deform_conv2d and make_call(tv_deform_conv2d, tensors, backward)
            with torch.enable_grad() if backward else torch.no_grad():
                ours_s, their_s = time_pair(ours, theirs or None, args.repeats)
            ratio = f"{ours_s / their_s:8.2f}" if their_s else f"{'-':>8}"
            their_ms = f"{their_s * 1e3:9.2f}" if their_s else f"{'-':>9}"
            print(f"{name:<30} {'fwd+bwd' if backward else 'fwd':<8} {ours_s * 1e3:9.2f} "
                  f"{their_ms} {ratio}")


if __name__ == "__main__":
    main()
