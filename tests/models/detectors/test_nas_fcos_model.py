"""NAS-FCOS: FCOS with a searched decoder, built, trained, evaluated and reloaded through the registry."""

import json

import pytest
import torch

from fcos_from_scratch.config import PRESETS, config_from_cli, get_preset
from fcos_from_scratch.engine import checkpoint as ckpt
from fcos_from_scratch.engine.evaluate import load_model
from fcos_from_scratch.models import build_detector, build_model, detector_config
from fcos_from_scratch.nas.space import ALL_SKIP_ARCHITECTURE, FIG4_ARCHITECTURE, load_architecture

TINY = dict(backbone="tiny", num_classes=3, fpn_channels=8, num_levels=3, sizes_of_interest=(0, 32, 64, float("inf")))


def batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 96, generator=g), torch.rand(3, 80, 64, generator=g)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 10.0, 50.0, 70.0], [2.0, 2.0, 12.0, 14.0]]), "labels": torch.tensor([0, 2])}]
    return images, targets


def test_builds_trains_one_step_and_evaluates():
    torch.manual_seed(0)
    model = build_model("nas_fcos", **TINY)  # default arch: fig4
    assert model.decoder.arch == FIG4_ARCHITECTURE and not hasattr(model, "head")
    images, targets = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_ctr"}  # FCOS's loss, FCOS's targets
    before = sum(losses.values())
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert torch.isfinite(before) and sum(model(images, targets).values()) < before
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}


def test_decoder_replaces_fpn_and_head_and_nothing_else():
    nas = build_model("nas_fcos", **TINY, arch="all_skip")
    fcos = build_model("fcos", **TINY)
    features = list(fcos.backbone(torch.rand(2, 3, 64, 64)).values())
    sizes, (cls, box, ctr) = nas.decode(features)
    fcos_sizes, (fcos_cls, _, _) = fcos.decode(features)
    assert sizes == fcos_sizes == [(8, 8), (4, 4), (2, 2)] and cls.shape == fcos_cls.shape
    assert box.shape == (2, 84, 4) and ctr.shape == (2, 84)
    nas5 = build_model("nas_fcos", **dict(TINY, num_levels=5, sizes_of_interest=()))
    assert nas5.decode(features)[0] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]  # P6, P7 as FCOS's


def test_arch_from_a_file_is_kept_inline_so_a_checkpoint_needs_no_file(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"architecture": ALL_SKIP_ARCHITECTURE.to_dict(), "reward": -1.0}))
    config = config_from_cli(["--model", "nas_fcos", f"--arch={path}", "--fpn_channels=8"])
    assert load_architecture(config.model.arch) == ALL_SKIP_ARCHITECTURE
    model = build_detector("nas_fcos", config.model)
    state = ckpt.training_state(model, torch.optim.SGD(model.parameters(), lr=0.1), None, epoch=1, step=1,
                                config=config.to_dict())
    torch.save(state, tmp_path / "last.pt")
    path.unlink()  # the search folder is gone: the checkpoint still rebuilds its model
    loaded, loaded_config, _ = load_model(tmp_path / "last.pt")
    assert loaded.decoder.arch == ALL_SKIP_ARCHITECTURE and loaded_config.model == config.model
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_preset_is_the_fcos_digits_job_with_the_fig4_decoder():
    nas, fcos = PRESETS["digits_nas_fcos"], PRESETS["digits"]
    assert {k: v for k, v in nas.items() if fcos.get(k) != v} == {
        "model": "nas_fcos", "arch": "fig4", "out": "runs/digits_nas_fcos"}
    config = config_from_cli(["--model", "nas_fcos"])  # --model picks the preset
    assert config.model.arch == "fig4" and config.train.max_steps == get_preset("digits").train.max_steps
    assert config.train.epochs == get_preset("digits").train.epochs


@pytest.mark.parametrize("change, match", [
    (dict(arch="fig5"), "arch='fig5' is neither a named architecture"),
    (dict(arch='{"fpn": []}'), "not an architecture of the space"),
    (dict(arch="{not json"), "not valid JSON"),
    (dict(num_levels=2, sizes_of_interest=()), "num_levels must be 3, 4 or 5"),
    (dict(reg_activation="exp"), "reg_activation='relu'"),
    (dict(first_level=2, sizes_of_interest=(0, 16, 32, float("inf"))), "first_level must be 3"),
])
def test_bad_config_values_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        detector_config("nas_fcos", **dict(TINY, **change))
