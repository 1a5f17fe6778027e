"""A run folder is never clobbered; resume is exact after SIGKILL/SIGTERM mid-epoch and
robust to what a killed run leaves behind; the NaN guard checks the weights.

All runs use the tiny detector (12 images, batch 4: 3 steps per epoch), so each
``fit`` takes a fraction of a second; the SIGKILL test runs two short subprocesses.
"""

import io
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TESTS
from fcos_from_scratch.engine import checkpoint as ckpt
from fcos_from_scratch.engine.loop import NonFiniteLossError
from fcos_from_scratch.engine.progress import read_metrics
from fcos_from_scratch.engine.run_folder import RunFolderError
from fcos_from_scratch.engine.trainer import TrainingInterrupted

from test_engine import NaNAtStep, run_tiny, tiny_config
from tiny_detector import TinyBoxes, TinyDetector


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """The PNG curves (tested in test_engine.py) cost ~1 s per run under load; not drawn here."""
    monkeypatch.setattr("fcos_from_scratch.engine.trainer.plot_metrics", lambda *args: None)


def train_records(path):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(path) if r["kind"] == "train"]


# --- the run folder ----------------------------------------------------------------------
def test_a_folder_that_holds_a_run_is_refused_and_left_untouched(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    run_tiny(config)
    out = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(RunFolderError, match="already holds a run.*--resume=auto.*--overwrite.*--out"):
        run_tiny(config)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    again = run_tiny(config.replace(overwrite=True))  # asked for: replaced
    assert again.steps == 3 and len(train_records(out / "metrics.jsonl")) == 3


def test_nothing_is_written_when_set_up_fails(tmp_path):
    config = tiny_config(tmp_path, resume=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="missing.pt"):
        run_tiny(config)
    assert not (tmp_path / "run").exists()
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")  # truncated / foreign file
    with pytest.raises(ValueError, match="bad.pt could not be read"):
        run_tiny(config.replace(resume=str(tmp_path / "bad.pt")))
    assert not (tmp_path / "run").exists()


def test_out_must_be_a_writable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="not a writable folder"):
        run_tiny(tiny_config(tmp_path, out=str(tmp_path / "file" / "run")))
    with pytest.raises(RunFolderError, match="is a file"):
        run_tiny(tiny_config(tmp_path, out=str(tmp_path / "file")))


def test_resume_auto_with_nothing_to_resume_says_so(tmp_path):
    log = io.StringIO()
    torch.manual_seed(0)
    from fcos_from_scratch.engine.trainer import fit
    from tiny_detector import MeanIoUEvaluator, collate
    fit(tiny_config(tmp_path, epochs=1, resume="auto"), model=TinyDetector(), train_set=TinyBoxes(12),
        evaluator_factory=lambda d: MeanIoUEvaluator(), collate=collate, stream=log)
    assert "--resume=auto: no" in log.getvalue() and "starting a fresh run" in log.getvalue()


def test_resume_survives_a_partial_jsonl_line_and_stale_temp_files(tmp_path):
    config = tiny_config(tmp_path, epochs=2)

    def stop(epoch, result):
        raise KeyError("stop")

    with pytest.raises(KeyError):
        run_tiny(config, on_epoch_end=stop)
    out = tmp_path / "run"
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "st')  # killed mid-write
    (out / ".last.pt.abc123.tmp").write_bytes(b"\0" * 1000)  # an interrupted atomic write
    resumed = run_tiny(config.replace(resume="auto"))
    assert resumed.steps == 6 and not (out / ".last.pt.abc123.tmp").exists()
    assert [r["step"] for r in train_records(out / "metrics.jsonl")] == list(range(1, 7))


def test_resume_with_another_class_count_names_the_tensor_and_the_field(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    run_tiny(config)
    from fcos_from_scratch.engine.trainer import fit
    with pytest.raises(ValueError, match=r"cls.weight is \(3, 8\) in the checkpoint but \(5, 8\) here"):
        fit(config.replace(resume="auto"), model=TinyDetector(num_classes=5), train_set=TinyBoxes(12))


def test_world_size_change_is_reported(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    with pytest.raises(KeyError):
        run_tiny(config, on_epoch_end=lambda e, r: (_ for _ in ()).throw(KeyError("stop")))
    path = tmp_path / "run" / "last.pt"
    state = ckpt.load_checkpoint(path)
    state["rng_per_rank"] = state["rng_per_rank"] * 2  # as if written by 2 processes
    ckpt.atomic_save(state, path)
    log = io.StringIO()
    from fcos_from_scratch.engine.trainer import fit
    from tiny_detector import collate
    fit(config.replace(resume="auto"), model=TinyDetector(), train_set=TinyBoxes(12), collate=collate,
        stream=log)
    assert "written by 2 process(es), this run has 1" in log.getvalue()


def test_short_runs_warn_that_they_never_augment(tmp_path):
    log = io.StringIO()
    from fcos_from_scratch.engine.trainer import fit
    from tiny_detector import collate
    fit(tiny_config(tmp_path, epochs=2, no_aug_epochs=2), model=TinyDetector(), train_set=TinyBoxes(12),
        collate=collate, stream=log)
    assert "no epoch is augmented" in log.getvalue()


# --- time budget ---------------------------------------------------------------------------
def test_resuming_a_run_that_used_its_budget_trains_nothing(tmp_path):
    config = tiny_config(tmp_path, max_minutes=1e-9, epochs=2)
    first = run_tiny(config)
    assert first.stopped_early and first.steps == 1 and first.epochs_done == 0  # a cut epoch is not done
    state = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 0 and state["extra"]["epoch_progress"]["batch"] == 1
    again = run_tiny(config.replace(resume="auto"))
    assert again.steps == 1 and again.history == [] and again.stopped_early
    more = run_tiny(config.replace(resume="auto", max_minutes=0.0))  # more time: the rest, exactly
    assert more.steps == 6 and len(more.history) == 5


# --- mid-epoch checkpoints: SIGTERM in process, SIGKILL in a subprocess --------------------
class SignalAt(TinyBoxes):
    """Sends ``signum`` to this process at the ``at``-th item load (0-based)."""

    def __init__(self, at, signum, **kwargs):
        super().__init__(12, **kwargs)
        self.calls, self.at, self.signum = 0, at, signum

    def __getitem__(self, index):
        self.calls += 1
        if self.calls - 1 == self.at:
            os.kill(os.getpid(), self.signum)
        return super().__getitem__(index)


def test_sigterm_mid_epoch_saves_and_resumes_exactly(tmp_path):
    full = run_tiny(tiny_config(tmp_path / "a", epochs=2, checkpoint_every=0))
    config = tiny_config(tmp_path / "b", epochs=2, checkpoint_every=0)
    from fcos_from_scratch.engine.trainer import fit
    from tiny_detector import MeanIoUEvaluator, collate
    torch.manual_seed(config.seed)
    with pytest.raises(TrainingInterrupted, match="SIGTERM.*step 5.*--resume=auto"):
        fit(config, model=TinyDetector(), train_set=SignalAt(17, signal.SIGTERM), collate=collate,
            stream=open(os.devnull, "w"))  # signal while loading step 5's batch: it still finishes
    state = ckpt.load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert (state["epoch"], state["step"], state["extra"]["epoch_progress"]["batch"]) == (1, 5, 2)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    resumed = run_tiny(config.replace(resume="auto"))
    assert resumed.history == full.history[5:]
    assert train_records(tmp_path / "b" / "run" / "metrics.jsonl") == \
        train_records(tmp_path / "a" / "run" / "metrics.jsonl")


_KILLED_RUN = """
import os, signal, sys, torch
sys.path[:0] = [{tests!r}, {engine!r}]
from test_engine import tiny_config
from tiny_detector import TinyBoxes, TinyDetector, MeanIoUEvaluator, collate
from test_engine_robust import SignalAt
from fcos_from_scratch.engine import trainer
from fcos_from_scratch.engine.trainer import fit
trainer.plot_metrics = lambda *args: None
config = tiny_config(__import__("pathlib").Path({root!r}), epochs=2, checkpoint_every=2)
torch.manual_seed(config.seed)
fit(config, model=TinyDetector(), train_set=SignalAt({kill_at}, signal.SIGKILL), collate=collate,
    val_set=TinyBoxes(4, seed=1, augment=False), test_set=TinyBoxes(4, seed=2, augment=False),
    evaluator_factory=lambda d: MeanIoUEvaluator(), stream=open(os.devnull, "w"))
"""


def _run_killed(root, kill_at):
    code = _KILLED_RUN.format(tests=str(TESTS), engine=str(TESTS / "engine"), root=str(root),
                              kill_at=kill_at)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO)  # imports this checkout's package


def test_sigkill_mid_epoch_then_resume_gives_the_same_losses(tmp_path):
    full = run_tiny(tiny_config(tmp_path / "a", epochs=2, checkpoint_every=2))
    # Items 0-11 are epoch 0; 12-15 step 4 (epoch 1, batch 0), checkpointed (4 % 2 == 0);
    # killed while loading item 17, in step 5: mid-epoch, after the step-4 checkpoint.
    killed = _run_killed(tmp_path / "b", kill_at=17)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = ckpt.load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert (state["epoch"], state["step"], state["extra"]["epoch_progress"]["batch"]) == (1, 4, 1)
    resumed = run_tiny(tiny_config(tmp_path / "b", epochs=2, checkpoint_every=2, resume="auto"))
    assert resumed.history == full.history[4:]
    assert train_records(tmp_path / "b" / "run" / "metrics.jsonl") == \
        train_records(tmp_path / "a" / "run" / "metrics.jsonl")
    a = ckpt.load_checkpoint(tmp_path / "a" / "run" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "run" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical weights
    assert json.loads((tmp_path / "b" / "run" / "metrics.json").read_text()) == full.metrics


# --- the NaN guard checks the weights ----------------------------------------------------
class BlowsUpOnLastStep(NaNAtStep):
    """A finite loss whose gradient sends the weights to inf on the ``bad_call``-th call."""

    def forward(self, images, targets=None):
        out = TinyDetector.forward(self, images, targets)
        if self.training:
            if self.calls == self.bad_call:
                jump = 3e38 * (self.scale - self.scale.detach())  # value 0, gradient 3e38
                out["loss_reg"] = out["loss_reg"] + jump + jump  # finite loss, gradient inf
            self.calls += 1
        return out


def test_blown_up_weights_never_reach_a_checkpoint(tmp_path):
    from fcos_from_scratch.engine.trainer import fit
    from tiny_detector import collate
    config = tiny_config(tmp_path, epochs=2, optimizer="sgd", lr=1.0, grad_clip_norm=0.0, warmup="none",
                         checkpoint_every=0)
    with pytest.raises(NonFiniteLossError, match="weight .*--grad_clip_norm=10") as info:
        fit(config, model=BlowsUpOnLastStep(bad_call=5), train_set=TinyBoxes(12, augment=False),
            collate=collate, stream=open(os.devnull, "w"))
    assert info.value.term.startswith("weight")
    state = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")  # epoch 1's, finite
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_hint_does_not_suggest_clipping_when_it_is_on():
    assert "a smaller grad_clip_norm (it is 10.0)" in str(NonFiniteLossError(1, 0, "loss", float("nan"),
                                                                             grad_clip_norm=10.0))


class CrashAtCall(NaNAtStep):
    """Raises on its ``bad_call``-th training call: a crash in the middle of an epoch."""

    def forward(self, images, targets=None):
        if self.training and self.calls == self.bad_call:
            raise KeyError("crash")
        return super().forward(images, targets)


def test_mid_epoch_resume_is_exact_with_a_loader_worker(tmp_path):
    # Augmentation runs in the worker, seeded from the epoch's base seed: re-drawing the
    # skipped batches in a worker started from the epoch's RNG gives the same samples.
    from fcos_from_scratch.engine.trainer import fit
    from tiny_detector import collate

    def run(out, make_model, **changes):
        torch.manual_seed(0)
        return fit(tiny_config(out, epochs=2, checkpoint_every=2, num_workers=1, **changes),
                   model=make_model(), train_set=TinyBoxes(12), collate=collate,
                   stream=open(os.devnull, "w"))

    full = run(tmp_path / "a", TinyDetector)
    with pytest.raises(KeyError):  # crashes in step 5, after the step-4 checkpoint
        run(tmp_path / "b", lambda: CrashAtCall(bad_call=4))
    state = ckpt.load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert (state["epoch"], state["step"], state["extra"]["epoch_progress"]["batch"]) == (1, 4, 1)
    resumed = run(tmp_path / "b", TinyDetector, resume="auto")
    assert resumed.history == full.history[4:]
