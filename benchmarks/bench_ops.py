"""Time our ops and, when torchvision is importable, print ours / torchvision ratios.

    python benchmarks/bench_ops.py              # our timings only
    /path/to/venv-with-torchvision/bin/python benchmarks/bench_ops.py

Both implementations are timed in the same process, interleaved run by run, and
the median of each is compared, so a noisy shared machine moves both equally.
Goals (issue 2): nms and batched_nms <= 3x at 1k-5k boxes, uniform and clustered;
box_iou <= 1.1x; roi_align <= 3x. batched_nms (20 classes) <= 2x. On a busy
2-core machine, ``--threads 1`` gives the steadier ratios (thread hand-offs stall).
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fcos_from_scratch import ops  # noqa: E402

try:  # torchvision is a baseline only, never a dependency
    import torchvision.ops as tv_ops
except Exception:  # ImportError, or its compiled ops failing to load
    tv_ops = None


def uniform_boxes(n, generator, image_size=1000.0, max_side=100.0):
    """n boxes spread over an image_size x image_size image."""
    xy = torch.rand(n, 2, generator=generator) * image_size
    wh = torch.rand(n, 2, generator=generator) * max_side + 1
    return torch.cat([xy, xy + wh], dim=1)


def clustered_boxes(n, generator, num_objects=20, image_size=1000.0):
    """n boxes jittered around a few objects: the case where NMS suppresses a lot."""
    centres = torch.rand(num_objects, 2, generator=generator) * image_size
    sizes = torch.rand(num_objects, 2, generator=generator) * 150 + 20
    which = torch.randint(num_objects, (n,), generator=generator)
    jitter = torch.randn(n, 4, generator=generator) * 0.1
    cxcy = centres[which] + jitter[:, :2] * sizes[which]
    wh = sizes[which] * (1 + jitter[:, 2:]).clamp(min=0.3)
    return torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=1)


def time_pair(ours, theirs, repeats):
    """Median seconds of ``ours`` and ``theirs`` (None when missing), interleaved."""
    ours()
    if theirs is not None:
        theirs()
    ours_times, their_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        ours()
        ours_times.append(time.perf_counter() - start)
        if theirs is not None:
            start = time.perf_counter()
            theirs()
            their_times.append(time.perf_counter() - start)
    return statistics.median(ours_times), (statistics.median(their_times) if their_times else None)


def cases(generator):
    """(name, our call, torchvision's call) for every benchmarked op."""
    rows = []
    for kind, make in (("uniform", uniform_boxes), ("clustered", clustered_boxes)):
        for n in (1000, 2000, 5000):
            boxes, scores = make(n, generator), torch.rand(n, generator=generator)
            idxs = torch.randint(20, (n,), generator=generator)
            rows.append((f"nms {kind} {n}", lambda b=boxes, s=scores: ops.nms(b, s, 0.5),
                         tv_ops and (lambda b=boxes, s=scores: tv_ops.nms(b, s, 0.5))))
            rows.append((f"batched_nms {kind} {n}",
                         lambda b=boxes, s=scores, i=idxs: ops.batched_nms(b, s, i, 0.5),
                         tv_ops and (lambda b=boxes, s=scores, i=idxs: tv_ops.batched_nms(b, s, i, 0.5))))
    for n in (1000, 2000):
        boxes, scores = clustered_boxes(n, generator), torch.rand(n, generator=generator)
        rows.append((f"soft_nms linear {n}", lambda b=boxes, s=scores: ops.soft_nms(b, s), None))
        rows.append((f"soft_nms gaussian {n}",
                     lambda b=boxes, s=scores: ops.soft_nms(b, s, method="gaussian"), None))
    boxes1, boxes2 = uniform_boxes(3000, generator), uniform_boxes(2000, generator)
    rows.append(("box_iou 3000x2000", lambda: ops.box_iou(boxes1, boxes2),
                 tv_ops and (lambda: tv_ops.box_iou(boxes1, boxes2))))
    features = torch.randn(2, 256, 64, 64, generator=generator)
    rois = uniform_boxes(512, generator, image_size=400.0, max_side=120.0)
    rois = torch.cat([torch.randint(2, (512, 1), generator=generator).float(), rois], dim=1)
    for aligned in (False, True):
        rows.append((f"roi_align 512x(2,256,64,64) 7x7 aligned={aligned}",
                     lambda a=aligned: ops.roi_align(features, rois, 7, 1 / 8, -1, a),
                     tv_ops and (lambda a=aligned: tv_ops.roi_align(features, rois, 7, 1 / 8, -1, a))))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="run only rows whose name contains this")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, threads {args.threads}, "
          f"torchvision {'not importable' if tv_ops is None else sys.modules['torchvision'].__version__}")
    print(f"{'op':<46} {'ours ms':>9} {'tv ms':>9} {'ours/tv':>8}")
    with torch.no_grad():
        for name, ours, theirs in cases(generator):
            if args.only not in name:
                continue
            try:
                ours_s, their_s = time_pair(ours, theirs or None, args.repeats)
            except AttributeError as error:  # an op not written yet
                print(f"{name:<46} skipped: {error}")
                continue
            ratio = f"{ours_s / their_s:8.2f}" if their_s else f"{'-':>8}"
            their_ms = f"{their_s * 1e3:9.2f}" if their_s else f"{'-':>9}"
            print(f"{name:<46} {ours_s * 1e3:9.2f} {their_ms} {ratio}")


if __name__ == "__main__":
    main()
