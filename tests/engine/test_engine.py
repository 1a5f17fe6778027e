"""Tests for fcos_from_scratch.engine: schedule values, parameter groups, atomic
checkpoints, RNG round trip, exact resume, the non-finite guard, logs and plots."""

import json
import math
import os
import random
import time

import numpy as np
import pytest
import torch

from fcos_from_scratch.config import TrainConfig
from fcos_from_scratch.engine import checkpoint as ckpt
from fcos_from_scratch.engine.loop import NonFiniteLossError, check_finite, train_one_epoch
from fcos_from_scratch.engine.optim import (
    LRMultiplier, TimeBudget, build_optimizer, build_scheduler, lr_curve, parameter_groups)
from fcos_from_scratch.visualize.curves import plot_metrics
from fcos_from_scratch.engine.progress import MetricsWriter, ProgressBar, format_seconds, read_metrics
from fcos_from_scratch.engine.trainer import fit

from tiny_detector import MeanIoUEvaluator, TinyBoxes, TinyDetector, collate


def tiny_config(tmp_path, **changes):
    base = dict(dataset="digits", optimizer="adamw", lr=0.01, min_lr=1e-4,
                weight_decay=0.01, epochs=3, batch_size=4, grad_clip_norm=1.0, device="cpu",
                out=str(tmp_path / "run"), log_every=1, progress=False, warmup_fraction=0.2)
    base.update(changes)
    return TrainConfig.from_dict(base)


def run_tiny(config, **kwargs):
    torch.manual_seed(config.seed)
    return fit(config, model=TinyDetector(), train_set=TinyBoxes(12),
               val_set=kwargs.pop("val_set", TinyBoxes(4, seed=1, augment=False)),
               test_set=kwargs.pop("test_set", TinyBoxes(4, seed=2, augment=False)),
               evaluator_factory=lambda dataset: MeanIoUEvaluator(), collate=collate, stream=open(os.devnull, "w"),
               **kwargs)


# --- schedule ----------------------------------------------------------------------------
def test_schedule_hand_computed_values():
    # T = 100 steps, W = 10, w0 = 0.001, lr 1e-2 -> 1e-5 ([fcos-light] Fig. 10)
    config = TrainConfig(lr=1e-2, min_lr=1e-5, warmup_fraction=0.1, warmup_factor=0.001, epochs=10)
    curve = lr_curve(config, steps_per_epoch=10)
    assert len(curve) == 100
    assert curve[0] == pytest.approx(1e-5)  # 0.001 * 1e-2
    assert curve[5] == pytest.approx(1e-2 * (0.001 + 0.999 * 0.5))  # half-way through warm-up
    assert curve[10] == pytest.approx(1e-2)  # cosine starts at the base LR
    assert curve[55] == pytest.approx((1e-2 + 1e-5) / 2)  # cos(pi/2) = 0: the midpoint
    assert curve[99] == pytest.approx(1e-5 + (1e-2 - 1e-5) * (1 + math.cos(math.pi * 89 / 90)) / 2)
    assert LRMultiplier(100, 10, min_ratio=1e-3)(100) == pytest.approx(1e-3)  # ends at min_lr
    assert all(a >= b for a, b in zip(curve[10:], curve[11:]))  # monotone after warm-up


def test_constant_warmup_and_step_decay():
    f = LRMultiplier(total_steps=100, warmup_steps=5, warmup="constant", warmup_factor=0.1,
                     schedule="step", milestones=(50, 80), gamma=0.1)
    assert [f(s) for s in (0, 4)] == [0.1, 0.1]
    assert [f(s) for s in (5, 49, 50, 79, 80, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    config = TrainConfig(schedule="step", lr_steps=(2, 3), epochs=4, warmup="none")
    assert lr_curve(config, 2) == pytest.approx([0.01] * 4 + [1e-3] * 2 + [1e-4] * 2)


def test_scheduler_drives_optimizer_lr_per_step():
    config = TrainConfig(lr=0.1, min_lr=0.001, warmup_fraction=0.25, epochs=2)
    model = torch.nn.Linear(2, 1)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=4)
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(lr_curve(config, 4))
    assert {g["lr"] for g in optimizer.param_groups} == {optimizer.param_groups[0]["lr"]}


def test_bad_schedule_inputs():
    with pytest.raises(ValueError, match="min_lr"):
        lr_curve(TrainConfig(lr=1e-3, min_lr=1e-2), 1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_curve(TrainConfig(), 0)


# --- parameter groups ----------------------------------------------------------------------
def test_no_weight_decay_on_norms_biases_and_scales():
    model = TinyDetector()
    model.box.weight.requires_grad_(False)
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model.conv.weight, model.cls.weight])
    assert ids(no_decay["params"]) == ids([model.conv.bias, model.norm.weight, model.norm.bias,
                                           model.cls.bias, model.box.bias, model.scale])
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8
    assert isinstance(build_optimizer(model, TrainConfig(optimizer="adamw")), torch.optim.AdamW)


def test_optimisers_use_the_fused_update_and_match_the_loop():
    """On CPU float parameters every optimiser takes the fused update; its steps equal the
    per-tensor loop's up to float32 rounding (same algorithm, one pass)."""
    for name in ("sgd", "adamw", "adam"):
        results = []
        for fused in (True, False):
            torch.manual_seed(0)
            model = TinyDetector()
            optimizer = build_optimizer(model, TrainConfig(optimizer=name, lr=0.01, weight_decay=0.05))
            assert optimizer.defaults["fused"] is True
            if not fused:
                for group in optimizer.param_groups:
                    group["fused"] = False
            for step in range(3):
                optimizer.zero_grad()
                torch.manual_seed(step)
                sum((p * torch.randn_like(p)).sum() for p in model.parameters()).backward()
                optimizer.step()
            results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert torch.allclose(results[0], results[1], rtol=1e-5, atol=1e-6), name


# --- checkpoints -------------------------------------------------------------------------
class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # simulates a crash in the middle of a write


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.atomic_save({"model": {"w": torch.zeros(2)}, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    ckpt.atomic_save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'model'"):
        ckpt.load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    ckpt.atomic_save({"rng": ckpt.capture_rng_state()}, tmp_path / "rng.pt")
    first = (torch.rand(3), random.random(), np.random.rand())
    ckpt.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    second = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


# --- exact resume ------------------------------------------------------------------------
class StopAfter(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = run_tiny(tiny_config(tmp_path / "a"))
    assert full.steps == 9 and len(full.history) == 9  # 3 epochs x ceil(12 / 4)

    def crash(epoch, result):
        if epoch == 0:
            raise StopAfter  # "killed" right after the epoch-1 checkpoint was written

    config = tiny_config(tmp_path / "b")
    with pytest.raises(StopAfter):
        run_tiny(config, on_epoch_end=crash)
    assert ckpt.load_checkpoint(tmp_path / "b" / "run" / "last.pt")["epoch"] == 1
    torch.manual_seed(1234)  # a different process state must not matter
    resumed = run_tiny(config.replace(resume="auto"))
    assert resumed.steps == 9 and len(resumed.history) == 6
    for got, want in zip(resumed.history, full.history[3:]):
        assert got == want  # bit-identical losses
    a = ckpt.load_checkpoint(tmp_path / "a" / "run" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "run" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")
             if r["kind"] == "train"]
    assert steps == list(range(1, 10))  # no duplicated records after the resume


# --- non-finite guard --------------------------------------------------------------------
class NaNAtStep(TinyDetector):
    """Returns a NaN regression loss on its ``bad_call``-th training call (0-based)."""

    def __init__(self, bad_call):
        super().__init__()
        self.calls, self.bad_call = 0, bad_call

    def forward(self, images, targets=None):
        out = super().forward(images, targets)
        if self.training:
            if self.calls == self.bad_call:
                out["loss_reg"] = out["loss_reg"] * float("nan")
            self.calls += 1
        return out


def test_nan_guard_names_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path)
    torch.manual_seed(0)
    saved = {}

    def remember(epoch, result):
        saved[epoch] = (tmp_path / "run" / "last.pt").read_bytes()

    with pytest.raises(NonFiniteLossError) as info:
        fit(config, model=NaNAtStep(bad_call=4), train_set=TinyBoxes(12), collate=collate,
            on_epoch_end=remember, stream=open(os.devnull, "w"))
    assert list(saved) == [0] and (tmp_path / "run" / "last.pt").read_bytes() == saved[0]
    err = info.value
    assert (err.step, err.epoch, err.term) == (4, 1, "loss_reg") and math.isnan(err.value)
    assert "step 4" in str(err) and "loss_reg" in str(err) and "lr" in str(err)
    last = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 1 and last["step"] == 3  # the epoch before the NaN, intact
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]


def test_check_finite_catches_inf():
    check_finite({"loss_cls": 1.0}, step=0, epoch=0)
    with pytest.raises(NonFiniteLossError, match="loss_ctr = inf at step 7"):
        check_finite({"loss_cls": 1.0, "loss_ctr": float("inf")}, step=7, epoch=0)


def test_gradient_clipping_bounds_the_update(tmp_path):
    model = TinyDetector(dropout=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = torch.utils.data.DataLoader(TinyBoxes(4, augment=False), batch_size=4,
                                         collate_fn=collate)
    writer = MetricsWriter(tmp_path / "m.jsonl")
    train_one_epoch(model, optimizer, loader, torch.device("cpu"), grad_clip_norm=0.01,
                    metrics=writer, log_every=1, progress=False)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert float(moved) == pytest.approx(0.01, rel=1e-4)  # |lr * clipped grad| = 0.01
    (record,) = read_metrics(tmp_path / "m.jsonl")
    assert record["grad_norm"] > 0.01 and record["step"] == 1 and "loss_cls" in record


# --- the whole run's outputs ---------------------------------------------------------------
def test_fit_writes_checkpoints_metrics_and_plots(tmp_path):
    result = run_tiny(tiny_config(tmp_path, epochs=2, eval_every=1))
    out = tmp_path / "run"
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(result.metrics)
    best = ckpt.load_checkpoint(out / "best.pt")
    records = read_metrics(out / "metrics.jsonl")
    assert best["best_metric"] == max(r["AP"] for r in records if r["kind"] == "val")
    assert best["extra"]["class_names"] == ["left", "middle", "right"]
    (test,) = [r for r in records if r["kind"] == "test"]  # the test split, evaluated once
    assert test["AP"] == pytest.approx(result.metrics["AP"])
    saved = json.loads((out / "config.json").read_text())
    assert TrainConfig.from_dict(saved["train"]).epochs == 2
    for name in ("loss.png", "loss_cls.png", "loss_reg.png", "lr.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_time_budget_stops_early_and_still_evaluates(tmp_path):
    result = run_tiny(tiny_config(tmp_path, max_minutes=1e-9))
    assert result.stopped_early and result.steps == 1 and "AP" in result.metrics


def test_progress_bar_shows_eta_and_terms(tmp_path):
    assert format_seconds(3725) == "1:02:05" and format_seconds(float("inf")) == "?"
    with open(tmp_path / "log.txt", "w") as stream:
        bar = ProgressBar(4, "epoch 1/2", stream=stream, every=2)
        for _ in range(4):
            bar.update({"loss_cls": 0.5, "lr": 1e-3})
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("epoch 1/2 [####################] 4/4 ")
    assert "<0:00:00" in lines[-1] and "cls 0.500" in lines[-1] and "lr 1.00e-03" in lines[-1]


def test_plot_metrics_one_png_per_term(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    for step in range(1, 4):
        writer.write("train", step=step, epoch=0, lr=0.1 / step, loss=1.0 / step, loss_ctr=0.5)
    writer.write("eval", step=3, epoch=0, AP=0.5)
    paths = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["loss.png", "loss_ctr.png", "lr.png"]


def test_time_budget_drives_the_schedule_to_its_end():
    config = TrainConfig(lr=0.1, min_lr=0.001, warmup="none", epochs=1)
    optimizer = build_optimizer(torch.nn.Linear(2, 1), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=100)
    optimizer.step()
    scheduler.step()  # one real step taken ...
    half = TimeBudget(seconds=10.0, total_steps=100, drive_schedule=True,
                      start=time.perf_counter() - 5.0)  # ... but half of the time is gone
    half.advance(scheduler)
    assert scheduler.last_epoch in (50, 51)  # floor(f * T) with f just above 0.5
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_curve(config, 100)[scheduler.last_epoch])
    over = TimeBudget(seconds=1.0, total_steps=100, drive_schedule=True, start=time.perf_counter() - 2)
    over.advance(scheduler)
    assert over.expired() and optimizer.param_groups[0]["lr"] == pytest.approx(0.001)
    passive = TimeBudget(seconds=1.0, total_steps=100, start=time.perf_counter() - 2)
    passive.advance(scheduler)  # without drive_schedule only the stop applies
    assert scheduler.last_epoch == 100


def test_time_budget_never_skips_the_warmup():
    config = TrainConfig(lr=0.1, warmup_fraction=0.1, epochs=1)  # W = 10 of T = 100
    optimizer = build_optimizer(torch.nn.Linear(2, 1), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=100)
    budget = TimeBudget(10.0, 100, drive_schedule=True, warmup_steps=10, start=time.perf_counter())
    for step in range(1, 10):
        optimizer.step()
        scheduler.step()
        budget.advance(scheduler, elapsed=5.0)  # half the time gone, still warming up
        assert scheduler.last_epoch == step
    optimizer.step()
    scheduler.step()  # the warm-up's last step is done: now time counts
    budget.advance(scheduler, elapsed=5.0)
    assert scheduler.last_epoch == 10 + 45  # W + floor(0.5 * (T - W))


def test_infinite_gradient_norm_stops_before_the_update():
    model = TinyDetector(dropout=0.0)
    model.box.weight.register_hook(lambda grad: grad * float("inf"))
    before = [p.detach().clone() for p in model.parameters()]
    loader = torch.utils.data.DataLoader(TinyBoxes(4, augment=False), batch_size=4, collate_fn=collate)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match="grad_norm = (inf|nan) at step 5"):
        train_one_epoch(model, optimizer, loader, torch.device("cpu"), grad_clip_norm=1.0,
                        start_step=5, progress=False)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_metrics_records_average_the_steps_since_the_last_record(tmp_path):
    model = TinyDetector(dropout=0.0)
    loader = torch.utils.data.DataLoader(TinyBoxes(12, augment=False), batch_size=2, collate_fn=collate)
    writer = MetricsWriter(tmp_path / "m.jsonl")
    result = train_one_epoch(model, torch.optim.SGD(model.parameters(), lr=0.01), loader,
                             torch.device("cpu"), metrics=writer, log_every=4, progress=False)
    records = read_metrics(tmp_path / "m.jsonl")
    assert [r["step"] for r in records] == [4, 6]  # every 4 steps and the epoch's last
    losses = [h["loss"] for h in result.history]
    assert records[0]["loss"] == pytest.approx(sum(losses[:4]) / 4)
    assert records[1]["loss"] == pytest.approx(sum(losses[4:]) / 2)


def test_time_budget_lead_is_not_carried_forward():
    # Time ran ahead once (e.g. data preparation): the schedule jumps to the time
    # position, but when time stands still later steps must not add to that lead:
    # the position is max(steps, time position), not (jump + steps).
    config = TrainConfig(lr=0.1, min_lr=0.001, warmup="none", epochs=1)
    optimizer = build_optimizer(torch.nn.Linear(2, 1), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=100)
    budget = TimeBudget(10.0, 100, drive_schedule=True, start=time.perf_counter())
    for steps_done in range(1, 4):
        optimizer.step()
        scheduler.step()
        budget.advance(scheduler, elapsed=3.0, steps_done=steps_done)
        assert scheduler.last_epoch == 30  # floor(0.3 * 100), three times
    for steps_done in range(4, 41):
        optimizer.step()
        scheduler.step()
        budget.advance(scheduler, elapsed=3.0, steps_done=steps_done)
    assert scheduler.last_epoch == 40  # the steps have overtaken the clock
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_curve(config, 100)[40])
