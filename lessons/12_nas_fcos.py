# %% [markdown]
# # Lesson 12: NAS-FCOS, searching the decoder
#
# FCOS's *decoder* is everything between the trunk and the losses: the FPN that
# mixes C3..C5 into pyramid levels and the head towers run on every level.
# NAS-FCOS ([nas-fcos]) lets a program design it. Three parts:
#
# 1. a **search space**: a decoder is a short sequence of choices (which two
#    features each block reads, which op it applies to each, how it merges them);
# 2. a **controller**: an LSTM that writes that sequence token by token, trained
#    with PPO ([ppo]) to write sequences with a high reward;
# 3. a **proxy task** that scores one candidate in seconds: train it briefly on
#    cached trunk features, reward R = -(L_cls + L_reg + L_ctr) on held-out data.
#
# Run it as a script; `LESSONS_FAST=1` makes it a few seconds (tiny data, 2-step
# candidates: the rewards then say nothing about the architectures).

# %%
import json
import os
import random
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from fcos_from_scratch.data import build_dataset
from fcos_from_scratch.data.digits import DigitsConfig
from fcos_from_scratch.models import build_model
from fcos_from_scratch.nas.controller import Controller, ControllerConfig, match_reward, train_on_reward
from fcos_from_scratch.nas.decoder import SearchedDecoder
from fcos_from_scratch.nas.proxy import ProxyConfig, evaluate_candidate, prepare
from fcos_from_scratch.nas.search import SearchConfig, search
from fcos_from_scratch.nas.space import (ALL_SKIP_ARCHITECTURE, FIG4_ARCHITECTURE, OPS, decisions,
                                         sample_architecture)
from fcos_from_scratch.visualize.nas import draw_architecture

FAST = os.environ.get("LESSONS_FAST") == "1"
torch.manual_seed(0)
scratch = tempfile.TemporaryDirectory()  # pictures, the toy data and the search; removed at exit
workdir = Path(scratch.name)


def show_png(path, title=""):
    image = plt.imread(str(path))
    fig, ax = plt.subplots(figsize=(image.shape[1] / 110, image.shape[0] / 110))
    ax.imshow(image)
    ax.set_title(title)
    ax.axis("off")
    plt.show()


# %% [markdown]
# ## The search space ([nas-fcos] Sec. 3.2, Table 1)
# The FPN is 7 blocks. The pool starts as {c3, c4, c5}; block t reads two pool
# entries, applies one op of Table 1 to each, merges them by sum or concat, and
# adds its output to the pool. The last three outputs are P5, P4, P3. The head is
# one op and 5 blocks; each block also keeps its two op outputs in the pool. Five
# more numbers say from which layer on the head's weights are shared by all levels.
# Every decision has a few choices, so an architecture is just 66 small integers.

# %%
print("ops:", OPS)
sizes = decisions()
print(len(sizes), "decisions; the first five:", sizes[:5], "the last:", sizes[-1])
space = 1
for _, n in sizes:
    space *= n
print(f"the space holds {float(space):.2e} architectures")
arch = sample_architecture(random.Random(0))
print("a random one as tokens:", arch.tokens()[:15], "...")

# %% [markdown]
# The decoder mmdetection recovered from the paper's Fig. 4 ([mmdet-nas-fcos]),
# written in this space (`FIG4_ARCHITECTURE`; `--arch=fig4` retrains it). Red
# wires are deformable 3x3 convs ([dcnv2]), grey ones skips.

# %%
show_png(draw_architecture(FIG4_ARCHITECTURE, workdir / "fig4.png", title="fig4 ([mmdet-nas-fcos])"))

# %% [markdown]
# Any architecture builds a module with FCOSHead's outputs: class logits, box
# distances and centerness for every point of every level.

# %%
features = [torch.randn(2, c, s, s) for c, s in ((64, 16), (128, 8), (192, 4))]  # C3..C5 of a 128 px crop
for name, a in (("fig4", FIG4_ARCHITECTURE), ("all skip", ALL_SKIP_ARCHITECTURE), ("random", arch)):
    decoder = SearchedDecoder(a, (64, 128, 192), num_classes=10, channels=32, num_levels=3)
    cls, box, ctr = decoder(features)
    params = sum(p.numel() for p in decoder.parameters())
    print(f"{name:9s} cls {tuple(cls.shape)} box {tuple(box.shape)} ctr {tuple(ctr.shape)}, {params} parameters")

# %% [markdown]
# ## The controller: an LSTM trained by PPO ([nas-fcos] Sec. 3.3, [ppo] Eq. (7))
# At step d the LSTM reads the previous token and scores the valid choices of
# decision d. PPO raises the log-probability of every decision of a sequence by
# its advantage R - b (b: a moving average of R), clipped so that one batch cannot
# move the policy far. Here the reward is synthetic: the fraction of decisions
# equal to a hidden architecture's; a uniform policy gets about a quarter.

# %%
hidden = sample_architecture(random.Random(1)).tokens()
controller = Controller(ControllerConfig(seed=0))
history = train_on_reward(controller, lambda t: match_reward(t, hidden), updates=4 if FAST else 120,
                          batch_size=16)
print(f"mean reward of the first batch {history[0]:.2f}, of the last {history[-1]:.2f}")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(history)
ax.set(xlabel="PPO update", ylabel="mean synthetic reward")
plt.show()

# %% [markdown]
# ## The proxy task ([nas-fcos] Secs. 3.3, 4.1)
# The digits *train* split is split into meta-train and meta-val images; each is
# cropped once to a fixed square. A digits trunk, trained once (and cached) with a
# plain FCOS decoder, is frozen and its C3..C5 of every crop are computed once.
# A candidate decoder is then trained a few Adam steps on meta-train features, a
# Polyak average of its weights (decay 0.9, [polyak]) is kept, and the averaged
# decoder is scored on meta-val with FCOS's own targets and losses:
#
#     R(a) = -(L_cls + L_reg + L_ctr)
#
# The loss, not AP: early in training AP cannot tell candidates apart.

# %%
if FAST:  # a throw-away 16-image digits set and a toy proxy
    data_root = workdir / "data"
    dataset = build_dataset("digits", "train", root=data_root, train=False, augment=False,
                            config=DigitsConfig(num_train=16, num_val=1, num_test=1, min_side=64, max_side=96))
    proxy = ProxyConfig(crop_size=64, meta_train=8, meta_val=4, channels=8, steps=2, batch_size=4,
                        trunk_steps=1, data_root=str(data_root))
else:  # the default proxy on the digits cache (the trunk trains once, ~1.5 CPU-minutes)
    dataset, proxy = None, ProxyConfig()
data = prepare(proxy, dataset=dataset)
print("cached features:", [tuple(f.shape) for f in data.train_features], "meta-val crops:", len(data.val_targets))

# %% [markdown]
# FPN-FCOS (plain FPN and FCOS's head: the `"fpn"` candidate) against the floor
# of the space, every op a skip: the proxy must rank the second clearly lower.

# %%
seeds = 1 if FAST else 3
scores = {name: [evaluate_candidate(name, data, proxy, seed=s) for s in range(seeds)]
          for name in ("fpn", "all_skip")}
for name, runs in scores.items():
    rewards = [r["reward"] for r in runs]
    print(f"{name:9s} R = {sum(rewards) / len(rewards):.3f} over {seeds} seed(s), "
          f"{sum(r['cpu_s'] for r in runs) / seeds:.1f} CPU-s per candidate")
if not FAST:
    assert max(r["reward"] for r in scores["all_skip"]) < min(r["reward"] for r in scores["fpn"])

# %% [markdown]
# ## A small search
# `search` samples a batch of architectures from the controller, scores each on the
# proxy, updates the controller by PPO, and repeats. Every candidate is appended to
# `candidates.jsonl` as soon as it is scored, and the controller's state is saved
# atomically, so an interrupted search resumes with `--resume`. From a shell:
# `python -m fcos_from_scratch.nas.search` (12 candidates).

# %%
out = workdir / "search"
records = search(SearchConfig(candidates=2 if FAST else 8, batch=2 if FAST else 4, out=str(out), progress=False),
                 proxy, dataset=dataset)
for r in records:
    print(f"candidate {r['index']}: R = {r['reward']:.3f} ({r['cpu_s']:.1f} CPU-s)")
best = json.loads((out / "best.json").read_text())
print("best:", best["index"], "R =", round(best["reward"], 3))
show_png(out / "rewards.png", "reward of every candidate")
show_png(out / "best.png", "the best architecture found")

# %% [markdown]
# ## Retraining
# The found decoder is retrained as a whole detector, FCOS with the searched
# decoder, on the same fixed steps as the FCOS digits job:
#
#     python -m fcos_from_scratch.train --model nas_fcos --arch=runs/nas_search/best.json
#
# `--model nas_fcos` alone retrains `fig4`. Exercise: change the proxy's reward to
# the classification loss alone (`evaluate_candidate`) and see which ops the search
# prefers then.

# %%
model = build_model("nas_fcos", backbone="tiny", num_classes=10, fpn_channels=8, num_levels=3,
                    sizes_of_interest=(0, 32, 64, float("inf")), arch=json.dumps(best["architecture"]))
print("NAS-FCOS with the found decoder:", sum(p.numel() for p in model.decoder.parameters()), "decoder parameters")

# %%
print("LESSON COMPLETE: 12_nas_fcos")
