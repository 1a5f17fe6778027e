"""The proxy task: the split, fixed crops, the cached trunk and features, one scored candidate."""

import math

import pytest
import torch
from nas_fixtures import tiny_dataset, tiny_proxy

from fcos_from_scratch.models import build_model
from fcos_from_scratch.nas.proxy import (FAILED_REWARD, ProxyConfig, evaluate_candidate, fixed_crop,
                                         load_trunk_checkpoint, prepare, split_indices)
from fcos_from_scratch.nas.space import ALL_SKIP_ARCHITECTURE, FIG4_ARCHITECTURE


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy")
    dataset = tiny_dataset(root)
    config = tiny_proxy(root)
    return dataset, config, prepare(config, dataset=dataset, log=lambda *_: None)


def test_split_is_disjoint_seeded_and_checked():
    train, val = split_indices(20, 12, 5, seed=0)
    assert len(train) == 12 and len(val) == 5 and not set(train) & set(val)
    assert (train, val) == split_indices(20, 12, 5, seed=0) and train != split_indices(20, 12, 5, seed=1)[0]
    with pytest.raises(ValueError, match="exceeds"):
        split_indices(10, 8, 3, seed=0)


def test_fixed_crop_shifts_clips_and_drops_boxes():
    image = torch.rand(3, 100, 80)
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 40.0], [70.0, 90.0, 80.0, 100.0]]),
              "labels": torch.tensor([1, 2])}
    g = torch.Generator().manual_seed(0)
    crop, kept = fixed_crop(image, target, 64, g)
    assert crop.shape == (3, 64, 64)
    # re-draw the same offsets to know where the crop was taken
    g = torch.Generator().manual_seed(0)
    top, left = int(torch.randint(0, 37, (1,), generator=g)), int(torch.randint(0, 17, (1,), generator=g))
    torch.testing.assert_close(crop, image[:, top:top + 64, left:left + 64])
    assert (kept["boxes"] >= 0).all() and (kept["boxes"] <= 64).all()
    for box, label in zip(kept["boxes"], kept["labels"]):
        original = target["boxes"][int(label) - 1] - torch.tensor([left, top, left, top])
        visible = original.clamp(0, 64)
        torch.testing.assert_close(box, visible)  # shifted, then clipped
    small = fixed_crop(torch.rand(3, 40, 50), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}, 64, g)[0]
    assert small.shape == (3, 64, 64) and small[:, 40:].abs().sum() == 0  # zero padding


def test_features_are_cached_once_and_the_trunk_is_frozen_and_reused(tiny):
    dataset, config, data = tiny
    assert [f.shape for f in data.train_features] == [(8, 64, 8, 8), (8, 128, 4, 4), (8, 192, 2, 2)]
    assert len(data.val_targets) == 4 and not any(f.requires_grad for f in data.train_features)
    again = prepare(config, dataset=dataset, log=lambda *_: pytest.fail("the cached trunk was retrained"))
    torch.testing.assert_close(again.val_features[2], data.val_features[2])  # same trunk, same crops


def test_one_candidate_is_trained_and_scored_by_the_negative_meta_val_loss(tiny):
    _, config, data = tiny
    result = evaluate_candidate(FIG4_ARCHITECTURE, data, config, seed=0)
    total = result["loss_cls"] + result["loss_box"] + result["loss_ctr"]
    assert not result["failed"] and math.isfinite(total)
    assert result["reward"] == pytest.approx(-total)  # R = -(L_cls + L_reg + L_ctr)
    assert result["cpu_s"] > 0 and result["wall_s"] > 0
    assert evaluate_candidate(FIG4_ARCHITECTURE, data, config, seed=0)["reward"] == result["reward"]  # seeded
    fpn = evaluate_candidate("fpn", data, config, seed=0)  # plain FCOS's FPN + head
    assert math.isfinite(fpn["reward"])


def test_polyak_average_is_what_gets_scored(tiny):
    _, config, data = tiny
    no_average = evaluate_candidate(ALL_SKIP_ARCHITECTURE, data, ProxyConfig(**{**config.__dict__, "polyak_decay": 0.0}))
    averaged = evaluate_candidate(ALL_SKIP_ARCHITECTURE, data, config)
    assert no_average["reward"] != averaged["reward"]


def test_a_diverging_candidate_gets_the_failure_reward(tiny):
    _, config, data = tiny
    result = evaluate_candidate(ALL_SKIP_ARCHITECTURE, data, ProxyConfig(**{**config.__dict__, "lr": 1e30}))
    assert result["failed"] and result["reward"] == FAILED_REWARD


def test_bad_options_and_trunk_checkpoints_are_named(tmp_path):
    for key, value in (("crop_size", 100), ("steps", 0), ("polyak_decay", 1.0), ("lr", -1.0)):
        with pytest.raises(ValueError, match=key):
            ProxyConfig(**{key: value})
    with pytest.raises(ValueError, match="unknown proxy option 'stpes'"):
        ProxyConfig.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match="trunk="):
        load_trunk_checkpoint(tmp_path / "missing.pt")
    fcos = build_model("fcos", backbone="tiny", num_classes=10, fpn_channels=8)
    torch.save({"model": fcos.state_dict()}, tmp_path / "fcos.pt")  # an FCOS digits checkpoint's layout
    trunk = load_trunk_checkpoint(tmp_path / "fcos.pt")
    torch.testing.assert_close(trunk.state_dict(), fcos.backbone.state_dict())
    assert not any(p.requires_grad for p in trunk.parameters()) and not trunk.training
    torch.save({"model": {"backbone.nonsense": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="tiny"):
        load_trunk_checkpoint(tmp_path / "bad.pt")


def test_proxy_measures_the_reward_with_fcos_paper_losses_whatever_the_main_job_recipe():
    # R = -(L_cls + L_reg + L_ctr) keeps its units (and the cached trunk its key) when
    # the digits preset's training recipe changes its loss weights.
    import dataclasses

    from fcos_from_scratch.config import get_preset
    from fcos_from_scratch.nas.proxy import detector_fields, proxy_fcos_config

    config, preset = proxy_fcos_config(), get_preset("digits").model
    assert (config.focal_gamma, config.cls_weight, config.box_weight, config.centerness_weight) == (2.0, 1.0, 1.0, 1.0)
    assert dataclasses.replace(config, focal_gamma=preset.focal_gamma, cls_weight=preset.cls_weight) == preset
    assert detector_fields(32)["fpn_channels"] == 32 and detector_fields(32)["focal_gamma"] == 2.0
