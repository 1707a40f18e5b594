"""APG (Yan et al., NeurIPS 2022): the low-rank layer equals the dense product W(z) = U·S(z)·V,
the generated weights differ per scenario (and per condition feature), S(z) comes from M2M's
meta-unit generator, and the over-parameterised factors multiply back into U and V."""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config, trained_by
from msmt.layers.apg import APGLinear
from msmt.layers.meta_unit import MetaUnit
from msmt.models import build_model


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encoded(tiny_train.iloc[:128].reset_index(drop=True), tiny_schema, with_labels=False)


def make(schema, **apg):
    torch.manual_seed(0)
    return build_model(schema, model_config("apg", hidden_dims=[16, 8], apg={"rank": 4, **apg})).eval()


@pytest.mark.parametrize("overparam", [0, 12])
def test_low_rank_layer_equals_the_dense_product(overparam):
    torch.manual_seed(0)
    layer = APGLinear(10, 7, condition_dim=5, rank=4, overparam=overparam, act=None)
    x, z = torch.randn(9, 10), torch.randn(9, 5)
    u, v = layer.factors()
    S = layer.generated_core(z)  # [B, K, K]
    # S(z) = reshape(G [z; 1]) from the meta unit's linear generator
    G = layer.core.weights[0][:, 0]  # [c+1, K, K]
    torch.testing.assert_close(S, torch.einsum("bc,ckl->bkl", torch.cat([z, torch.ones(9, 1)], 1), G))
    dense = torch.stack([u @ S[b] @ v for b in range(9)])  # W(z) = U S(z) V, [B, N, M]
    torch.testing.assert_close(layer.dense_weight(z), dense)
    torch.testing.assert_close(layer(x, z), torch.einsum("bn,bnm->bm", x, dense) + layer.bias, rtol=1e-5, atol=1e-6)
    if overparam:
        torch.testing.assert_close(u, layer.u_left @ layer.u_right)
        torch.testing.assert_close(v, layer.v_left @ layer.v_right)
        assert layer.u_left.shape == (10, 12) and layer.v_right.shape == (12, 7)


def test_apg_reuses_the_meta_unit_generator(tiny_schema):
    model = make(tiny_schema)
    assert all(isinstance(layer.core, MetaUnit) and not layer.core.use_bias for layer in model.layers)


def test_generated_weights_differ_per_scenario(tiny_schema, batch):
    model = make(tiny_schema)
    scen = batch["scenario"]
    with torch.no_grad():
        z = model.condition_vector(batch)
        for layer in model.layers:
            W = layer.dense_weight(z)  # [B, N, M]
            firsts = {int(p): int(torch.nonzero(scen == p)[0]) for p in scen.unique()}
            assert len(firsts) == tiny_schema.num_scenarios
            for p, row in firsts.items():  # one network per scenario: the same for every row of it
                same = torch.nonzero(scen == p).flatten()
                torch.testing.assert_close(W[same], W[row].expand_as(W[same]))
            rows = list(firsts.values())
            for i in range(len(rows)):
                for j in range(i + 1, len(rows)):
                    assert (W[rows[i]] - W[rows[j]]).abs().max() > 1e-4
            # and the model applies each row's own W(z)
        x = model.encoder(batch)
        first = model.layers[0]
        torch.testing.assert_close(first(x, z), torch.relu(torch.einsum("bn,bnm->bm", x, first.dense_weight(z)) + first.bias),
                                   rtol=1e-5, atol=1e-6)


def test_condition_features_give_rows_of_one_scenario_their_own_weights(tiny_schema, batch):
    model = make(tiny_schema, condition_features=["user_id"])
    scen = batch["scenario"]
    rows = torch.nonzero(scen == scen[0]).flatten()
    users = batch["sparse"][rows, 0]
    a, b = rows[0], rows[int(torch.nonzero(users != users[0])[0])]
    with torch.no_grad():
        W = model.layers[0].dense_weight(model.condition_vector(batch))
    assert (W[a] - W[b]).abs().max() > 1e-4


def test_model_runs_every_layer_with_the_rows_own_generated_weights(tiny_schema, batch):
    """The whole network by hand: hˡ = relu(hˡ⁻¹ · W_l(z) + b_l) with each row's dense W_l(z) = U S_l(z) V,
    z the row's condition vector, then the towers (a layer fed another z, or none, differs)."""
    model = make(tiny_schema, condition_features=["user_id"])
    with torch.no_grad():
        out = model(batch)
        z = model.condition_vector(batch)
        h = model.encoder(batch)
        for layer in model.layers:
            h = torch.relu(torch.einsum("bn,bnm->bm", h, layer.dense_weight(z)) + layer.bias)
        for t in model.task_names:
            torch.testing.assert_close(out[t], model.towers[t](h).squeeze(-1), rtol=1e-5, atol=1e-6)


def test_every_task_trains_the_condition_network(tiny_schema, batch):
    """The weights are generated from z = LayerNorm(MLP(S ⊕ C)), and z is learnt: each task's output
    sends a gradient through every generated layer into the condition network, the scenario input
    and the generator G itself."""
    model = make(tiny_schema, condition_features=["user_id"])
    for t in model.task_names:
        moved = trained_by(model, batch, t)
        condition = {n for n in moved if n.startswith("condition.")}
        assert condition == {n for n, _ in model.condition.named_parameters(prefix="condition")}, (t, condition)
        assert all(any(n.startswith(f"layers.{i}.core.") for n in moved) for i in range(len(model.layers))), t
