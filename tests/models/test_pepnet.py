"""PEPNet (Chang et al., KDD 2023): Gate NU is γ·σ(·) with γ = 2, EPNet's gate reads the row's own
scenario (and the embeddings behind a stop-gradient), PPNet scales every tower layer per task,
and each scenario's output comes from its own path — never from the last scenario of a loop."""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config, trained_by
from msmt.layers.gate_nu import GateNU
from msmt.models import build_model
from msmt.spec.batch import take


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encoded(tiny_train.iloc[:160].reset_index(drop=True), tiny_schema, with_labels=False)


def make(schema, **pepnet):
    torch.manual_seed(0)
    extra = {"pepnet": pepnet} if pepnet else {}
    return build_model(schema, model_config("pepnet", hidden_dims=[16, 8], tower_dims=[8], **extra)).eval()


def test_gate_nu_is_gamma_times_a_sigmoid():
    torch.manual_seed(0)
    gate = GateNU(5, 3, hidden=7)
    x = torch.randn(11, 5)
    by_hand = 2.0 * torch.sigmoid(torch.relu(x @ gate.hidden.weight.T + gate.hidden.bias) @ gate.out.weight.T + gate.out.bias)
    torch.testing.assert_close(gate(x), by_hand)
    with torch.no_grad():
        gate.out.bias.fill_(60.0)
        assert torch.allclose(gate(x), torch.full((11, 3), 2.0))  # saturates at γ = 2, not at 1
        gate.out.bias.fill_(-60.0)
        assert gate(x).abs().max() < 1e-20
        gate.out.bias.zero_()
        gate.out.weight.zero_()
        assert torch.equal(gate(x), torch.ones(11, 3))  # an untrained gate passes its input through
    assert GateNU(5, 3, hidden=7, gamma=3.0).gamma == 3.0


def test_model_gates_use_gamma_two(tiny_schema, batch):
    model = make(tiny_schema)
    assert model.epnet.gamma == 2.0 and all(g.gamma == 2.0 for g in model.ppnet)
    with torch.no_grad():
        model.epnet.out.bias.fill_(60.0)  # δ_domain = γ everywhere: e' = 2 e
        fields = model.encoder.embed_fields(batch)
        e = model.encoder.flatten(batch, fields)
        torch.testing.assert_close(e * model.domain_gate(batch, e), 2 * e)


def test_domain_gate_reads_the_rows_own_scenario_and_stops_the_embedding_gradient(tiny_schema, batch):
    model = make(tiny_schema)
    fields = model.encoder.embed_fields(batch)
    e = model.encoder.flatten(batch, fields)
    delta = model.domain_gate(batch, e)  # [B, D]
    by_hand = model.epnet(torch.cat([model.scenario.scenario_id(batch["scenario"]), e], dim=1))
    torch.testing.assert_close(delta, by_hand)
    moved = dict(batch, scenario=batch["scenario"] % tiny_schema.num_scenarios + 1)  # every row to another scenario
    assert (model.domain_gate(moved, e) - delta).abs().amax(1).gt(1e-6).all()
    # stop_grad(e): the gate's value depends on e, its gradient never flows into e
    assert torch.autograd.grad(delta.sum(), e, allow_unused=True)[0] is None
    e_prime = e * delta
    gates = model.task_gates(batch, fields, e_prime)
    assert torch.autograd.grad(sum(g.sum() for g in gates), e_prime, allow_unused=True)[0] is None


@pytest.mark.parametrize("scenario", [1, 2, 3, 4])
def test_each_scenario_output_comes_from_its_own_path(tiny_schema, batch, scenario):
    """Perturbing scenario p's embedding moves exactly the rows of p — for every p, the last one
    included (a loop over scenarios that kept the last iteration would move every row or none)."""
    assert tiny_schema.num_scenarios == 4
    model = make(tiny_schema)
    scen = batch["scenario"]
    with torch.no_grad():
        before = model(batch)
        model.scenario.scenario_id.weight[scenario].add_(2.0)
        after = model(batch)
    own = scen == scenario
    assert own.any() and (~own).any()
    for t in model.task_names:
        moved = after[t] != before[t]  # the other rows are computed exactly as before
        assert torch.equal(moved, own), t


def test_a_mixed_batch_scores_each_row_as_its_scenario_alone(tiny_schema, batch):
    model = make(tiny_schema)
    with torch.no_grad():
        mixed = model(batch)
        for p in batch["scenario"].unique():
            rows = torch.nonzero(batch["scenario"] == p).flatten()
            alone = model(take(batch, rows))
            for t in model.task_names:
                torch.testing.assert_close(alone[t], mixed[t][rows], rtol=1e-5, atol=1e-6)


def test_ppnet_scales_every_tower_layer_per_task(tiny_schema, batch):
    model = make(tiny_schema)
    T = model.num_tasks
    with torch.no_grad():
        out = model(batch)
        # by hand, task by task: h_{l+1} = relu((h_l ⊙ δ_t^l) W_t^l + b_t^l), the last layer linear
        fields = model.encoder.embed_fields(batch)
        e = model.encoder.flatten(batch, fields)
        e_prime = e * model.domain_gate(batch, e)
        gates = model.task_gates(batch, fields, e_prime)  # per layer [B, T, d_l]
        assert len(gates) == len(model.tower_weights) == 4  # input, 16, 8 (hidden) and 8 (tower) widths
        for t, name in enumerate(model.task_names):
            h = e_prime
            for i, (w, b) in enumerate(zip(model.tower_weights, model.tower_biases)):
                h = (h * gates[i][:, t]) @ w[t] + b[t]
                h = torch.relu(h) if i < 3 else h
            torch.testing.assert_close(out[name], h[:, 0], rtol=1e-5, atol=1e-6)
        # each layer's gate is per task: closing task 0's gate at any layer leaves the other tasks as they were
        for layer, gate in enumerate(model.ppnet):
            width = gate.out.out_features // T
            saved = gate.out.bias.clone()
            gate.out.bias[:width] = -1e4  # δ_0^l = 0
            after = model(batch)
            gate.out.bias.copy_(saved)
            first = model.task_names[0]
            assert (after[first] - out[first]).abs().max() > 1e-4, layer
            for t in model.task_names[1:]:
                torch.testing.assert_close(after[t], out[t])


def test_prior_features_are_checked_and_ablations_run(tiny_schema, batch):
    from msmt.spec.errors import ConfigError

    with pytest.raises(ConfigError, match="model.pepnet.prior_features"):
        make(tiny_schema, prior_features=["no_such_feature"])
    model = make(tiny_schema, prior_features=["user_id", "price"])
    assert model.prior_fields.tolist() == [0] and model.prior_dense.tolist() == [1]
    for flags in ({"use_epnet": False}, {"use_ppnet": False}):
        out = make(tiny_schema, **flags)(batch)
        assert all(v.shape == (160,) and torch.isfinite(v).all() for v in out.values())


def test_ppnet_gates_read_the_persona_prior(tiny_schema, batch):
    """δ^l = GateNU_l(e_prior ⊕ e'), e_prior built here by hand from the declared prior features
    (user_id's embedding, the price column): the gates follow the prior, and a row's gates move when
    only its prior feature does (with e' held fixed)."""
    model = make(tiny_schema, prior_features=["user_id", "price"])
    T = model.num_tasks
    user = model.encoder.field_names.index("user_id")
    price = [f.name for f in tiny_schema.spec.features.dense].index("price")
    with torch.no_grad():
        fields = model.encoder.embed_fields(batch)
        e = model.encoder.flatten(batch, fields)
        e_prime = e * model.domain_gate(batch, e)
        x = torch.cat([fields[:, user], batch["dense"][:, price : price + 1], e_prime], dim=1)
        gates = model.task_gates(batch, fields, e_prime)
        for gate, got in zip(model.ppnet, gates):
            torch.testing.assert_close(got, gate(x).view(x.shape[0], T, -1))
        moved = dict(batch, dense=batch["dense"].clone())
        moved["dense"][::2, price] += 1.0  # every other row's price
        shifted = model.task_gates(moved, fields, e_prime)
    for got, new in zip(gates, shifted):
        change = (new - got).abs().flatten(1).amax(1) > 1e-6
        assert torch.equal(change, torch.arange(x.shape[0]) % 2 == 0)


def test_every_task_trains_the_domain_gate(tiny_schema, batch):
    """δ_domain is learnt from every task: stop_grad applies to the embedding inside the gate's input
    only, so each task's output sends a gradient into EPNet and into the scenario representation."""
    model = make(tiny_schema)
    for t in model.task_names:
        moved = trained_by(model, batch, t)
        assert {n for n, _ in model.epnet.named_parameters(prefix="epnet")} <= moved, t
        assert any(n.startswith("scenario.") for n in moved), t
