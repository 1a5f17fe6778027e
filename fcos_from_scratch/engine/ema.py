"""An exponential moving average of the weights, evaluated instead of the raw weights.

After every optimiser step ``w_ema <- d * w_ema + (1 - d) * w`` for every floating
tensor of the state dict ([polyak]; the "model EMA" of modern detectors); integer
buffers (BatchNorm's step counter) are copied. Early in training the average is
dominated by the random initialisation, so the decay warms up as
``min(d, (1 + n) / (10 + n))`` after n updates.
"""

import copy
from typing import Any, Dict

import torch
from torch import nn


class ModelEMA:
    """A shadow copy of a model whose weights trail the trained ones.

    Args:
        model: the trained model (unwrapped from DDP).
        decay: d in (0, 1), e.g. 0.999.

    Attributes:
        module: the averaged model, in eval mode, without gradients.
        updates: n, the number of updates so far.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        for name, shadow in self.module.state_dict().items():
            value = current[name].detach()
            if shadow.dtype.is_floating_point:
                shadow.mul_(d).add_(value.to(shadow.dtype), alpha=1 - d)
            else:
                shadow.copy_(value)

    def state_dict(self) -> Dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
