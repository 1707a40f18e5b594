"""SBMM (shared bottom, one tower per scenario): a row is scored by its own scenario's tower only.

Checked against a naive per-row loop over the stacked tower weights, and by perturbing one
scenario's tower: only that scenario's rows (and unknown-scenario rows, which average every
tower) may move.
"""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config, trained_by
from msmt.models import build_model


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    b = encoded(tiny_train.iloc[:128].reset_index(drop=True), tiny_schema, with_labels=False)
    b["scenario"] = b["scenario"].clone()
    b["scenario"][:6] = 0  # a few rows of a scenario never seen in training
    return b


@pytest.fixture()
def model(tiny_schema):
    torch.manual_seed(0)
    return build_model(tiny_schema, model_config("sbmm", tower_dims=[8, 6])).eval()


def naive_tower(model, h_row, p):
    """Tower p (0-based) on one row, layer by layer from the stacked [P, in, out] weights."""
    x = h_row
    layers = model.towers.layers()  # stacked [P, in, out] weights, the output layer last
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        x = torch.stack([sum(x[a] * w[p, a, o] for a in range(w.shape[1])) + b[p, 0, o] for o in range(w.shape[2])])
        if i < last:
            x = torch.relu(x)
    return x


def test_each_row_is_scored_by_its_own_scenario_tower(model, batch, tiny_schema):
    scen = batch["scenario"]
    assert len(scen.unique()) == tiny_schema.num_scenarios + 1  # every tower and the unknown case are exercised
    with torch.no_grad():
        out = model(batch)
        h = model.bottom(model.encoder(batch))  # [B, H]
        for n in range(0, len(scen), 3):
            p = int(scen[n])
            if p == 0:  # unknown scenario: the mean of every tower
                ref = torch.stack([naive_tower(model, h[n], q) for q in range(tiny_schema.num_scenarios)]).mean(0)
            else:
                ref = naive_tower(model, h[n], p - 1)
            got = torch.stack([out[t][n] for t in model.task_names])
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tower", [0, 2])
def test_changing_one_tower_moves_only_its_scenario_rows(model, batch, tower):
    scen = batch["scenario"]
    with torch.no_grad():
        before = model(batch)
        towers = model.towers
        for w in (*towers.weights, *towers.biases):
            w[tower].add_(0.3)
        own_pairs = towers.pair_scenario == tower  # this tower's output units
        towers.out_weight[own_pairs] += 0.3
        towers.out_bias[own_pairs] += 0.3
        after = model(batch)
    own = (scen == tower + 1) | (scen == 0)  # unknown rows average every tower, this one included
    assert own.any() and (~own).any()
    for t in model.task_names:
        moved = (after[t] - before[t]).abs() > 1e-6
        assert torch.equal(moved, own), t


def test_every_scenario_tower_trains_the_shared_bottom(model, batch, tiny_schema):
    """The bottom is shared: each task's output sends gradient into the bottom and the embeddings."""
    for t in model.task_names:
        moved = trained_by(model, batch, t)
        assert any(n.startswith("bottom.") for n in moved), t
        assert any(n.startswith("encoder.") for n in moved), t
