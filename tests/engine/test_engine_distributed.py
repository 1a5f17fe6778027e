"""Two CPU processes (gloo) train exactly like one process with the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fcos_from_scratch.config import TrainConfig
from fcos_from_scratch.engine import distributed as dist_utils
from fcos_from_scratch.engine.trainer import fit

from tiny_detector import TinyBoxes, TinyDetector, collate

WORLD = 2


def _config(out, batch_size):
    # No dropout and no augmentation: those draw different random numbers on each
    # rank by design; everything else must match the single process bit for bit
    # up to float summation order.
    return TrainConfig(optimizer="sgd", lr=0.05, epochs=2, batch_size=batch_size,
                       grad_clip_norm=1.0, device="cpu", out=str(out), log_every=1,
                       progress=False, warmup_fraction=0.25, seed=5, augment=False)


def _run(config):
    torch.manual_seed(config.seed)
    model = TinyDetector(dropout=0.0)
    result = fit(config, model=model, train_set=TinyBoxes(16, augment=False), collate=collate,
                 stream=open(os.devnull, "w"))
    return result.history, {k: v.clone() for k, v in model.state_dict().items()}


def _worker(rank, port, out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    history, state = _run(_config(out, batch_size=2))  # 2 per process = global batch 4
    torch.save({"history": history, "state": state}, os.path.join(results, f"rank{rank}.pt"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    single_history, single_state = _run(_config(tmp_path / "single", batch_size=4))
    # fork (where available) starts in milliseconds; spawn re-imports torch per process
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path / "ddp"), str(tmp_path)),
                       nprocs=WORLD, start_method=method)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert len(single_history) == len(ranks[0]["history"]) == 8  # 2 epochs x 16 / 4
    for r in ranks:  # every rank logs the same (averaged) losses ...
        for got, want in zip(r["history"], single_history):  # ... equal to one process's
            assert got.keys() == want.keys()
            assert all(got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7) for k in got)
        for k, v in single_state.items():
            torch.testing.assert_close(r["state"][k], v, rtol=1e-5, atol=1e-6)
    # only rank 0 wrote files
    assert (tmp_path / "ddp" / "last.pt").exists()
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 8 + 2


def test_single_process_helpers_degrade_gracefully():
    assert not dist_utils.is_distributed() and dist_utils.get_rank() == 0
    assert dist_utils.get_world_size() == 1 and dist_utils.is_main_process()
    x = torch.tensor([1.0, 3.0])
    assert torch.equal(dist_utils.all_reduce_mean(x), x)
    assert dist_utils.reduce_dict({"b": torch.tensor(2.0), "a": torch.tensor(1.0)}) == {"b": 2.0, "a": 1.0}
    model = torch.nn.Linear(1, 1)
    assert dist_utils.wrap_model(model, torch.device("cpu")) is model
    sampler = dist_utils.build_train_sampler(list(range(10)), seed=3)
    sampler.set_epoch(1)
    order = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == order and sorted(order) == list(range(10))
    sampler.set_epoch(2)
    assert list(sampler) != order  # a new permutation every epoch
