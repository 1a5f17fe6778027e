"""Where one training step of a preset spends its time, by operator (``torch.profiler``).

    python benchmarks/profile_step.py                       # the digits preset, 6 steps
    python benchmarks/profile_step.py --steps=4 --batch_size=8 --focal_gamma=2
    python benchmarks/profile_step.py --preset=digits_faster_rcnn

Takes the preset's real training batches (its data, batch size and augmentation),
runs two warm-up steps, then profiles ``--steps`` steps of the trainer's own step
(forward, loss, non-finite guard, backward, gradient clipping, update) in this
process (no loader workers: data loading is timed separately, per image, before
profiling) and prints

* the share of the profiled CPU time in groups of operators: convolution forward,
  convolution backward, BatchNorm, GroupNorm, the optimiser, everything else;
* the 15 operators with the most self time;
* milliseconds per image of loading (decode + transforms) and of a step.

Any ``--key=value`` of the trainer changes the run (``--batch_size=8 --augment=true``
profiles the old recipe). On a quiet machine the shares repeat between runs; under
load they do not (other processes stretch the memory-bound operators most), and
absolute times always depend on the machine.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from fcos_from_scratch.config import config_from_cli  # noqa: E402
from fcos_from_scratch.engine import builders, loop  # noqa: E402
from fcos_from_scratch.engine.optim import build_optimizer  # noqa: E402

GROUPS = (  # (label, predicate on an operator name), first match wins
    ("convolution backward", lambda n: "convolution_backward" in n or "conv2d_backward" in n),
    ("convolution forward", lambda n: "convolution" in n or "conv2d" in n),
    ("BatchNorm", lambda n: "batch_norm" in n),
    ("GroupNorm", lambda n: "group_norm" in n),
    ("optimiser (AdamW/SGD update)", lambda n: n.startswith("Optimizer.")),
)
OPTIMISER = GROUPS[-1][0]


def main(argv) -> None:
    steps = 6
    rest = []
    for arg in argv:
        if arg.startswith("--steps="):
            steps = int(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    config = config_from_cli(rest)
    builders.seed_everything(config.seed)
    dataset = builders.build_split(config, config.train_split, train=True)
    builders.set_epoch(dataset, 0, config.augment)
    collate = builders.collate_fn()
    count = (steps + 2) * config.batch_size
    start = time.perf_counter()
    samples = [dataset[i] for i in range(count)]
    load_ms = 1000 * (time.perf_counter() - start) / count
    batches = [collate(samples[i:i + config.batch_size]) for i in range(0, count, config.batch_size)]

    model = builders.build_run_model(config).train()
    optimizer = build_optimizer(model, config.train)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    def step(batch):  # the trainer's own step: forward, loss, NaN guard, backward, clip, update
        loop._train_step(model, optimizer, loop.to_device(batch, torch.device("cpu"), config.channels_last),
                         None, config.grad_clip_norm, 0, 0)

    for batch in batches[:2]:
        step(batch)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[2:]:
            step(batch)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {label: 0.0 for label, _ in GROUPS}
    for event in events:
        label = next((g for g, match in GROUPS if match(event.key)), None)
        if label == OPTIMISER:  # the update's element-wise ops are its children: count inclusively
            shares[label] += event.cpu_time_total if event.key.startswith("Optimizer.step") else 0.0
        elif label is not None:
            shares[label] += event.self_cpu_time_total
    shares["everything else (element-wise, targets, losses)"] = total - sum(shares.values())
    print(f"{steps} steps of {config.batch_size} images, {torch.get_num_threads()} threads: "
          f"{1000 * wall / (steps * config.batch_size):.1f} ms per image in the step "
          f"(profiled), loading {load_ms:.1f} ms per image (decode + transforms, augment={config.augment})")
    for label, value in shares.items():
        print(f"  {label:48s} {100 * value / total:5.1f} %")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main(sys.argv[1:])
