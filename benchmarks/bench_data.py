"""Does the digits loader keep up with training? Batches/s of the loader vs. FCOS steps/s.

    python benchmarks/bench_data.py                     # 2 workers, batch 8, the digits preset model
    python benchmarks/bench_data.py --workers 2 --batches 60 --steps 5

Measures, in the same run:

1. the loader: ``DataLoader(build_dataset("digits", "train"), batch_size, num_workers,
   collate_fn=collate_detection)`` with the default training augmentation, batches
   per second after a warm-up batch;
2. the baseline it must beat: one training step (forward, backward, optimiser
   step) on such batches, steps per second, with exactly the model and optimiser
   the ``digits`` preset trains (built from ``get_preset("digits")`` by the
   trainer's own builders, so the benchmark follows the preset when it changes).

It prints the ratio; the goal (issue 4) is loader >= 5x the training step rate. If
the model package is not importable, only the loader throughput is printed, and the
script says so.
"""

from __future__ import annotations

import argparse
import time

import torch

from fcos_from_scratch.data import build_dataset, collate_detection


def loader_rate(dataset, batch_size: int, workers: int, batches: int) -> float:
    """Batches per second delivered by a DataLoader over ``dataset``."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=collate_detection, drop_last=True)
    iterator = iter(loader)
    next(iterator)  # warm-up: worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def train_step_rate(dataset, batch_size: int, steps: int, preset: str = "digits"):
    """Training steps per second of the preset's model and optimiser, or ``None`` if the
    model is not available."""
    try:
        from fcos_from_scratch.config import get_preset
        from fcos_from_scratch.engine.builders import build_run_model
        from fcos_from_scratch.engine.optim import build_optimizer
        config = get_preset(preset).replace(init_from="")
        model = build_run_model(config)
        optimizer = build_optimizer(model, config.train)
    except (ImportError, ValueError, TypeError) as err:
        print(f"model not available ({type(err).__name__}: {err}); printing loader throughput only")
        return None
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                                         collate_fn=collate_detection, drop_last=True)
    batches = [batch for batch, _ in zip(loader, range(steps + 1))]  # loading is not part of the step
    model.train()
    elapsed = 0.0
    for i, batch in enumerate(batches):
        targets = [dict(t, image_size=size) for t, size in zip(batch.targets, batch.image_sizes)]
        start = time.perf_counter()
        losses = model(batch.images, targets)
        loss = sum(v for k, v in losses.items() if k.startswith("loss"))  # as the trainer sums
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i > 0:  # the first step allocates; skip it
            elapsed += time.perf_counter() - start
    return steps / elapsed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data folder (default: $FCOS_DATA_ROOT or ~/.cache/...)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=0, help="default: the digits preset's")
    parser.add_argument("--batches", type=int, default=60, help="loader batches to time")
    parser.add_argument("--steps", type=int, default=5, help="training steps to time")
    args = parser.parse_args(argv)
    from fcos_from_scratch.config import get_preset

    preset = get_preset("digits")
    args.batch_size = args.batch_size or preset.batch_size
    dataset = build_dataset("digits", "train", args.root, epochs=preset.epochs,
                            no_aug_epochs=preset.no_aug_epochs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; digits train: {len(dataset)} images")
    steps = train_step_rate(dataset, args.batch_size, args.steps)
    batches = loader_rate(dataset, args.batch_size, args.workers, args.batches)
    print(f"loader ({args.workers} workers, batch {args.batch_size}): {batches:.1f} batches/s")
    if steps is not None:
        print(f"training step (digits preset: {preset.model}, backbone {preset.backbone}, "
              f"{preset.optimizer}, batch {args.batch_size}): {steps:.2f} steps/s")
        print(f"ratio loader / training: {batches / steps:.1f}x (goal: >= 5x)")


if __name__ == "__main__":
    main()
