"""HMoE (Li et al., CIKM 2020): a row's prediction combines every scenario's prediction, and only
its own scenario's path is trained by it (stop-gradient on the other scenarios' predictions)."""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config
from msmt.models import build_model
from msmt.spec.batch import take
from msmt.training.losses import batch_losses


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encoded(tiny_train.iloc[:200].reset_index(drop=True), tiny_schema)


def make(schema):
    torch.manual_seed(0)
    model = build_model(schema, model_config("hmoe", hidden_dims=[16], tower_dims=[8]))
    with torch.no_grad():  # a trained-looking combination: not the uniform start
        model.relation.weight.normal_(0, 0.3)
        model.relation.bias.normal_(0, 0.5)
    return model


def test_prediction_is_the_combination_of_every_scenarios_prediction(tiny_schema, batch):
    model = make(tiny_schema).eval()
    with torch.no_grad():
        out = model(batch)
        x = model.encoder(batch)
        y = model.scenario_predictions(x)  # [P, B, T]
        alpha = model.combination(x, batch["scenario"])  # [B, P, T]
    torch.testing.assert_close(alpha.sum(1), torch.ones_like(alpha.sum(1)))
    for i, t in enumerate(model.task_names):
        torch.testing.assert_close(out[t], (alpha[:, :, i] * y[:, :, i].t()).sum(1))
    # another scenario's tower informs the row: perturbing tower 2 moves rows of scenario 1 too
    with torch.no_grad():
        model.towers.out_bias[model.towers.pair_scenario == 1] += 1.0
        moved = model(batch)
    rows = batch["scenario"] == 1
    assert ((moved["click"] - out["click"])[rows].abs() > 1e-4).all()


@pytest.mark.parametrize("scenario", [1, 3])
def test_rows_train_only_their_own_scenarios_path(tiny_schema, batch, scenario):
    model = make(tiny_schema).train()
    rows = torch.nonzero(batch["scenario"] == scenario).flatten()
    own = take(batch, rows)
    model.zero_grad()
    sum(batch_losses(tiny_schema.spec.tasks, model(own), own).values()).backward()
    towers = model.towers
    P, k = tiny_schema.num_scenarios, model.params.num_experts
    gate_grad = model.gates.weight.grad.view(P, k, -1)  # W_p for every scenario
    for p in range(P):
        pair = towers.pair_scenario == p
        grads = [towers.weights[0].grad[p], towers.biases[0].grad[p], towers.out_weight.grad[pair], towers.out_bias.grad[pair], gate_grad[p]]
        if p == scenario - 1:
            assert all(g.abs().sum() > 0 for g in grads), p
        else:  # the other scenarios' towers and gates: stop-gradient, exactly zero
            assert all(torch.count_nonzero(g) == 0 for g in grads), p
    assert model.relation.weight.grad.abs().sum() > 0  # the combination weights are learned
    assert model.experts.first.weight.grad.abs().sum() > 0  # and the shared experts


def test_prediction_equals_a_per_row_reference(tiny_schema, batch):
    """Row by row, from the weights: scenario p's view z_p = Σ_i softmax(W_p x)_i E_i (softmax over
    the k experts of that row), y_p = Tower_p(z_p), and the row of scenario s (0: unseen) combines
    them with softmax_p(R_s x + r_s) taken from *its own* scenario's block of the relation layer."""
    model = make(tiny_schema).eval()
    P, k = tiny_schema.num_scenarios, model.params.num_experts
    inputs = {key: v[:40] for key, v in batch.items()}
    inputs["scenario"] = inputs["scenario"].clone()
    inputs["scenario"][:3] = 0  # rows of a scenario never seen in training
    with torch.no_grad():
        out = model(inputs)
        x = model.encoder(inputs)
        experts = model.experts(x)  # [B, k, E]
        W = model.gates.weight.view(P, k, -1)  # W_p
        R = model.relation.weight.view(P + 1, P, -1)  # R_s
        r = model.relation.bias.view(P + 1, P)
        assert bool(model.towers.present.all())  # every scenario has every task: no masked tower
        for n in range(x.shape[0]):
            views = []
            for p in range(P):
                logits = W[p] @ x[n]
                gate = torch.exp(logits - logits.max())
                gate = gate / gate.sum()
                views.append((gate[:, None] * experts[n]).sum(0))
            y = model.towers(torch.stack(views)[:, None, :])[:, 0, :]  # [P, T]: tower p on its own view
            s = int(inputs["scenario"][n])
            a = torch.exp(R[s] @ x[n] + r[s])
            a = a / a.sum()
            for i, t in enumerate(model.task_names):
                torch.testing.assert_close(out[t][n], (a * y[:, i]).sum(), rtol=1e-5, atol=1e-6)
