"""Tests for fcos_from_scratch.config: presets, type-checked overrides, unknown keys."""

import dataclasses

import pytest

from fcos_from_scratch import train
from fcos_from_scratch.config import (
    PRESETS, RunConfig, TrainConfig, config_from_cli, field_names, get_preset, parse_cli)
from fcos_from_scratch.models import DETECTORS, config_fields


def test_default_preset_is_digits_and_every_preset_is_valid():
    assert parse_cli([]) == ("digits", {})
    for name in PRESETS:
        config = get_preset(name)
        assert RunConfig.from_dict(config.to_dict()) == config  # JSON round trip
        assert PRESETS[name]["model"] in DETECTORS  # every preset names its detector
    digits = config_from_cli([])
    assert digits.dataset == "digits" and digits.num_classes == 10
    assert digits.max_minutes == 0 and digits.epochs == 4 and digits.batch_size == 4  # a fixed length: the same run on every machine


def test_voc_r18_is_the_cs771_setting():
    config = get_preset("voc_r18")  # [cs771-hw3]: ResNet-18, 10 epochs, LR 0.01
    assert (config.dataset, config.backbone, config.epochs, config.lr) == ("voc", "resnet18", 10, 0.01)
    assert get_preset("voc_r50").backbone == "resnet50"
    assert get_preset("voc_mobilenetv2").backbone == "mobilenet_v2"


def test_seed_000_schedule_defaults():
    config = TrainConfig()  # cosine 1e-2 -> 1e-5 with 1 % warm-up
    assert (config.schedule, config.lr, config.min_lr, config.warmup_fraction) == \
        ("cosine", 1e-2, 1e-5, 0.01)


def test_overrides_are_parsed_by_field_type():
    config = config_from_cli(["--preset", "voc_r18", "--lr=0.005", "--epochs", "3",
                              "--lr_steps=2,3", "--no-amp", "--channels-last=false",
                              "--progress", "--device=cpu", "--betas=0.8,0.9"])
    assert (config.lr, config.epochs, config.lr_steps) == (0.005, 3, (2, 3))
    assert (config.amp, config.channels_last, config.progress) == (False, False, True)
    assert (config.device, config.betas, config.backbone) == ("cpu", (0.8, 0.9), "resnet18")


@pytest.mark.parametrize("arg, message", [
    ("--epochs=2.5", "epochs expects an int"),
    ("--lr=fast", "lr expects a float"),
    ("--amp=maybe", "amp expects a bool"),
    ("--lr_steps=a,b", "lr_steps expects an int"),
    ("--optimizer=adagrad", "optimizer must be one of"),
    ("--nms_thresh=high", "nms_thresh expects a float"),
    ("--reg_activation=tanh", "reg_activation must be one of"),
    ("--lr_mults=backbone", "prefix=multiplier"),
    ("--epochs=0", "epochs must be >= 1"),
    ("--warmup_fraction=1.5", "warmup_fraction"),
    ("--lr_steps=5,2", "increasing"),
])
def test_bad_values_are_rejected_with_the_key(arg, message):
    with pytest.raises(ValueError, match=message):
        config_from_cli([arg])


@pytest.mark.parametrize("arg, suggestion", [
    ("--learing_rate=0.1", "lr"),
    ("--weight_decy=0.1", "weight_decay"),
    ("--epoch=3", "epochs"),
    ("--batchsize=3", "batch_size"),
])
def test_unknown_key_suggests_close_matches(arg, suggestion):
    with pytest.raises(ValueError, match=f"unknown config key.*did you mean {suggestion}"):
        config_from_cli([arg])


def test_from_dict_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ValueError, match="unknown config key 'lrr'.*lr"):
        TrainConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ValueError, match="batch_size expects an int"):
        TrainConfig.from_dict({"batch_size": "8x"})
    assert TrainConfig.from_dict({"lr_steps": [8, 11]}).lr_steps == (8, 11)


def test_config_is_frozen_and_replace_checks_types():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1
    assert config.replace(lr="0.5").lr == 0.5
    with pytest.raises(ValueError, match="unknown config key"):
        config.replace(nonsense=1)


def test_cli_errors():
    with pytest.raises(ValueError, match="unknown preset 'voc_r81'.*voc_r18"):
        config_from_cli(["--preset=voc_r81"])
    with pytest.raises(ValueError, match="unexpected argument 'extra'"):
        parse_cli(["extra"])
    with pytest.raises(ValueError, match="--lr needs a value"):
        parse_cli(["--lr"])


def test_train_main_reports_bad_options(capsys):
    assert train.main(["--learning_rat=0.1"]) == 2
    assert "did you mean lr" in capsys.readouterr().err
    assert train.main(["--device=tpu"]) == 2
    assert "device must be" in capsys.readouterr().err
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"--{name}=" in out for name in field_names() + config_fields("fcos"))
    assert "voc_mobilenetv2" in out and "[fcos] Sec. 4.1" in out  # each option with its description


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_its_model(name):
    from fcos_from_scratch.engine.builders import build_run_model as build_model

    config = get_preset(name)
    if getattr(config.model, "pretrained", ""):
        config = config.replace(pretrained="")  # no download in tests
    model = build_model(config)
    assert model.config == config.model  # every detector field, as the preset set it


def test_dataset_option_picks_that_datasets_preset():
    from fcos_from_scratch.config import config_from_cli

    voc = config_from_cli(["--dataset", "voc"])
    assert (voc.dataset, voc.num_classes, voc.backbone) == ("voc", 20, "resnet18")
    assert config_from_cli([]).dataset == "digits"
    # An explicit preset still wins, and the dataset override applies on top of it.
    assert config_from_cli(["--preset=voc_r50", "--dataset=voc"]).backbone == "resnet50"


def test_field_names_are_unique_across_training_and_every_detector():
    train = set(field_names(TrainConfig))
    for name in DETECTORS:
        clash = train & set(config_fields(name))
        assert not clash, f"{name} and TrainConfig both declare {sorted(clash)}"


def test_every_detector_field_is_settable_from_the_command_line():
    config = config_from_cli(["--center_sampling_radius=0", "--score_thresh=0.3", "--nms_thresh=0.5",
                              "--focal_alpha=0.5", "--reg_activation=exp", "--frozen_bn=auto",
                              "--sizes_of_interest=0,16,32,inf"])
    assert (config.center_sampling_radius, config.score_thresh, config.nms_thresh) == (0.0, 0.3, 0.5)
    assert (config.focal_alpha, config.reg_activation, config.frozen_bn) == (0.5, "exp", None)
    assert config.model.sizes_of_interest == (0.0, 16.0, 32.0, float("inf"))
    assert config.train.lr == get_preset("digits").train.lr  # the training config is untouched


def test_model_option_starts_from_that_detectors_preset():
    assert parse_cli(["--model=fcos"])[0] == "digits"
    with pytest.raises(ValueError, match="did you mean 'fcos'"):
        parse_cli(["--model=fcso"])
    coco = config_from_cli(["--dataset=coco"])
    assert (coco.dataset, coco.num_classes, coco.val_split) == ("coco", 80, "")


def test_run_config_routes_changes_to_their_owner():
    config = get_preset("digits").replace(lr=0.5, fpn_channels=32)
    assert config.train.lr == 0.5 and config.model.fpn_channels == 32
    with pytest.raises(ValueError, match="did you mean fpn_channels"):
        config.replace(fpn_chanels=3)
