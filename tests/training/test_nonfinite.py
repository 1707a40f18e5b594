"""Training stops at the first non-finite loss or gradient, before the optimiser applies it."""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config
from msmt.models import build_model
from msmt.spec.config import LossConfig, TrainConfig
from msmt.spec.errors import DivergedError
from msmt.training.loop import fit

TC = {"epochs": 1, "batch_size": 64, "progress": False}


def _model(tiny_schema):
    torch.manual_seed(0)
    return build_model(tiny_schema, model_config("mmoe"))


def test_a_non_finite_gradient_stops_training_before_the_step(tiny_schema, tiny_train):
    """The loss stays finite; one parameter's gradient becomes inf at the first step: training
    stops there, naming the gradient, and no weight has moved (the update was never applied)."""
    model = _model(tiny_schema)
    data = encoded(tiny_train, tiny_schema)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = next(p for n, p in model.named_parameters() if n.startswith("towers."))
    weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(DivergedError, match=r"epoch 1, step 1: the gradient norm is (inf|nan)"):
        fit(model, TrainConfig(**TC), LossConfig(), data, data, tiny_train)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_a_non_finite_loss_names_the_task(tiny_schema, tiny_train, max_grad_norm):
    """A label that reaches the loop as inf (validation refuses it in files; the loop must not
    rely on that): training stops at once and names the task, with or without clipping."""
    data = encoded(tiny_train, tiny_schema)
    dwell = [t.name for t in tiny_schema.spec.tasks].index("dwell")
    data["labels"][:, dwell] = float("inf")
    model = _model(tiny_schema)
    with pytest.raises(DivergedError, match=r"epoch 1, step 1: the loss of task 'dwell' is (inf|nan)"):
        fit(model, TrainConfig(**TC, max_grad_norm=max_grad_norm), LossConfig(), data, data, tiny_train)
