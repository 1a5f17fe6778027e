"""Backbones: torchvision parity (keys, shapes, outputs), trunks, frozen BN, pretrained loading.

Reference values come from ``tests/reference/make_backbone_refs.py`` (torchvision
0.29), frozen in ``tests/fixtures/backbone_refs.pt``. Weights are not stored: both
sides fill every state-dict entry with the same deterministic rule of its key,
imported from that script (which only imports torchvision inside ``main``).
"""

import functools
import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from fcos_from_scratch.models import pretrained as pretrained_mod
from fcos_from_scratch.models.backbones import (
    BACKBONES,
    IMAGENET_URLS,
    FrozenBatchNorm2d,
    MobileNetV2,
    Trunk,
    VoVNet,
    build_backbone,
    build_classifier,
    check_feature_names,
    convert_frozen_batchnorm,
    vovnet27_slim,
)
from fcos_from_scratch.models.backbones.tiny import TinyTrunk
from fcos_from_scratch.models.pretrained import default_cache_dir, sha256_prefix_from_name
from conftest import TESTS, load_reference

HERE = TESTS
REFS = torch.load(HERE / "fixtures" / "backbone_refs.pt", weights_only=True)
TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
HEAD_PREFIX = {"resnet18": "fc.", "resnet34": "fc.", "resnet50": "fc.",
               "mobilenet_v2": "classifier.", "vovnet27_slim": "classifier.",
               "res2netlite72": "classifier."}
TRUNK_CHANNELS = {
    "resnet18": [128, 256, 512],  # BasicBlock widths, [resnet] Table 1
    "resnet34": [128, 256, 512],
    "resnet50": [512, 1024, 2048],  # 4 × (128, 256, 512), Bottleneck expansion
    "mobilenet_v2": [32, 96, 1280],  # Table 2 rows c=32 and c=96, last 1×1 conv
    "vovnet27_slim": [256, 384, 512],  # concat widths of stages 3, 4, 5
    "res2netlite72": [288, 576, 1152],  # 4c, 8c, 16c with c = 72, [refinedetlite] Sec. 3.2
}


REF = load_reference("make_backbone_refs")


def _uninitialised(name):
    """The classifier ``name`` with uninitialised weights (no slow random init)."""
    with torch.device("meta"):
        model = BACKBONES[name]()
    return model.to_empty(device="cpu")


def _quiet_build(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_backbone(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _torchvision_format_state(name):
    case = REFS["models"][name]
    state = {}
    for key, shape in zip(case["keys"], case["shapes"]):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        else:
            state[key] = REF.deterministic_tensor(key, shape, *REF.fill_rule(key, shape))
    return state


def _torchvision_format_state_dict(name):
    """A state dict with torchvision's exact keys and shapes (from the fixture), filled."""
    return dict(_torchvision_format_state(name))  # a copy the caller may edit


def _save(state, path):
    torch.save(state, path)
    return path


# --- torchvision parity ----------------------------------------------------------------


def test_fixture_records_versions_and_same_fill_rule():
    assert REFS["versions"]["torchvision"].startswith("0.29")
    # The hash-based fill is exact integer arithmetic: the same input here as there.
    assert REF.fixed_input().double().sum().item() == REFS["input_sum"]


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_state_dict_keys_order_and_shapes_match_torchvision(name):
    with torch.device("meta"):  # keys and shapes only: no memory, no init
        state = BACKBONES[name]().state_dict()
    case = REFS["models"][name]
    assert list(state) == case["keys"]
    assert [tuple(t.shape) for t in state.values()] == [tuple(s) for s in case["shapes"]]


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_logits_and_trunk_features_match_torchvision(name):
    case = REFS["models"][name]
    model = REF.fill_deterministic_(_uninitialised(name)).eval()
    x = REF.fixed_input()
    with torch.no_grad():
        logits = model(x)
        trunk = convert_frozen_batchnorm(Trunk(model.trunk_layout()))
        features = trunk(x)
    assert trunk.out_channels == TRUNK_CHANNELS[name]
    scale = case["logits"].abs().max().item()
    torch.testing.assert_close(logits, case["logits"], rtol=1e-4, atol=1e-5 * scale)
    for level in ("C3", "C4", "C5"):
        ref = case[level]
        atol = 1e-5 * ref.abs().max().item()
        torch.testing.assert_close(features[level], ref, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_trainable_layers_match_torchvision_extractors(name):
    trunk = _quiet_build(name, frozen_bn=False)
    for k, expected in REFS["trainable"][name].items():
        for p in trunk.parameters():
            p.requires_grad_(True)
        trunk.freeze_stages(k)
        assert [n for n, p in trunk.named_parameters() if p.requires_grad] == expected, k


# --- trunks ----------------------------------------------------------------------------


# resnet34 shares resnet18's classes and is covered by the parity test above.
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "vovnet27_slim",
                                  "res2netlite72"])
def test_trunk_shapes_strides_and_channels(name):
    trunk = _quiet_build(name)
    assert trunk.out_channels == TRUNK_CHANNELS[name]
    assert trunk.strides == [8, 16, 32]
    height, width = 64, 96
    with torch.no_grad():
        features = trunk(torch.randn(1, 3, height, width))
    assert list(features) == ["C3", "C4", "C5"]
    for (level, f), c, s in zip(features.items(), trunk.out_channels, trunk.strides):
        assert f.shape == (1, c, height // s, width // s), level


@pytest.mark.parametrize("name", list(BACKBONES))
def test_trunk_keys_are_classifier_keys_without_head(name):
    with torch.device("meta"):
        classifier_keys = list(BACKBONES[name]().state_dict())
    expected = [k for k in classifier_keys if not k.startswith(HEAD_PREFIX[name])]
    if name == "mobilenet_v2":  # torchvision's detection body is `features` itself
        expected = [k[len("features."):] for k in expected]
    assert list(_quiet_build(name, frozen_bn=False).state_dict()) == expected


def test_trunk_rejects_bad_input_and_trainable_layers():
    trunk = _quiet_build("vovnet27_slim")
    with pytest.raises(ValueError, match=r"images must be a \(B, 3, H, W\)"):
        trunk(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"images must be a \(B, 3, H, W\)"):
        trunk(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"trainable_layers must be an int in \[0, 5\]"):
        trunk.freeze_stages(6)


def test_frozen_stages_get_no_gradient_and_trainable_ones_do():
    trunk = _quiet_build("resnet18", frozen_bn=True, trainable_layers=2)  # layer3, layer4
    features = trunk(torch.randn(1, 3, 64, 64))
    sum(f.sum() for f in features.values()).backward()
    assert trunk.conv1.weight.grad is None and trunk.layer2[0].conv1.weight.grad is None
    assert trunk.layer3[0].conv1.weight.grad is not None
    assert trunk.layer4[1].conv2.weight.grad.abs().sum() > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())


def test_unknown_backbone_lists_the_known_ones():
    known = "resnet18, resnet34, resnet50, mobilenet_v2, vovnet27_slim, res2netlite72"
    with pytest.raises(ValueError, match=known) as info:
        build_backbone("resnet81")
    assert "Did you mean resnet18" in str(info.value)


def test_frozen_bn_without_weights_warns():
    with pytest.warns(UserWarning, match="frozen_bn=False"):
        build_backbone("vovnet27_slim", frozen_bn=True)


# --- feature subsets (C2..C5) ------------------------------------------------------------

ALL_FEATURES = ("C2", "C3", "C4", "C5")
C2_CHANNELS = {"resnet18": 64, "resnet34": 64, "resnet50": 256,  # layer1 width × expansion
               "mobilenet_v2": 24,  # features[3], Table 2 row c=24 (last block at stride 4)
               "vovnet27_slim": 128,  # stage2 concat width
               "res2netlite72": 32}  # stage0, 32 wide whatever c


def test_resnet50_c2_to_c5_match_torchvision_intermediate_layer_getter():
    case = REFS["resnet50_c2_c5"]
    model = REF.fill_deterministic_(_uninitialised("resnet50")).eval()
    trunk = Trunk(model.trunk_layout(), ALL_FEATURES)
    assert list(trunk.state_dict()) == case["keys"]  # the getter's body: fc and avgpool gone
    convert_frozen_batchnorm(trunk)  # = eval-mode BatchNorm
    with torch.no_grad():
        features = trunk(REF.fixed_input(case["input_shape"]))
    assert list(features) == list(ALL_FEATURES)
    assert trunk.out_channels == [256, 512, 1024, 2048] and trunk.strides == [4, 8, 16, 32]
    for level in ALL_FEATURES:
        ref = case[level]
        torch.testing.assert_close(features[level], ref, rtol=1e-4,
                                   atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("name", list(BACKBONES))
def test_c2_to_c5_shapes_channels_and_strides(name):
    trunk = Trunk(_uninitialised(name).trunk_layout(), ["C5", "C2", "C4", "C3"])  # any order in
    assert trunk.feature_names == ALL_FEATURES  # finest first out
    assert trunk.out_channels == [C2_CHANNELS[name]] + TRUNK_CHANNELS[name]
    assert trunk.strides == [4, 8, 16, 32]
    with torch.no_grad():
        features = trunk.eval()(torch.zeros(1, 3, 64, 96))
    assert list(features) == list(ALL_FEATURES)
    for f, c, s in zip(features.values(), trunk.out_channels, trunk.strides):
        assert f.shape == (1, c, 64 // s, 96 // s)


@pytest.mark.parametrize("name, wanted, last_kept", [
    ("resnet18", ("C2", "C3"), "layer2"),
    ("resnet18", ("C2",), "layer1"),
    ("mobilenet_v2", ("C2",), "3"),
    ("mobilenet_v2", ("C3", "C4"), "13"),
    ("vovnet27_slim", ("C2", "C4"), "stage4"),
])
def test_subset_keeps_only_the_stages_it_needs(name, wanted, last_kept):
    layout = _uninitialised(name).trunk_layout()
    names = list(layout.modules)
    expected = names[: names.index(last_kept) + 1]  # nothing after the coarsest tap
    subset = Trunk(layout, wanted)
    assert [n for n, _ in subset.named_children()] == expected
    assert {key.split(".")[0] for key in subset.state_dict()} <= set(expected)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vovnet27_slim"])
def test_subset_outputs_equal_the_full_trunk_outputs(name):
    torch.manual_seed(0)
    classifier = BACKBONES[name]().eval()
    full = Trunk(classifier.trunk_layout(), ALL_FEATURES)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = full(x)
        for wanted in [("C2",), ("C3", "C5"), ("C4",), ("C3", "C4", "C5")]:
            subset = Trunk(classifier.trunk_layout(), wanted)(x)
            assert list(subset) == list(wanted)
            for level in wanted:
                assert torch.equal(subset[level], reference[level]), (wanted, level)


def test_dropped_stages_keep_torchvisions_trainable_layers_count():
    # torchvision counts trainable_layers from layer4 even when returned_layers=[1, 2]
    # dropped layer3 and layer4: trainable_layers=3 then trains layer2 only.
    trunk = _quiet_build("resnet18", frozen_bn=False, feature_names=("C2", "C3"))
    assert [len(group) for group in trunk.stage_groups] == [4, 1, 1, 0, 0]
    for k, expected in REFS["trainable_c2_c3"].items():
        for p in trunk.parameters():
            p.requires_grad_(True)
        trunk.freeze_stages(k)
        assert [n for n, p in trunk.named_parameters() if p.requires_grad] == expected, k


def test_build_backbone_default_features_and_c2_for_faster_rcnn():
    default = _quiet_build("resnet18")
    assert default.feature_names == ("C3", "C4", "C5") and default.strides == [8, 16, 32]
    trunk = _quiet_build("resnet18", feature_names=("C2", "C3", "C4", "C5"))
    assert trunk.out_channels == [64, 128, 256, 512] and trunk.strides == [4, 8, 16, 32]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())  # frozen_bn applied


@pytest.mark.parametrize("bad, message", [
    (("C3", "C6"), r"unknown names \['C6'\]"),
    (("P3",), r"unknown names \['P3'\]"),
    (("C3", "C4", "C3"), r"repeats \['C3'\]"),
    ((), "at least one"),
    ("C3", "list or tuple"),
])
def test_bad_feature_names_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        check_feature_names(bad)
    with pytest.raises(ValueError, match=message):
        Trunk(_uninitialised("resnet18").trunk_layout(), bad)
    with pytest.raises(ValueError, match=message):
        TinyTrunk(feature_names=bad)


def test_tiny_trunk_default_unchanged_and_subsets():
    default = TinyTrunk()
    assert default.feature_names == ("C3", "C4", "C5") and default.out_channels == [64, 128, 192]
    assert default.strides == [8, 16, 32] and len(default.stages) == 5
    torch.manual_seed(0)
    full = TinyTrunk(feature_names=ALL_FEATURES).eval()
    assert full.out_channels == [32, 64, 128, 192] and full.strides == [4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        features = full(x)
        assert [tuple(f.shape) for f in features.values()] == [
            (2, 32, 16, 8), (2, 64, 8, 4), (2, 128, 4, 2), (2, 192, 2, 1)]
        early = TinyTrunk(feature_names=("C2", "C3")).eval()
        assert len(early.stages) == 3  # stem, C2, C3: C4 and C5 are never built
        early.load_state_dict(full.state_dict(), strict=False)
        out = early(x)
    assert list(out) == ["C2", "C3"] and torch.equal(out["C3"], features["C3"])


# --- VoVNet ----------------------------------------------------------------------------


def test_vovnet27_slim_parameter_count_by_hand():
    # stem: 3*64*9 + 64*64*9 + 64*128*9 + BN 2*(64+64+128)        = 112,832
    # stage (in c_in, 3×3 width s, concat out c): c_in*s*9 + 4*s*s*9
    #   + (c_in + 5*s)*c (one-shot concat, x_0 included) + BN 2*(5*s + c)
    #   stage2 (128, 64, 128): 221,184 + 57,344 + 896       = 279,424
    #   stage3 (128, 80, 256): 322,560 + 135,168 + 1,312    = 459,040
    #   stage4 (256, 96, 384): 552,960 + 282,624 + 1,728    = 837,312
    #   stage5 (384, 112, 512): 838,656 + 483,328 + 2,144   = 1,324,128
    # fc 512*1000 + 1000                                      = 513,000
    model = vovnet27_slim()
    assert sum(p.numel() for p in model.parameters()) == 3_525_736  # ≈ 3.5 M, [vovnet] Table 2
    assert model.stage3.block1.concat.conv.in_channels == 128 + 5 * 80


def test_osa_module_aggregates_every_layer_once():
    model = vovnet27_slim().eval()
    block = model.stage2.block1
    x = torch.randn(1, 128, 8, 8)
    outputs = [x]
    for layer in block.layers:
        outputs.append(layer(outputs[-1]))
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.concat(torch.cat(outputs, 1)))


def test_repeated_osa_modules_use_identity_shortcuts():
    model = VoVNet([16, 16, 16, 16], [32, 48, 64, 80], [1, 1, 2, 1], num_layers=2, num_classes=3)
    assert not model.stage4.block1.identity and model.stage4.block2.identity
    trunk = Trunk(model.trunk_layout())
    assert trunk.out_channels == [48, 64, 80]
    with torch.no_grad():
        assert trunk(torch.zeros(1, 3, 64, 64))["C4"].shape == (1, 64, 4, 4)
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_mobilenet_v2_width_multiplier_trunk():
    # make_divisible(32 * 0.5) = 16, make_divisible(96 * 0.5) = 48; the last conv stays 1280.
    trunk = Trunk(MobileNetV2(width_mult=0.5).trunk_layout())
    assert trunk.out_channels == [16, 48, 1280]
    with torch.no_grad():
        features = trunk(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in features.values()] == [8, 4, 2]


# --- frozen BatchNorm --------------------------------------------------------------------


def _random_bn(channels, generator):
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=generator))
        bn.running_mean.copy_(torch.randn(channels, generator=generator))
        bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return bn


def test_frozen_bn_matches_torchvision_reference():
    case = REFS["frozen_bn"]
    layer = REF.fill_deterministic_(FrozenBatchNorm2d(5))
    assert list(layer.state_dict()) == case["keys"] and layer.eps == case["eps"] == 1e-5
    torch.testing.assert_close(layer(case["input"]), case["output"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frozen_bn_equals_eval_mode_batchnorm_in_train_mode_too(dtype):
    g = torch.Generator().manual_seed(0)
    bn = _random_bn(6, g).to(dtype).eval()
    frozen = convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and len(list(frozen.parameters())) == 0
    assert frozen.running_var.dtype == dtype
    x = torch.randn(3, 6, 5, 4, generator=g, dtype=dtype)
    frozen.train()  # no batch statistics, whatever the mode
    torch.testing.assert_close(frozen(x), bn(x))


def test_frozen_bn_keeps_the_input_dtype():
    frozen = convert_frozen_batchnorm(_random_bn(3, torch.Generator().manual_seed(2)).eval())
    x = torch.randn(1, 3, 2, 2)
    y16 = frozen(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), frozen(x), rtol=2e-2, atol=2e-2)


def test_frozen_bn_loads_batchnorm_state_dict_strictly():
    bn = _random_bn(4, torch.Generator().manual_seed(1))
    frozen = FrozenBatchNorm2d(4)
    frozen.load_state_dict(bn.state_dict(), strict=True)  # num_batches_tracked dropped
    torch.testing.assert_close(frozen.running_var, bn.running_var)


def test_convert_frozen_batchnorm_nested_and_rejects_untracked():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.BatchNorm2d(4)))
    convert_frozen_batchnorm(model)
    assert isinstance(model[1][0], FrozenBatchNorm2d)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        convert_frozen_batchnorm(nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4, H, W\)"):
        FrozenBatchNorm2d(4)(torch.zeros(1, 3, 2, 2))


# --- pretrained loading -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_format_checkpoint_loads_strictly(name, tmp_path):
    state = _torchvision_format_state_dict(name)
    path = _save(state, tmp_path / f"{name}.pth")
    model = build_classifier(name, pretrained=str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    trunk = build_backbone(name, pretrained=path)  # frozen BN, 3 trainable stages
    bn_in_trunk, bn_in_file, frozen_stage = {
        "resnet18": ("bn1", "bn1", "layer1"),
        "mobilenet_v2": ("0.1", "features.0.1", "4"),
    }[name]
    assert isinstance(trunk.get_submodule(bn_in_trunk), FrozenBatchNorm2d)
    torch.testing.assert_close(trunk.get_submodule(bn_in_trunk).running_var,
                               state[f"{bn_in_file}.running_var"])
    assert not any(p.requires_grad for p in trunk.get_submodule(frozen_stage).parameters())


def _published(state, directory, stem):
    """Save ``state`` as ``<stem>-<sha256[:8]>.pth`` (torchvision's naming) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "raw.pth"
    torch.save(state, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    return raw.rename(directory / f"{stem}-{digest[:8]}.pth")


def test_pretrained_url_through_build_backbone(tmp_path, monkeypatch):
    state = _torchvision_format_state_dict("mobilenet_v2")
    source = _published(state, tmp_path / "server", "mobilenet_v2")
    monkeypatch.setenv("FCOS_FROM_SCRATCH_CACHE", str(tmp_path / "env_cache"))
    assert default_cache_dir() == tmp_path / "env_cache"
    trunk = build_backbone("mobilenet_v2", pretrained=source.as_uri())
    assert (tmp_path / "env_cache" / source.name).is_file()
    torch.testing.assert_close(trunk.get_submodule("18.1").running_mean,
                               state["features.18.1.running_mean"])
    # torchvision's default with weights: the last 3 of 6 stages train (features 7-18).
    assert trunk.get_submodule("7").conv[0][0].weight.requires_grad
    assert not trunk.get_submodule("6").conv[0][0].weight.requires_grad


def test_imagenet_shortcut_uses_torchvision_urls_from_cache(tmp_path, monkeypatch):
    assert sha256_prefix_from_name(IMAGENET_URLS["resnet18"].rsplit("/", 1)[1]) == "f37072fd"
    assert sha256_prefix_from_name("weights.pth") is None
    cache = tmp_path / "cache"
    cache.mkdir()
    state = _torchvision_format_state_dict("resnet18")
    torch.save(state, cache / "resnet18-f37072fd.pth")  # pre-seeded cache: no download
    monkeypatch.setattr(pretrained_mod.urllib.request, "urlopen", None)
    model = build_classifier("resnet18", pretrained="imagenet", cache_dir=cache)
    torch.testing.assert_close(model.fc.bias, state["fc.bias"])
    with pytest.raises(ValueError, match="no download for backbone 'vovnet27_slim'"):
        build_classifier("vovnet27_slim", pretrained="imagenet")
