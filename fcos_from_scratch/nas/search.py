"""Search the decoder: ``python -m fcos_from_scratch.nas.search [--key=value ...]``.

The loop of [nas-fcos] Sec. 3.3 at laptop scale: the LSTM controller
(``nas.controller``) samples a batch of architectures, each is scored on the
proxy task (``nas.proxy``: R = -(L_cls + L_reg + L_ctr) on meta-val), and PPO
moves the controller towards the better ones. Examples::

    python -m fcos_from_scratch.nas.search                       # 12 candidates, runs/nas_search
    python -m fcos_from_scratch.nas.search --candidates=40 --out=runs/nas40
    python -m fcos_from_scratch.nas.search --out=runs/nas40 --resume --candidates=80   # continue, extend
    python -m fcos_from_scratch.train --model nas_fcos --arch=runs/nas_search/best.json

The out folder receives

* ``candidates.jsonl``: one line per evaluated candidate (architecture, tokens,
  reward, loss terms, seconds), appended and flushed as soon as it is scored;
* ``state.pt``: the controller (weights, Adam, baseline, sampling generator) and
  the batch being evaluated, written atomically after every sample and update;
* ``best.json`` (the best architecture so far and its reward; ``--arch`` reads it),
  ``best.png`` (its picture), ``rewards.png`` (reward over time), ``config.json``.

Killed at any point, ``--resume`` continues: the evaluated candidates are read
back from ``candidates.jsonl``, the pending batch is finished, nothing is scored
twice, and the sequence of candidates is the one an uninterrupted run draws. A
folder that already holds a search is never overwritten without ``--overwrite``.
Every option is ``--key=value`` (``--help`` lists them); errors are one
``error:`` line (exit 2 for a bad option, as ``fcos_from_scratch.train``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..command import run_command
from ..config import coerce, field_help, field_types, reject_unknown, split_options, to_plain_dict
from ..engine.checkpoint import atomic_save
from ..engine.progress import ProgressBar, read_metrics
from ..engine.run_folder import RunFolderError
from ..visualize.nas import draw_architecture, plot_rewards
from .controller import Controller, ControllerConfig
from .proxy import ProxyConfig, evaluate_candidate, prepare
from .space import Architecture

SEARCH_FILES = ("config.json", "state.pt", "candidates.jsonl")
# Options that a resumed search may change: its budget and its display.
RESUMABLE = ("candidates", "max_minutes", "progress", "pictures", "resume", "overwrite")


@dataclass(frozen=True)
class SearchConfig:
    """The search loop; the proxy task has its own options (``ProxyConfig``)."""

    candidates: int = 12  # count budget: stop after this many evaluated candidates (deterministic) [~2.8k]
    max_minutes: float = 0.0  # time budget of this invocation: start no candidate after it (0 = off)
    batch: int = 4  # candidates per PPO update of the controller
    search_seed: int = 0  # the controller's initial weights and sampling; candidate i trains with seed + i
    out: str = "runs/nas_search"  # the search folder (never overwritten without --overwrite)
    resume: bool = False  # continue the search in --out
    overwrite: bool = False  # start afresh in an --out that holds a search (its files are replaced)
    progress: bool = True  # show the progress bar
    pictures: bool = True  # draw best.png and rewards.png after every batch (matplotlib: ~1 s each)

    def __post_init__(self) -> None:
        for name in ("candidates", "batch"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (math.isfinite(self.max_minutes) and self.max_minutes >= 0):
            raise ValueError(f"max_minutes must be >= 0 (0 = no time budget), got {self.max_minutes!r}")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the search in --out and --overwrite replaces it: pass one")
        if not self.out:
            raise ValueError("out must name a folder, got ''")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def parse_args(argv: Sequence[str]):
    """``--key=value`` (or ``--key value``, ``--flag``, ``--no-flag``) -> (SearchConfig, ProxyConfig)."""
    classes = (SearchConfig, ProxyConfig)
    types = {k: t for cls in classes for k, t in field_types(cls).items()}
    values: Dict[str, object] = {}
    for key, value in split_options(argv, {k for k, t in types.items() if t is bool}):
        reject_unknown([key], list(types))
        values[key] = coerce(key, value, types[key])
    split = [{k: v for k, v in values.items() if k in field_types(cls)} for cls in classes]
    return SearchConfig(**split[0]), ProxyConfig(**split[1])


def usage() -> str:
    lines = [__doc__, "options:"]
    for cls in (SearchConfig, ProxyConfig):
        help_text = field_help(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"  --{f.name}={f.default}\n      {help_text.get(f.name, '')}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    return run_command(lambda: _run(argv))


def _run(argv) -> int:
    search(*parse_args(argv))
    return 0


# ---------------------------------------------------------------------------
# The folder: checks, state, records
# ---------------------------------------------------------------------------

def check_search_folder(search: SearchConfig) -> None:
    """Refuse to clobber a search or to resume nothing (before anything is built)."""
    out = Path(search.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out={str(out)!r} is a file, not a folder; choose another --out")
    found = [name for name in SEARCH_FILES if (out / name).exists()]
    if search.resume and not (out / "state.pt").exists():
        raise RunFolderError(f"--resume: --out={str(out)!r} holds no search to continue (no state.pt); "
                             f"drop --resume to start one")
    if found and not search.resume and not search.overwrite:
        raise RunFolderError(f"--out={str(out)!r} already holds a search ({', '.join(found)}); continue it "
                             f"with --resume, replace it with --overwrite, or choose another --out")


def read_candidates(path: Path) -> List[Dict]:
    """The records of ``candidates.jsonl``; a line cut short by a kill is dropped from the file."""
    if not path.exists():
        return []
    records, unreadable = read_metrics(path, with_unreadable=True)
    if unreadable:  # rewrite without it, or the next append would continue the broken line
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def append_record(path: Path, record: Dict) -> None:
    """Append one JSON line and flush it to disk before the next candidate starts."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_state(path: Path, controller: Controller, pending: Optional[Dict], done: int) -> None:
    """The controller and the batch in flight, atomically (``state.pt``)."""
    atomic_save({"controller": controller.state_dict(), "optimizer": controller.optimizer.state_dict(),
                 "baseline": controller.baseline, "generator": controller.generator.get_state(),
                 "pending": pending, "done": done}, path)


def load_state(path: Path, controller: Controller) -> Dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    controller.load_state_dict(state["controller"])
    controller.optimizer.load_state_dict(state["optimizer"])
    controller.baseline = state["baseline"]
    controller.generator.set_state(state["generator"])
    return state


def write_summary(out: Path, records: List[Dict], pictures: bool = True) -> None:
    """``best.json`` (and ``best.png``, ``rewards.png`` with ``pictures``) from all records so far."""
    best = max(records, key=lambda r: r["reward"])
    arch = Architecture.from_dict(best["architecture"])
    atomic_write_text(out / "best.json", json.dumps(
        {"architecture": best["architecture"], "reward": best["reward"], "index": best["index"],
         "candidates": len(records)}, indent=1))
    if not pictures:
        return
    draw_architecture(arch, out / "best.png", title=f"best of {len(records)}: candidate {best['index']}, "
                                                    f"R = {best['reward']:.3f}")
    plot_rewards([r["reward"] for r in records], out / "rewards.png")


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------

def search(config: SearchConfig, proxy: ProxyConfig, dataset=None, log=print,
           stop_after: Optional[int] = None) -> List[Dict]:
    """Run (or continue) a search; returns every candidate record in order.

    ``stop_after`` stops this call after that many new candidates, as a kill would
    (tests use it to interrupt a search).
    """
    check_search_folder(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = {"search": to_plain_dict(config), "proxy": to_plain_dict(proxy)}
    if config.resume:
        previous = json.loads((out / "config.json").read_text(encoding="utf-8"))
        changed = [k for part in ("search", "proxy") for k, v in saved[part].items()
                   if k not in RESUMABLE and previous[part].get(k) != v]
        if changed:
            raise ValueError(f"--resume continues with the saved options; these differ from "
                             f"{out / 'config.json'}: {', '.join(changed)}")
    else:
        for name in SEARCH_FILES + ("best.json",):
            if (out / name).exists():
                (out / name).unlink()
    atomic_write_text(out / "config.json", json.dumps(saved, indent=1))

    controller = Controller(ControllerConfig(seed=config.search_seed))
    records_path, state_path = out / "candidates.jsonl", out / "state.pt"
    records = read_candidates(records_path)
    state = load_state(state_path, controller) if config.resume else {"pending": None, "done": 0}
    if len(records) < state["done"] or (state["pending"] is None and len(records) != state["done"]):
        raise ValueError(f"{records_path} has {len(records)} candidates but state.pt expects "
                         f"{state['done']}: the folder was edited; start afresh with --overwrite")
    if len(records) >= config.candidates:
        log(f"{len(records)} candidates already evaluated (budget {config.candidates}); nothing to do")
        return records

    data = prepare(proxy, dataset=dataset, log=log)
    bar = ProgressBar(config.candidates, desc="search", every=1, enabled=config.progress)
    bar.count = len(records)
    start, new, drawn = time.perf_counter(), 0, -1
    pending = state["pending"]
    while len(records) < config.candidates:
        if pending is None:  # sample the next batch and checkpoint it before scoring any of it
            tokens, log_probs = controller.sample_tokens(config.batch)
            pending = {"first": len(records), "tokens": tokens.tolist(), "log_probs": log_probs}
            save_state(state_path, controller, pending, len(records))
        for offset, tokens in enumerate(pending["tokens"]):
            index = pending["first"] + offset
            if index < len(records):
                if records[index]["tokens"] != tokens:
                    raise ValueError(f"{records_path} line {index + 1} is not the candidate state.pt sampled")
                continue
            if index >= config.candidates:  # the count budget ends inside this batch
                break
            over_time = config.max_minutes and time.perf_counter() - start > 60 * config.max_minutes
            if over_time or (stop_after is not None and new >= stop_after):
                bar.close()
                write_summary(out, records, config.pictures) if records else None
                log(f"stopped after {len(records)} candidates (time budget); continue with --resume")
                return records
            arch = Architecture.from_tokens(tokens)
            result = evaluate_candidate(arch, data, proxy, seed=config.search_seed * 1_000_003 + index)
            record = {"index": index, "reward": result["reward"], "architecture": arch.to_dict(),
                      "tokens": tokens, **{k: v for k, v in result.items() if k != "reward"}}
            record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
            append_record(records_path, record)
            records.append(record)
            new += 1
            write_summary(out, records, pictures=False)  # the pictures once per batch: matplotlib is slow
            bar.update({"R": result["reward"], "best": max(r["reward"] for r in records),
                        "cpu_s": result["cpu_s"]})
        if len(records) < pending["first"] + len(pending["tokens"]):
            break  # an unfinished batch: no update; state.pt keeps it for a --resume with a larger budget
        batch = [(records[pending["first"] + k]["tokens"], records[pending["first"] + k]["reward"])
                 for k in range(len(pending["tokens"]))]
        stats = controller.update(batch, pending["log_probs"])
        pending = None
        save_state(state_path, controller, None, len(records))
        write_summary(out, records, config.pictures)
        drawn = len(records)
        if not config.progress:
            log(f"candidates {len(records)}: batch mean R {stats['reward']:.3f}, baseline {stats['baseline']:.3f}")
    bar.close()
    write_summary(out, records, config.pictures and drawn != len(records))
    best = max(records, key=lambda r: r["reward"])
    log(f"{len(records)} candidates; best R = {best['reward']:.4f} (candidate {best['index']}) -> "
        f"{out / 'best.json'}; rewards over time in {out / 'rewards.png'}")
    return records


if __name__ == "__main__":
    sys.exit(main())
