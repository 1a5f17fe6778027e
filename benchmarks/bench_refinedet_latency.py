"""RefineDetLite latency on one CPU thread, [refinedetlite]'s protocol (its Table 2 and 3).

    python benchmarks/bench_refinedet_latency.py
    /work/refvenv/bin/python benchmarks/bench_refinedet_latency.py --torchvision   # + SSDLite320

Protocol ([refinedetlite] Sec. 5.2): ``torch.set_num_threads(1)``, batch 1, a
320 x 320 fp32 image, 10 warm-up runs, then the mean time over 100 images of the
whole detector call -- forward, box decoding and NMS -- in eval mode without
gradients (the median and this process's CPU time beside it). Rows, Table 3:

* (a) baseline: classical ResBlocks in Res2NetLite72, plain 3x3 heads;
* (b) + Res2Block;
* (c) RefineDetLite72 (Res2Blocks and Light-heads);
* (c) + Soft-NMS (sigma 0.5, stopping at the 100 detections kept).

Every model has COCO's 80 classes and random weights. Untrained, every anchor's
class probabilities are near 1/81 > ``score_thresh`` = 0.01, so the post-processing
always gets the full ``pre_nms_top_n`` = 400 candidates: the worst case for NMS.
The rows are timed interleaved (image i through every model before image i + 1),
so load from other jobs falls on all of them alike; on a shared machine the CPU
times are the steadier figures. GMACs come from ``models.complexity.count_macs``
(convolutions only; the network alone, no post-processing).

Goals (issue 11): (c) <= 130 ms, (c)/(a) <= 0.90, Soft-NMS adds <= 3 ms. With
``--torchvision`` (a venv that has torchvision), ``ssdlite320_mobilenet_v3_large``
(random weights, its own 320-px transform and post-processing) is timed in the
same loop and the ratio (c) / SSDLite printed.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fcos_from_scratch.models import build_model  # noqa: E402
from fcos_from_scratch.models.complexity import count_macs  # noqa: E402

ROWS = {
    "(a) baseline: ResBlock + plain 3x3": dict(block="res", head="plain3x3"),
    "(b) + Res2Block": dict(block="res2", head="plain3x3"),
    "(c) RefineDetLite72": dict(block="res2", head="light"),
    "(c) + soft-NMS": dict(block="res2", head="light", nms_method="soft_nms"),
}


def build_rows(num_classes: int, channels_last: bool):
    models = {}
    for name, options in ROWS.items():
        torch.manual_seed(0)
        model = build_model("refinedet_lite", num_classes=num_classes, **options).eval()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        models[name] = model
    return models


def build_ssdlite():
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()


def time_models(models, images, warmup: int):
    """Per model: wall and CPU seconds of each image, models interleaved image by image."""
    wall = {name: [] for name in models}
    cpu = {name: [] for name in models}
    with torch.no_grad():
        for index, image in enumerate(images[:warmup] + images):
            for name, model in models.items():
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                model([image])
                if index >= warmup:
                    wall[name].append(time.perf_counter() - start_wall)
                    cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="timed images ([refinedetlite]: 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first ([refinedetlite]: 10)")
    parser.add_argument("--size", type=int, default=320, help="input side ([refinedetlite]: 320)")
    parser.add_argument("--num_classes", type=int, default=80)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="contiguous NCHW instead of NHWC (NHWC is the trainer's default, faster with oneDNN)")
    parser.add_argument("--torchvision", action="store_true", help="also time torchvision's SSDLite320")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    models = build_rows(args.num_classes, args.channels_last)
    if args.torchvision:
        models["SSDLite320 MobileNetV3 (torchvision)"] = build_ssdlite()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=generator) for _ in range(args.images)]
    probe = torch.zeros(1, 3, args.size, args.size)
    gmacs = {name: count_macs(model, (probe,)) / 1e9 for name, model in models.items()}
    wall, cpu = time_models(models, images, args.warmup)

    print(f"torch {torch.__version__}, 1 thread, batch 1, {args.size}x{args.size} fp32, "
          f"{args.warmup} warm-ups, {args.images} images, channels_last={args.channels_last}")
    print(f"{'model':40s} {'GMACs':>6s} {'mean ms':>8s} {'median ms':>9s} {'CPU ms':>7s}")
    mean = {name: 1e3 * statistics.fmean(wall[name]) for name in models}
    mean_cpu = {name: 1e3 * statistics.fmean(cpu[name]) for name in models}
    for name in models:
        print(f"{name:40s} {gmacs[name]:6.2f} {mean[name]:8.1f} {1e3 * statistics.median(wall[name]):9.1f} "
              f"{mean_cpu[name]:7.1f}")
    a, b, c, soft = list(ROWS)
    print(f"(c) / (a): {mean[c] / mean[a]:.3f} wall, {mean_cpu[c] / mean_cpu[a]:.3f} CPU   (goal <= 0.90)")
    print(f"(b) / (a): {mean[b] / mean[a]:.3f} wall, {mean_cpu[b] / mean_cpu[a]:.3f} CPU")
    print(f"soft-NMS adds {mean[soft] - mean[c]:+.1f} ms wall, {mean_cpu[soft] - mean_cpu[c]:+.1f} ms CPU   "
          f"(goal <= 3 ms)")
    print(f"(c) mean {mean[c]:.1f} ms   (goal <= 130 ms on this machine)")
    if args.torchvision:
        ssd = list(models)[-1]
        print(f"(c) / SSDLite320: {mean[c] / mean[ssd]:.3f} wall, {mean_cpu[c] / mean_cpu[ssd]:.3f} CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
