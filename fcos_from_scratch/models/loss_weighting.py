"""Learned multi-task loss weights from homoscedastic uncertainty ([kendall] Eqs. (7)-(10)).

A detector's loss is a weighted sum of tasks (box regression, classification, at
one or more stages); hand-tuning the weights is guesswork. [kendall] treats each
task's loss as the negative log-likelihood of an observation with a learned noise
variance σ_k², which gives, per task,

    regression      (Gaussian likelihood):       L_k / (2 σ_k²) + log σ_k² / 2
    classification  (softmax with temperature):  L_k / σ_k²     + log σ_k² / 2

[refinedetlite] Eq. (6) uses exactly this for its four losses (ARM and ODM,
localisation and classification; derivation in its App. B). A task with a large
loss learns a large σ_k (a small weight); the log σ_k² term stops every σ_k from
growing without bound. Minimising over s_k alone gives s_k = log(2 c_k L_k) with
c_k = 1/2 (regression) or 1 (classification).

The trainable parameters are s_k = log σ_k² (numerically stable, unconstrained),
one 0-d parameter per task, initialised at 0 (σ = 1: every weight starts at the
hand-set value 1/2 or 1). They must not be weight-decayed (decay would pull every
σ towards 1 and bias the weights): :meth:`LearnedLossWeights.no_weight_decay_parameter_names`
names them, and ``engine.optim.parameter_groups`` honours that method on any module.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Tuple

import torch
from torch import nn

__all__ = ["LearnedLossWeights", "TASK_FACTORS"]

# c_k in c_k · exp(−s_k) · L_k: 1/(2σ²) for a Gaussian (regression), 1/σ² for a softmax.
TASK_FACTORS = {"regression": 0.5, "classification": 1.0}


class LearnedLossWeights(nn.Module):
    """Σ_k c_k exp(−s_k) L_k + s_k / 2 with learned s_k = log σ_k² ([refinedetlite] Eq. (6)).

    Args:
        tasks: loss name -> "regression" or "classification", e.g.
            ``{"arm_loc": "regression", "arm_cls": "classification", ...}``.

    Attributes:
        log_var: ``nn.ParameterDict`` name -> 0-d s_k, initialised at 0.
    """

    def __init__(self, tasks: Mapping[str, str]) -> None:
        super().__init__()
        if not isinstance(tasks, Mapping) or not tasks:
            raise ValueError(f"tasks must be a non-empty mapping name -> kind, got {tasks!r}")
        bad = {name: kind for name, kind in tasks.items() if kind not in TASK_FACTORS}
        if bad:
            raise ValueError(f"tasks kinds must be one of {sorted(TASK_FACTORS)}, got {bad}")
        self.tasks = dict(tasks)
        self.log_var = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in tasks})

    def no_weight_decay_parameter_names(self) -> List[str]:
        """Parameter names (relative to this module) that the optimiser must not decay."""
        return [f"log_var.{name}" for name in self.log_var]

    def sigmas(self) -> Dict[str, float]:
        """Current σ_k = exp(s_k / 2), keyed ``sigma_<name>`` for logging beside the losses."""
        return {f"sigma_{name}": math.exp(float(s.detach()) / 2) for name, s in self.log_var.items()}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Combine the task losses.

        Args:
            losses: name -> scalar loss L_k, exactly the names given at construction.

        Returns:
            ``(total, sigmas)``: the 0-d total Σ_k c_k e^{−s_k} L_k + s_k / 2, and
            ``{"sigma_<name>": σ_k}`` (Python floats) for the training log.
        """
        if set(losses) != set(self.tasks):
            missing, unknown = set(self.tasks) - set(losses), set(losses) - set(self.tasks)
            raise ValueError(
                f"losses must have exactly the names {sorted(self.tasks)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        total = None
        for name, kind in self.tasks.items():
            loss, s = losses[name], self.log_var[name]
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise ValueError(f"losses[{name!r}] must be a 0-d tensor, got {loss!r}")
            term = TASK_FACTORS[kind] * torch.exp(-s) * loss + 0.5 * s
            total = term if total is None else total + term
        return total, self.sigmas()
