"""M3oE (Zhang et al., SIGIR 2024): the two-level fusion of shared, scenario-aspect and task-aspect
experts computed by hand, and one tower per (scenario, task) that moves only its own outputs."""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config
from msmt.models import build_model


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    b = encoded(tiny_train.iloc[:120].reset_index(drop=True), tiny_schema, with_labels=False)
    b["scenario"] = b["scenario"].clone()
    b["scenario"][:4] = 0  # a few rows of a scenario never seen in training
    return b


@pytest.fixture
def model(tiny_schema):
    torch.manual_seed(0)
    m = build_model(tiny_schema, model_config("m3oe", hidden_dims=[16], tower_dims=[8], m3oe={"num_experts": 3})).eval()
    with torch.no_grad():  # away from the symmetric start
        m.balance_logits.copy_(torch.tensor([0.7, -0.4]))
        m.fusion_logits.copy_(torch.tensor([-0.2, 0.9]))
    return m


def test_fusion_by_hand(model, batch, tiny_schema):
    P, T, k = tiny_schema.num_scenarios, model.num_tasks, 3
    with torch.no_grad():
        x = model.encoder(batch)
        h = model.fused(x, batch["scenario"])  # [B, T, E]
        S, D, Tk = model.shared(x), model.scenario_experts(x), model.task_experts(x)
        gates = (x @ model.gates.weight.T).view(-1, P, T, k).softmax(-1)
        bd, bt = torch.sigmoid(model.balance_logits)
        ad, at = torch.sigmoid(model.fusion_logits)
        for n in range(0, x.shape[0], 7):
            s = int(batch["scenario"][n]) - 1
            for t in range(T):
                if s < 0:  # unknown scenario: the scenarios' mean gate and mean scenario expert
                    g, d = gates[n, :, t].mean(0), D[n].mean(0)
                else:
                    g = gates[n, s, t]
                    d = bd * D[n, s] + (1 - bd) * (D[n].sum(0) - D[n, s]) / (P - 1)
                task = bt * Tk[n, t] + (1 - bt) * (Tk[n].sum(0) - Tk[n, t]) / (T - 1)
                want = (g[:, None] * S[n]).sum(0) + ad * d + at * task
                torch.testing.assert_close(h[n, t], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scenario,task", [(0, 0), (2, 1), (3, 2)])
def test_a_scenario_task_tower_moves_only_its_own_outputs(model, batch, tiny_schema, scenario, task):
    T = model.num_tasks
    scen = batch["scenario"]
    with torch.no_grad():
        before = model(batch)
        model.towers.out_bias[scenario * T + task] += 0.5  # tower (scenario, task)
        after = model(batch)
    for i, name in enumerate(model.task_names):
        moved = (after[name] - before[name]).abs() > 1e-7
        if i == task:  # its scenario's rows (and unknown rows, which average the scenarios' towers)
            assert torch.equal(moved, (scen == scenario + 1) | (scen == 0)), name
        else:
            assert not moved.any(), name
