"""Time one FCOS training step and one inference call; compare with torchvision's FCOS.

    python benchmarks/bench_train.py                       # our timings only
    /path/to/venv-with-torchvision/bin/python benchmarks/bench_train.py

Both detectors are ResNet-18 + FPN (256 channels, P3-P7, P6 from P5, frozen BN, all
layers trainable) + the 4-conv GroupNorm head, on a 2 x 3 x 512 x 512 batch with 5
boxes per image; torchvision's transform is set to 512/512 so it does not resize.
A training step is forward + loss + backward + SGD step; inference is an eval-mode
forward with post-processing, under ``torch.no_grad``. The two are timed in the
same process, interleaved run by run; the medians of wall-clock and CPU time are
compared (on a busy shared machine use ``--threads 1`` and read the CPU ratio).
Goal (issue 5): ratio ours / torchvision <= 1.0.
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fcos_from_scratch.models import build_model  # noqa: E402

NUM_CLASSES = 20


def torchvision_fcos():
    """torchvision's FCOS of the same shape, or None when torchvision is missing."""
    try:
        from torchvision.models import resnet18
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.ops import misc
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    except Exception:  # ImportError, or its compiled ops failing to load
        return None
    trunk = resnet18(norm_layer=misc.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(trunk, 5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    return FCOS(backbone, NUM_CLASSES, min_size=512, max_size=512, score_thresh=0.05)


def our_fcos():
    with warnings.catch_warnings():  # frozen BN without weights: intended here
        warnings.simplefilter("ignore")
        return build_model("fcos", backbone="resnet18", num_classes=NUM_CLASSES,
                           fpn_channels=256, frozen_bn=True)


def make_batch(generator, batch=2, size=512, boxes_per_image=5):
    images = torch.rand(batch, 3, size, size, generator=generator)
    targets = []
    for _ in range(batch):
        xy = torch.rand(boxes_per_image, 2, generator=generator) * size * 0.6
        wh = torch.rand(boxes_per_image, 2, generator=generator) * size * 0.4 + 16
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(0, NUM_CLASSES, (boxes_per_image,), generator=generator)})
    return images, targets


def train_step(model, optimizer, images, targets):
    model.train()
    losses = model(list(images), targets)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


@torch.no_grad()
def inference(model, images):
    model.eval()
    return model(list(images))


def median_times(functions, repeats):
    """Median (wall, CPU) seconds of each function (None entries skipped), interleaved.

    CPU time (``time.process_time``) is what to compare on a busy machine, best with
    ``--threads 1``: other processes slow the wall clock, not the CPU work done.
    """
    for function in functions:
        if function is not None:
            function()  # warm-up
    times = [([], []) for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            if function is not None:
                wall, cpu = time.perf_counter(), time.process_time()
                function()
                times[index][0].append(time.perf_counter() - wall)
                times[index][1].append(time.process_time() - cpu)
    return [(statistics.median(w), statistics.median(c)) if w else None for w, c in times]


def report(name, ours, theirs):
    line = f"{name:<11} ours wall {ours[0] * 1000:8.1f} ms cpu {ours[1] * 1000:8.1f} ms"
    if theirs is not None:
        line += (f" | torchvision wall {theirs[0] * 1000:8.1f} ms cpu {theirs[1] * 1000:8.1f} ms"
                 f" | ratio wall {ours[0] / theirs[0]:.2f} cpu {ours[1] / theirs[1]:.2f}")
    print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, targets = make_batch(torch.Generator().manual_seed(0))
    ours, theirs = our_fcos(), torchvision_fcos()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 2 x 3 x 512 x 512; "
          f"torchvision {'found' if theirs is not None else 'not importable: ours only'}")
    ours_opt = torch.optim.SGD(ours.parameters(), lr=1e-4, momentum=0.9)
    their_opt = torch.optim.SGD(theirs.parameters(), lr=1e-4, momentum=0.9) if theirs else None
    ours_train, their_train = median_times([
        lambda: train_step(ours, ours_opt, images, targets),
        (lambda: train_step(theirs, their_opt, images, targets)) if theirs else None,
    ], args.repeats)
    report("train step", ours_train, their_train)
    ours_infer, their_infer = median_times([
        lambda: inference(ours, images),
        (lambda: inference(theirs, images)) if theirs else None,
    ], args.repeats)
    report("inference", ours_infer, their_infer)


if __name__ == "__main__":
    main()
