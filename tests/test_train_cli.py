"""The real pieces together on a handful of tiny digits images: fit -> metrics.json,
evaluate_checkpoint, predict. Kept to a few seconds: 8 small images, a narrow model."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from fcos_from_scratch import predict
from fcos_from_scratch.config import get_preset
from fcos_from_scratch.data import DigitsConfig, build_dataset, build_transforms
from fcos_from_scratch.engine import builders
from fcos_from_scratch.engine.evaluate import evaluate_checkpoint, load_model
from fcos_from_scratch.engine.loop import COCO_KEYS, targets_in_original_frame, unpack_batch
from fcos_from_scratch.engine.trainer import fit

TINY_DIGITS = DigitsConfig(num_train=8, num_val=1, num_test=4, min_side=64, max_side=96,
                           max_digits=2, digit_height=(16, 40))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("run")
    config = get_preset("digits").replace(
        fpn_channels=16, head_convs=1, optimizer="adamw", lr=1e-3, epochs=1, batch_size=4,
        device="cpu", out=str(out), progress=False, log_every=1, data_root=str(root),
        max_minutes=0.0, time_schedule=False, num_workers=0, no_aug_epochs=0)
    train_set = build_dataset("digits", "train", root=root, config=TINY_DIGITS)
    test_set = build_dataset("digits", "test", root=root, config=TINY_DIGITS)
    result = fit(config, train_set=train_set, test_set=test_set)
    return config, out, test_set, result


def test_fit_writes_coco_and_voc_metrics(trained):
    config, out, _, result = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == list(COCO_KEYS) + ["VOC_mAP"]
    assert metrics == pytest.approx(result.metrics)
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())
    assert result.steps == 2 and all(k in result.history[0] for k in ("loss_cls", "loss"))
    assert (out / "last.pt").exists() and (out / "best.pt").exists()


def test_evaluate_checkpoint_reproduces_the_final_metrics(trained):
    _, out, test_set, result = trained
    again = evaluate_checkpoint(out / "last.pt", test_set, device="cpu", progress=False)
    assert again == pytest.approx(result.metrics)


def test_evaluate_cli_with_a_checkpoint(trained, monkeypatch, capsys):
    from fcos_from_scratch import evaluate as evaluate_cli

    _, out, test_set, result = trained
    # The checkpoint's config names the default digits splits; hand it the tiny one.
    monkeypatch.setattr(builders, "build_split", lambda config, split, train, **kw: test_set)
    assert evaluate_cli.main(["--checkpoint", str(out / "last.pt"), "--device", "cpu"]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert float(printed["AP50"]) == pytest.approx(result.metrics["AP50"], abs=1e-4)
    assert float(printed["VOC_mAP"]) == pytest.approx(result.metrics["VOC_mAP"], abs=1e-4)


def test_predict_writes_images_with_boxes(trained, tmp_path, capsys):
    _, out, test_set, _ = trained
    image, _ = test_set[0]
    path = tmp_path / "digit.png"
    predict.draw_detections(image, {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                    "labels": torch.zeros(0, dtype=torch.int64)}).save(path)
    assert predict.main(["--checkpoint", str(out / "last.pt"), str(path), "--out",
                         str(tmp_path / "pred"), "--score_threshold", "0.0", "--device", "cpu"]) == 0
    written = tmp_path / "pred" / "digit_pred.png"
    assert written.read_bytes()[:4] == b"\x89PNG" and "digit_pred.png" in capsys.readouterr().out
    model, _, extra = load_model(out / "last.pt", "cpu")
    assert extra["class_names"] == [str(d) for d in range(10)] and not model.training


def test_draw_detections_draws_only_kept_boxes():
    image = torch.zeros(3, 60, 80)
    dets = {"boxes": torch.tensor([[20.0, 30.0, 60.0, 55.0], [0.0, 0.0, 5.0, 5.0]]),
            "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([1, 2])}
    pil = predict.draw_detections(image, dets, ["a", "b", "c"], score_threshold=0.5)
    pixels = torch.tensor(np.asarray(pil)).sum(-1)  # (H, W)
    assert pixels[45, 20] > 0 and pixels[45, 40] == 0  # left edge of the kept box, empty inside
    assert pixels[2, 0] == 0 and pixels[0, 2] == 0  # the low-score box is not drawn


def test_predict_maps_boxes_back_through_the_resize(trained):
    _, out, test_set, _ = trained
    model, _, _ = load_model(out / "last.pt", "cpu")
    model.config = dataclasses.replace(model.config, score_thresh=0.0)  # keep every candidate
    image, _ = test_set[0]
    height, width = image.shape[-2:]
    transform = build_transforms("digits", train=False, min_size=2 * min(height, width))
    dets = predict.predict_image(model, image, transform)
    assert len(dets["boxes"]) > 0  # spread over the image: unmapped, some would pass W or H
    assert (dets["boxes"][:, 0::2] <= width).all() and (dets["boxes"][:, 1::2] <= height).all()


def test_missing_image_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predict.read_image(tmp_path / "nope.png")


def test_targets_are_mapped_back_to_the_original_image():
    target = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "image_size": (50, 100),
              "orig_size": (100, 400)}
    (mapped,) = targets_in_original_frame([target])
    assert mapped["boxes"].tolist() == [[40.0, 40.0, 120.0, 80.0]]  # x * 4, y * 2
    images, targets = unpack_batch((torch.zeros(1, 3, 4, 4), [{"boxes": torch.zeros(0, 4)}]))
    assert images.shape == (1, 3, 4, 4) and "image_size" not in targets[0]
    with pytest.raises(ValueError, match="batch must be"):
        unpack_batch(torch.zeros(3))


def test_missing_voc_explains_how_to_fetch_it(tmp_path):
    config = get_preset("voc_r18").replace(data_root=str(tmp_path))
    with pytest.raises(SystemExit) as info:
        builders.build_split(config, "train", train=True)
    message = str(info.value)
    assert "download_voc.py --root" in message and str(tmp_path) in message


def test_num_classes_must_match_the_dataset(trained, monkeypatch):
    config, _, test_set, _ = trained
    monkeypatch.setattr("fcos_from_scratch.data.build_dataset", lambda *a, **k: test_set)
    assert builders.build_split(config, "test", train=False) is test_set
    with pytest.raises(ValueError, match="num_classes=3 but digits has 10 classes"):
        builders.build_split(config.replace(num_classes=3), "test", train=False)


class _Stop(Exception):
    pass


def test_resume_is_exact_with_the_real_model_and_augmentations(tmp_path):
    root = tmp_path / "data"
    sets = lambda: build_dataset("digits", "train", root=root, config=TINY_DIGITS, augment=True)  # noqa: E731

    def config(out):
        return get_preset("digits").replace(
            fpn_channels=16, head_convs=1, optimizer="adamw", lr=1e-3, epochs=2, batch_size=4,
            device="cpu", out=str(out), progress=False, data_root=str(root), seed=3,
            max_minutes=0.0, time_schedule=False, num_workers=0, no_aug_epochs=0,
            augment=True)  # the preset trains without augmentation; this test resumes with it

    full = fit(config(tmp_path / "a"), train_set=sets(), stream=open(os.devnull, "w"))

    def stop(epoch, result):
        raise _Stop

    with pytest.raises(_Stop):
        fit(config(tmp_path / "b"), train_set=sets(), on_epoch_end=stop, stream=open(os.devnull, "w"))
    resumed = fit(config(tmp_path / "b").replace(resume="auto"), train_set=sets(),
                  stream=open(os.devnull, "w"))
    assert len(full.history) == 4 and resumed.history == full.history[2:]


def test_the_same_seed_gives_the_same_run_step_by_step(tmp_path):
    # The main job is a fixed number of steps, so two runs with one seed on a CPU
    # must log the same losses at every step and end with the same metrics.
    root = tmp_path / "data"
    train = lambda: build_dataset("digits", "train", root=root, config=TINY_DIGITS, augment=True)  # noqa: E731
    test = lambda: build_dataset("digits", "test", root=root, config=TINY_DIGITS)  # noqa: E731

    def run(out):
        config = get_preset("digits").replace(
            fpn_channels=16, head_convs=1, batch_size=4, max_steps=3, device="cpu", out=str(out),
            progress=False, data_root=str(root), num_workers=0, group_by_size=2,
            augment=True)  # the preset's recipe is unaugmented; augmentations must repeat too
        return fit(config, train_set=train(), test_set=test(), stream=open(os.devnull, "w"))

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first.steps == 3 and first.history == second.history
    assert first.metrics == second.metrics and set(first.metrics) >= {"AP", "AP50"}
