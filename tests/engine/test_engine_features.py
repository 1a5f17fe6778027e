"""The engine features every detector relies on: only 'loss*' outputs are summed,
best.pt is chosen on val and test is evaluated once, LR multipliers per module
prefix, Adam with coupled L2, EMA of the weights, init_from, and run lengths in steps."""

import json
import os

import pytest
import torch

from fcos_from_scratch.config import TrainConfig
from fcos_from_scratch.engine import checkpoint as ckpt
from fcos_from_scratch.engine.builders import init_weights
from fcos_from_scratch.engine.ema import ModelEMA
from fcos_from_scratch.engine.optim import build_multiplier, build_optimizer, parameter_groups
from fcos_from_scratch.engine.progress import read_metrics
from fcos_from_scratch.engine.trainer import fit

from tiny_detector import MeanIoUEvaluator, TinyBoxes, TinyDetector, collate


def tiny_config(tmp_path, **changes):
    base = dict(optimizer="adamw", lr=0.01, min_lr=1e-4, weight_decay=0.01, epochs=2, batch_size=4,
                device="cpu", out=str(tmp_path / "run"), log_every=1, progress=False)
    return TrainConfig.from_dict({**base, **changes})


def run(config, model=None, **kwargs):
    torch.manual_seed(config.seed)
    return fit(config, model=model or TinyDetector(), train_set=TinyBoxes(12),
               val_set=kwargs.pop("val_set", TinyBoxes(4, seed=1, augment=False)),
               test_set=TinyBoxes(4, seed=2, augment=False),
               evaluator_factory=lambda dataset: MeanIoUEvaluator(), collate=collate,
               stream=open(os.devnull, "w"), **kwargs)


class WithExtras(TinyDetector):
    """Returns a non-loss scalar beside its losses, as RefineDetLite's sigma or positives."""

    def forward(self, images, targets=None):
        out = super().forward(images, targets)
        if self.training:
            out = {**out, "num_pos": torch.tensor(7.0), "sigma_cls": self.scale.detach() * 2}
        return out


def test_only_loss_keys_are_summed_and_other_scalars_are_logged(tmp_path):
    result = run(tiny_config(tmp_path, epochs=1), model=WithExtras())
    first = result.history[0]
    assert first["num_pos"] == 7.0 and "sigma_cls" in first
    losses = sum(v for k, v in first.items() if k.startswith("loss_"))
    assert first["loss"] == pytest.approx(losses)  # 7.0 was not added
    (record, *_) = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert record["num_pos"] == 7.0


def test_best_is_chosen_on_val_and_test_is_evaluated_once(tmp_path):
    result = run(tiny_config(tmp_path, epochs=3, eval_every=1))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    val = [r for r in records if r["kind"] == "val"]
    tests = [r for r in records if r["kind"] == "test"]
    assert len(val) == 3 and len(tests) == 1  # val after every epoch, test once at the end
    best = ckpt.load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["best_metric"] == max(r["AP"] for r in val)
    assert best["model_name"] == "fcos"  # the detector's name travels with the weights
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == pytest.approx(result.metrics)


def test_without_a_val_split_best_is_the_last_weights(tmp_path):
    run(tiny_config(tmp_path, epochs=2), val_set=None)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert not [r for r in records if r["kind"] == "val"]
    best, last = (ckpt.load_checkpoint(tmp_path / "run" / n) for n in ("best.pt", "last.pt"))
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


def test_lr_multipliers_by_module_prefix():
    model = TinyDetector()
    groups = parameter_groups(model, 0.1, lr=0.01, lr_mults=("conv=0.5", "cls.weight=2"))
    by_name = {g["name"]: g for g in groups}
    assert by_name["decay@conv"]["lr"] == 0.005 and by_name["no_decay@conv"]["lr"] == 0.005
    assert by_name["decay@cls.weight"]["lr"] == 0.02
    assert by_name["decay"]["lr"] == 0.01 and by_name["no_decay"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="prefix=multiplier"):
        TrainConfig(lr_mults=("backbone",))


def test_lr_multipliers_scale_the_schedule_too():
    model = TinyDetector()
    config = TrainConfig(lr=0.1, lr_mults=("conv=0.5",), warmup="none", epochs=1)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_multiplier(config, 10))
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["decay@conv"] == pytest.approx(0.5 * rates["decay"])


def test_adam_is_coupled_l2_and_adamw_decoupled():
    config = TrainConfig(optimizer="adam", weight_decay=5e-4, betas=(0.9, 0.999))
    optimizer = build_optimizer(TinyDetector(), config)
    assert type(optimizer) is torch.optim.Adam
    assert {g["weight_decay"] for g in optimizer.param_groups} == {5e-4, 0.0}
    # One step from a zero gradient: Adam's L2 enters the gradient (moves the weight by
    # ~lr), AdamW's decay shrinks it by lr * wd.
    for name, expected in (("adam", 1e-3), ("adamw", 1e-3 * 5e-4 * 2.0)):
        weight = torch.nn.Parameter(torch.full((2, 2), 2.0, dtype=torch.float64))
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        opt = cls([{"params": [weight], "weight_decay": 5e-4}], lr=1e-3)
        weight.grad = torch.zeros_like(weight)
        opt.step()
        assert float(2.0 - weight.detach()[0, 0]) == pytest.approx(expected, rel=1e-3)


def test_ema_update_is_the_weighted_average():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 0.0)
    ema = ModelEMA(model, decay=0.9)
    torch.nn.init.constant_(model.weight, 1.0)
    ema.update(model)  # n = 1: d = min(0.9, 2 / 11)
    assert float(ema.module.weight) == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        ema.update(model)
    assert float(ema.module.weight) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, 1.0)


def test_ema_weights_are_evaluated_and_saved(tmp_path):
    run(tiny_config(tmp_path, ema_decay=0.5))
    last = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    best = ckpt.load_checkpoint(tmp_path / "run" / "best.pt")
    assert last["ema"]["updates"] == 6  # 2 epochs x 3 steps
    assert all(torch.equal(best["model"][k], last["ema"]["module"][k]) for k in best["model"])
    assert not all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


def test_init_from_loads_matching_weights_only(tmp_path):
    run(tiny_config(tmp_path, epochs=1))
    source = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    other = TinyDetector(num_classes=5)  # a new class count: the class layer stays fresh
    loaded, skipped = init_weights(other, str(tmp_path / "run" / "last.pt"))
    assert skipped == ["cls.bias", "cls.weight"]
    assert torch.equal(other.conv.weight, source["conv.weight"]) and "conv.weight" in loaded
    with pytest.raises(ValueError, match="no tensor matches"):
        init_weights(torch.nn.Linear(3, 3), str(tmp_path / "run" / "last.pt"))


def test_length_and_milestones_in_steps(tmp_path):
    # 12 images, batch 4: 3 steps per epoch; max_steps = 7 runs 3 epochs, the last one short.
    result = run(tiny_config(tmp_path, max_steps=7, epochs=1))
    assert result.steps == 7 and result.epochs_done == 3
    config = TrainConfig(schedule="step", lr_milestone_steps=(4, 6), max_steps=8, warmup="none")
    multiplier = build_multiplier(config, 3)
    assert multiplier.total_steps == 8
    assert [multiplier(s) for s in (3, 4, 5, 6)] == pytest.approx([1, 0.1, 0.1, 0.01])
