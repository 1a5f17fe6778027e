"""The ``training`` unit's run, inside the grader's child: train the library's FCOS with the student's parts.

The child imports this file from the grading view (a copy of the library in which
the unit's answers are the student's), so ``FCOS`` here builds the student's
``FCOSHead`` and calls the student's ``assign_targets``, ``fcos_loss`` and
``select_candidates``; the trunk, FPN, data, optimiser, schedule and
post-processing are the library's.

It returns detections only. The test images arrive without their labels (the
parent drew them from the secret grading seed), and the parent computes AP50
from these detections and its own ground truth: a submission that patches the
trainer or the evaluator here changes nothing the parent trusts.
"""

import math
import tempfile
from pathlib import Path

import torch


def train_and_evaluate(test_images, seed: int, epochs: int, num_train: int, num_test: int, min_side: int,
                       max_side: int, max_digits: int, digit_low: int, digit_high: int, fpn_channels: int,
                       head_convs: int, batch_size: int, lr: float) -> list:
    """Train for ``epochs`` x ceil(num_train / batch_size) steps, then detect on ``test_images``.

    Args:
        test_images: T tensors (H, W, 3) uint8 (the test split, labels withheld).
        seed: model initialisation and data order. The other arguments: the run
            (``assignments.units.TRAINING_RUN``); ``num_test`` is the parent's.

    Returns:
        T dicts ``boxes`` (D, 4) xyxy pixels, ``scores`` (D,), ``labels`` (D,).
    """
    from fcos_from_scratch.config import get_preset
    from fcos_from_scratch.data import DigitsConfig, build_dataset
    from fcos_from_scratch.engine.builders import build_run_model, seed_everything
    from fcos_from_scratch.engine.trainer import fit

    data = DigitsConfig(num_train=num_train, num_val=0, num_test=0, seed=0, min_side=min_side,
                        max_side=max_side, max_digits=max_digits, digit_height=(digit_low, digit_high))
    no_aug = min(1, epochs)  # the last epoch without augmentation ([digits-lab])
    with tempfile.TemporaryDirectory(prefix="training_unit_") as folder:
        root, out = Path(folder) / "data", Path(folder) / "run"
        config = get_preset("digits").replace(
            fpn_channels=fpn_channels, head_convs=head_convs, lr=lr, epochs=epochs, batch_size=batch_size,
            no_aug_epochs=no_aug, seed=seed, device="cpu", out=str(out), progress=False,
            # the recipe AP50_THRESHOLDS were calibrated with (the digits preset's before it
            # moved to focal gamma 1, twice the focal weight and no augmentation)
            augment=True, focal_gamma=2.0, cls_weight=1.0,
            data_root=str(root), max_minutes=0.0, time_schedule=False, num_workers=0)
        train_set = build_dataset("digits", "train", root=root, config=data, epochs=epochs, no_aug_epochs=no_aug)
        seed_everything(seed)
        model = build_run_model(config)
        with open(Path(folder) / "log.txt", "w") as log:
            result = fit(config, model=model, train_set=train_set, stream=log)
        expected = epochs * math.ceil(num_train / batch_size)
        if result.steps != expected:
            raise RuntimeError(f"trained {result.steps} steps, expected {expected}")
    model.eval()
    detections = []
    with torch.no_grad():
        for image in test_images:
            image = image.permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1], as the dataset gives
            found = model([image])[0]
            detections.append({k: found[k] for k in ("boxes", "scores", "labels")})
    return detections
