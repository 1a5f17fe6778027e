"""The search controller: an LSTM that writes an architecture token by token, trained with PPO.

[nas-fcos] Sec. 3.3: an LSTM predicts the whole configuration sequence (as
Nekrasov et al.'s decoder search) and is trained with PPO ([ppo]).

* **Sampling.** Step d reads the embedding of the previous token (a start token
  at d = 0) plus a learned embedding of the decision, runs one LSTM step
  and scores the choices with decision d's own linear layer. Choices that are
  not valid at d (pool indices not yet written, see ``space.decisions``) get
  logit -inf, so every sample is an architecture of the space.
* **Update.** With old log-probabilities ``log pi_old`` stored at sampling time
  and the advantage ``A = R - b`` against a moving-average baseline ``b``
  ([ppo] Sec. 4's advantage, the REINFORCE baseline of NAS), every decision's
  ratio ``r = pi / pi_old`` enters the clipped surrogate ([ppo] Eq. (7))::

      L = -mean_{seq, d} min(r A, clip(r, 1 - eps, 1 + eps) A) - beta * mean entropy

  optimised by Adam for a few epochs on the same batch. The entropy bonus
  ``beta`` keeps the controller exploring.
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .space import Architecture, decisions


@dataclass(frozen=True)
class ControllerConfig:
    hidden: int = 64  # LSTM width; the sequence is only 66 decisions long
    lr: float = 5e-3  # Adam; 1e-2 collapsed onto one sequence in our synthetic test
    clip: float = 0.2  # eps, [ppo] Sec. 6.1's best value
    ppo_epochs: int = 2  # optimisation passes over each batch, [ppo] Alg. 1's K
    entropy_weight: float = 1e-3  # beta
    baseline_decay: float = 0.9  # b <- decay b + (1 - decay) mean R
    seed: int = 0  # initial weights and the sampling generator


class Controller(nn.Module):
    """LSTM policy over the decision sequence of ``space.decisions()``."""

    def __init__(self, config: ControllerConfig = ControllerConfig()):
        super().__init__()
        self.config = config
        self.sizes = [n for _, n in decisions()]  # valid choices per decision
        D, V, H = len(self.sizes), max(self.sizes), config.hidden
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(config.seed)
            self.token_embedding = nn.Embedding(V + 1, H)  # + 1: the start token
            self.decision_embedding = nn.Embedding(D, H)
            self.lstm = nn.LSTM(H, H, batch_first=True)
            self.out_weight = nn.Parameter(torch.randn(D, V, H) * 0.01)  # one classifier per decision
            self.out_bias = nn.Parameter(torch.zeros(D, V))
        valid = torch.arange(V)[None, :] < torch.tensor(self.sizes)[:, None]  # (D, V)
        self.register_buffer("valid", valid, persistent=False)
        self.start_token = V
        self.baseline = None  # moving average of rewards, set by the first update
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)

    @torch.no_grad()
    def _sample(self, num: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Roll the LSTM one decision at a time, drawing each token: (S, D) tokens, (S, D) log-probs."""
        H = self.config.hidden
        h = c = torch.zeros(num, H)
        # one LSTM step by hand (the gates of nn.LSTM, same weights): far cheaper per
        # step than calling nn.LSTM on sequences of length 1
        w_ih, w_hh = self.lstm.weight_ih_l0, self.lstm.weight_hh_l0  # (4H, H) each
        bias = self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0  # (4H,)
        prev = torch.full((num,), self.start_token, dtype=torch.int64)
        chosen, log_probs = [], []
        for d in range(len(self.sizes)):
            x = self.token_embedding(prev) + self.decision_embedding.weight[d]  # (S, H)
            gates = torch.addmm(bias, x, w_ih.T) + h @ w_hh.T  # (S, 4H): input, forget, cell, output
            i, f, g, o = gates.chunk(4, dim=1)  # (S, H) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)  # (S, H)
            logits = torch.addmm(self.out_bias[d], h, self.out_weight[d].T)  # (S, V)
            log_p = F.log_softmax(logits.masked_fill(~self.valid[d], float("-inf")), dim=-1)
            token = torch.multinomial(log_p.exp(), 1, generator=self.generator).squeeze(1)  # (S,)
            log_probs.append(log_p.gather(1, token[:, None]).squeeze(1))  # (S,)
            chosen.append(token)
            prev = token
        return torch.stack(chosen, 1), torch.stack(log_probs, 1)

    def evaluate(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies (S, D) of given sequences, all decisions in one LSTM call.

        Teacher forcing: the inputs are the tokens shifted right by one (start token
        first), exactly what sampling fed the LSTM, so the values equal sampling's.
        """
        S, D = tokens.shape
        start = torch.full((S, 1), self.start_token, dtype=torch.int64)
        prev = torch.cat([start, tokens[:, :-1]], dim=1)  # (S, D)
        x = self.token_embedding(prev) + self.decision_embedding.weight  # (S, D, H)
        h, _ = self.lstm(x)  # (S, D, H)
        logits = torch.einsum("sdh,dvh->sdv", h, self.out_weight) + self.out_bias  # (S, D, V)
        log_p = F.log_softmax(logits.masked_fill(~self.valid, float("-inf")), dim=-1)  # (S, D, V)
        p = log_p.exp()
        entropy = -(p * log_p.masked_fill(p == 0, 0.0)).sum(-1)  # (S, D)
        return log_p.gather(2, tokens[:, :, None]).squeeze(2), entropy

    @torch.no_grad()
    def sample_tokens(self, num: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``num`` sequences at once: tokens (S, D) int64 and their log-probs (S, D)."""
        return self._sample(num)

    def sample(self) -> Tuple[Architecture, torch.Tensor]:
        """One architecture and the (D,) log-probabilities of its decisions."""
        tokens, log_probs = self.sample_tokens(1)
        return Architecture.from_tokens(tokens[0].tolist()), log_probs[0]

    def update(self, batch: Sequence[Tuple[Sequence[int], float]],
               old_log_probs: torch.Tensor = None) -> dict:
        """One PPO update from ``batch`` = [(tokens, reward), ...] ([ppo] Alg. 1).

        ``old_log_probs`` (S, D) are those returned at sampling; when omitted they
        are recomputed with the current weights (the batch was just sampled).
        Returns the mean reward, the baseline, the loss and the mean entropy.
        """
        tokens = torch.tensor([list(t) for t, _ in batch], dtype=torch.int64)  # (S, D)
        rewards = torch.tensor([float(r) for _, r in batch])  # (S,)
        cfg = self.config
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        advantage = (rewards - self.baseline)[:, None]  # (S, 1), the same for every decision
        if old_log_probs is None:
            with torch.no_grad():
                old_log_probs = self.evaluate(tokens)[0]
        for _ in range(cfg.ppo_epochs):
            log_probs, entropy = self.evaluate(tokens)
            ratio = torch.exp(log_probs - old_log_probs)  # (S, D)
            surrogate = torch.min(ratio * advantage,
                                  ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * advantage)
            loss = -surrogate.mean() - cfg.entropy_weight * entropy.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.baseline = cfg.baseline_decay * self.baseline + (1 - cfg.baseline_decay) * float(rewards.mean())
        return {"reward": float(rewards.mean()), "baseline": self.baseline,
                "loss": float(loss.detach()), "entropy": float(entropy.detach().mean())}


def match_reward(tokens: Sequence[int], target: Sequence[int]) -> float:
    """Fraction of decisions equal to ``target``'s: a synthetic reward for testing search."""
    return sum(int(a) == int(b) for a, b in zip(tokens, target)) / len(target)


def train_on_reward(controller: Controller, reward_fn, updates: int, batch_size: int = 16) -> List[float]:
    """Sample, score and update ``updates`` times; returns the mean reward of every batch."""
    history = []
    for _ in range(updates):
        tokens, log_probs = controller.sample_tokens(batch_size)
        batch = [(t.tolist(), reward_fn(t.tolist())) for t in tokens]
        history.append(controller.update(batch, log_probs)["reward"])
    return history
