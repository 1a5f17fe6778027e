"""Learned σ multi-task weighting ([kendall], [refinedetlite] Eq. (6)) and its weight-decay exemption."""

import math

import pytest
import torch
from torch import nn

from fcos_from_scratch.config import TrainConfig
from fcos_from_scratch.engine.optim import build_optimizer, no_weight_decay_names, parameter_groups
from fcos_from_scratch.models.loss_weighting import LearnedLossWeights

TASKS = {"arm_loc": "regression", "arm_cls": "classification",
         "odm_loc": "regression", "odm_cls": "classification"}


def test_initial_total_is_the_hand_weighted_sum():
    # s = 0 (σ = 1): L_loc / 2 + L_cls + 0 = 2 / 2 + 3 = 4; gradients
    # d/ds [c e^{-s} L + s/2] = -c L + 1/2: loc -0.5·2 + .5 = -0.5, cls -3 + .5 = -2.5.
    weighting = LearnedLossWeights({"loc": "regression", "cls": "classification"})
    total, sigmas = weighting({"loc": torch.tensor(2.0), "cls": torch.tensor(3.0)})
    assert total.item() == pytest.approx(4.0)
    assert sigmas == {"sigma_loc": 1.0, "sigma_cls": 1.0}
    total.backward()
    assert weighting.log_var["loc"].grad.item() == pytest.approx(-0.5)
    assert weighting.log_var["cls"].grad.item() == pytest.approx(-2.5)


def test_hand_values_away_from_zero():
    # s_loc = log 4 (σ² = 4): 2 / (2·4) + log 4 / 2 = 0.25 + 0.6931;
    # s_cls = -log 2 (σ² = 1/2): 3 / (1/2) - log 2 / 2 = 6 - 0.3466.
    weighting = LearnedLossWeights({"loc": "regression", "cls": "classification"})
    with torch.no_grad():
        weighting.log_var["loc"].fill_(math.log(4))
        weighting.log_var["cls"].fill_(-math.log(2))
    total, sigmas = weighting({"loc": torch.tensor(2.0), "cls": torch.tensor(3.0)})
    assert total.item() == pytest.approx(0.25 + math.log(4) / 2 + 6 - math.log(2) / 2)
    assert sigmas["sigma_loc"] == pytest.approx(2.0)
    assert sigmas["sigma_cls"] == pytest.approx(math.sqrt(0.5))


def test_minimum_over_s_is_log_2cL():
    # With fixed losses, d/ds = 0 at c L e^{-s} = 1/2, i.e. s* = log(2 c L).
    weighting = LearnedLossWeights(TASKS)
    losses = {"arm_loc": torch.tensor(0.3), "arm_cls": torch.tensor(2.0),
              "odm_loc": torch.tensor(1.5), "odm_cls": torch.tensor(0.1)}
    optimizer = torch.optim.Adam(weighting.parameters(), lr=0.1)
    for _ in range(400):
        optimizer.zero_grad()
        weighting(losses)[0].backward()
        optimizer.step()
    for name, kind in TASKS.items():
        c = 0.5 if kind == "regression" else 1.0
        assert weighting.log_var[name].item() == pytest.approx(math.log(2 * c * losses[name].item()),
                                                               abs=1e-2)


def test_gradcheck_in_float64():
    weighting = LearnedLossWeights({"loc": "regression", "cls": "classification"}).double()
    loc = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    cls = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: weighting({"loc": a, "cls": b})[0], (loc, cls))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="tasks kinds"):
        LearnedLossWeights({"loc": "box"})
    with pytest.raises(ValueError, match="non-empty mapping"):
        LearnedLossWeights({})
    weighting = LearnedLossWeights({"loc": "regression"})
    with pytest.raises(ValueError, match=r"missing \['loc'\], unknown \['cls'\]"):
        weighting({"cls": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="0-d tensor"):
        weighting({"loc": torch.ones(3)})


class _Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.loss_weights = LearnedLossWeights({"loc": "regression"})
        self.marked = _Marked()


class _Marked(nn.Module):
    """A 2-D parameter that would be decayed by shape, exempted by the method."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.ones(2, 2))

    def no_weight_decay_parameter_names(self):
        return ["table"]


def test_optimizer_never_decays_the_log_variances():
    model = _Detector()
    assert no_weight_decay_names(model) == {"loss_weights.log_var.loc", "marked.table"}
    groups = {g["name"]: g for g in parameter_groups(model, 0.1)}
    decayed = {id(p) for p in groups["decay"]["params"]}
    assert id(model.conv.weight) in decayed
    assert id(model.loss_weights.log_var["loc"]) not in decayed
    assert id(model.marked.table) not in decayed  # by the marker, not by its shape
    assert groups["no_decay"]["weight_decay"] == 0.0
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1))
    for group in optimizer.param_groups:
        if any(p is model.loss_weights.log_var["loc"] for p in group["params"]):
            assert group["weight_decay"] == 0.0
