"""The ``training`` unit's run: the library's FCOS, with the student's parts, trained on digits.

The grader's child imports this file from the grading view (a copy of the library
in which the unit's answers are the student's), so ``FCOS`` here builds the
student's ``FCOSHead`` and calls the student's ``assign_targets``, ``fcos_loss``
and ``select_candidates``; everything else (trunk, FPN, data, optimiser, schedule,
evaluation) is the library's. The parent never imports student code: it reads the
numbers this returns, as raw arrays, and applies the AP50 thresholds itself.
"""

import tempfile
import time
from pathlib import Path

import torch


def train_and_evaluate(seed: int, epochs: int, num_train: int, num_test: int, min_side: int,
                       max_side: int, max_digits: int, digit_low: int, digit_high: int,
                       fpn_channels: int, head_convs: int, batch_size: int, lr: float) -> dict:
    """Train for ``epochs`` x ceil(num_train / batch_size) steps; test AP50 and the cost.

    Returns:
        ``{"AP50", "AP", "steps", "seconds"}`` (floats), measured on the fixed test split.
    """
    from fcos_from_scratch.config import get_preset
    from fcos_from_scratch.data import DigitsConfig, build_dataset
    from fcos_from_scratch.engine.trainer import fit

    started = time.perf_counter()
    data = DigitsConfig(num_train=num_train, num_val=0, num_test=num_test, seed=0, min_side=min_side,
                        max_side=max_side, max_digits=max_digits, digit_height=(digit_low, digit_high))
    with tempfile.TemporaryDirectory(prefix="training_unit_") as folder:
        root, out = Path(folder) / "data", Path(folder) / "run"
        config = get_preset("digits").replace(
            fpn_channels=fpn_channels, head_convs=head_convs, lr=lr, epochs=epochs, batch_size=batch_size,
            no_aug_epochs=min(1, epochs), seed=seed, device="cpu", out=str(out), progress=False,
            data_root=str(root), max_minutes=0.0, time_schedule=False, num_workers=0)
        train_set = build_dataset("digits", "train", root=root, config=data, epochs=epochs,
                                  no_aug_epochs=min(1, epochs))
        test_set = build_dataset("digits", "test", root=root, config=data)
        result = fit(config, train_set=train_set, test_set=test_set, stream=open("/dev/null", "w"))
    return {"AP50": float(result.metrics["AP50"]), "AP": float(result.metrics["AP"]),
            "steps": float(result.steps), "seconds": float(time.perf_counter() - started)}
