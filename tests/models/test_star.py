"""STAR: star-topology FC, partitioned normalisation (per-scenario statistics), auxiliary network.

The central property: one scenario's rows never move another scenario's normalisation
statistics (in training) and, at inference, a row's output does not depend on its batch-mates.
"""

from __future__ import annotations

import pytest
import torch

from helpers import trained_by
from msmt.data.tensorize import encode_frame
from msmt.layers.star import PartitionedNorm, StarLinear
from msmt.models import build_model
from msmt.spec.batch import take
from msmt.spec.config import ModelConfig

P, D = 3, 5


def star_cfg(**kw) -> ModelConfig:
    return ModelConfig.model_validate({"name": "star", "embedding_dim": 4, "hidden_dims": [16, 8], "tower_dims": [8], **kw})


def data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, D, generator=g) * torch.arange(1, D + 1) + 3.0
    scen = torch.randint(1, P + 1, (n,), generator=g)
    return z, scen


def make_norm():
    torch.manual_seed(0)
    norm = PartitionedNorm(P, D, momentum=0.2)
    with torch.no_grad():  # non-trivial affine parameters
        norm.gamma.uniform_(0.5, 1.5)
        norm.beta.normal_()
        norm.scenario_gamma.uniform_(0.5, 1.5)
        norm.scenario_beta.normal_()
    return norm


def test_training_normalisation_uses_each_scenarios_own_batch_statistics():
    norm = make_norm().train()
    z, scen = data()
    out = norm(z, scen)
    for p in range(1, P + 1):
        rows = scen == p
        mu, var = z[rows].mean(0), z[rows].var(0, unbiased=False)
        ref = norm.gamma * norm.scenario_gamma[p - 1] * (z[rows] - mu) / torch.sqrt(var + norm.eps) + norm.beta + norm.scenario_beta[p - 1]
        torch.testing.assert_close(out[rows], ref)
        # running averages: momentum update with the unbiased variance, as BatchNorm
        torch.testing.assert_close(norm.running_mean[p - 1], 0.2 * mu)
        torch.testing.assert_close(norm.running_var[p - 1], 0.8 + 0.2 * z[rows].var(0, unbiased=True))


def test_one_scenarios_rows_never_move_another_scenarios_statistics():
    z, scen = data()
    a, b = make_norm().train(), make_norm().train()
    z2 = z.clone()
    z2[scen == 1] = z2[scen == 1] * 10 - 50  # change scenario 1's rows only
    out_a, out_b = a(z, scen), b(z2, scen)
    torch.testing.assert_close(a.running_mean[1:], b.running_mean[1:])  # scenarios 2 and 3
    torch.testing.assert_close(a.running_var[1:], b.running_var[1:])
    assert not torch.allclose(a.running_mean[0], b.running_mean[0])
    torch.testing.assert_close(out_a[scen != 1], out_b[scen != 1])  # nor their outputs
    # a batch without scenario 3 leaves scenario 3's statistics exactly as they were
    before = (a.running_mean[2].clone(), a.running_var[2].clone())
    a(z[scen != 3], scen[scen != 3])
    assert torch.equal(a.running_mean[2], before[0]) and torch.equal(a.running_var[2], before[1])


def test_inference_uses_running_statistics_and_rows_are_independent():
    norm = make_norm().train()
    for seed in range(5):
        norm(*data(seed=seed))
    norm.eval()
    z, scen = data(seed=9)
    z[0], scen[0] = z[0], 0  # an unknown-scenario row
    full = norm(z, scen)
    for i in (0, 1, 7):
        torch.testing.assert_close(norm(z[i : i + 1], scen[i : i + 1]), full[i : i + 1])
    p = int(scen[1])
    ref = norm.gamma * norm.scenario_gamma[p - 1] * (z[1] - norm.running_mean[p - 1]) / torch.sqrt(
        norm.running_var[p - 1] + norm.eps
    ) + norm.beta + norm.scenario_beta[p - 1]
    torch.testing.assert_close(full[1], ref)
    # unknown scenario: shared affine, pooled (equal-weight mixture) statistics
    mu = norm.running_mean.mean(0)
    var = (norm.running_var + norm.running_mean**2).mean(0) - mu**2
    torch.testing.assert_close(full[0], norm.gamma * (z[0] - mu) / torch.sqrt(var + norm.eps) + norm.beta)


def test_unknown_rows_in_training_move_no_statistics():
    norm = make_norm().train()
    z, scen = data()
    before = (norm.running_mean.clone(), norm.running_var.clone())
    norm(z[:4], torch.zeros(4, dtype=torch.long))
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])


def test_star_linear_is_shared_times_scenario_weights():
    torch.manual_seed(0)
    layer = StarLinear(P, D, 4)
    with torch.no_grad():
        layer.scenario_weight.normal_()
        layer.scenario_bias.normal_()
    z, scen = data(n=12)
    scen[0] = 0
    out = layer(z, scen)
    W, b = layer.shared["weight"], layer.shared["bias"]
    for i in range(12):
        p = int(scen[i])
        if p == 0:
            ref = z[i] @ W + b  # unknown scenario: the centre of the star
        else:
            ref = z[i] @ (W * layer.scenario_weight[p - 1]) + b + layer.scenario_bias[p - 1]
        torch.testing.assert_close(out[i], ref)


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encode_frame(tiny_train.iloc[:300].reset_index(drop=True), tiny_schema)


def test_star_model_in_training_keeps_scenarios_apart(tiny_schema, batch):
    torch.manual_seed(0)
    model = build_model(tiny_schema, star_cfg()).train()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    scen = inputs["scenario"]
    first = int(scen[0])
    out_a = model(inputs)
    stats_a = model.norm.running_mean.clone()
    changed = dict(inputs)
    changed["dense"] = inputs["dense"].clone()
    changed["dense"][scen == first] += 5.0  # only the first scenario's rows change
    model.norm.running_mean.copy_(torch.zeros_like(stats_a))
    model.norm.running_var.fill_(1.0)
    out_b = model(changed)
    keep = scen != first
    for t in out_a:
        torch.testing.assert_close(out_b[t][keep], out_a[t][keep])
    others = [p - 1 for p in range(1, tiny_schema.num_scenarios + 1) if p != first]
    torch.testing.assert_close(model.norm.running_mean[others], stats_a[others])


def test_star_model_inference_unknown_scenario_and_aux_logit(tiny_schema, batch):
    torch.manual_seed(0)
    model = build_model(tiny_schema, star_cfg()).eval()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    inputs["scenario"] = inputs["scenario"].clone()
    inputs["scenario"][:5] = 0  # rows of a scenario never seen in training
    full = model(inputs)
    for i in (0, 10):
        alone = model(take(inputs, slice(i, i + 1)))
        for t in full:
            torch.testing.assert_close(alone[t], full[t][i : i + 1])
    # the auxiliary network's logit is added to every task's output
    with torch.no_grad():
        model.aux.last_linear().bias.add_(torch.tensor([1.0, -2.0, 0.5]))
    shifted = model(inputs)
    for delta, t in zip([1.0, -2.0, 0.5], model.task_names):
        torch.testing.assert_close(shifted[t], full[t] + delta)


def test_declared_shared_layer_is_the_star_centre(tiny_schema):
    model = build_model(tiny_schema, star_cfg())
    layer = model.last_shared_layer()
    assert {id(p) for p in layer.parameters()} == {id(model.star[-1].shared["weight"]), id(model.star[-1].shared["bias"])}
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in model.norm.parameters()} <= shared
    assert not any(id(p) in shared for p in model.towers.parameters())


def test_auxiliary_logit_is_the_aux_network_on_the_rows_scenario(tiny_schema, batch):
    """y_t = Tower_t(h) + Aux(s)_t: the auxiliary term, the output minus the towers on the star
    FCN's h, equals the aux MLP on the row's own scenario embedding, looked up by hand (the dataset
    has no scenario attributes); moving scenario p's embedding moves exactly the rows of p."""
    assert not tiny_schema.spec.scenario.attributes.sparse and not tiny_schema.spec.scenario.attributes.dense
    torch.manual_seed(0)
    model = build_model(tiny_schema, star_cfg()).eval()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    scen = inputs["scenario"]
    with torch.no_grad():
        out = model(inputs)
        h = model.norm(model.encoder(inputs), scen)
        for layer in model.star:
            h = torch.relu(layer(h, scen))
        aux = model.aux(model.aux_encoder.table.weight[scen])  # [B, T]: the scenario id's embedding row
        assert (aux[scen == 1] - aux[scen == 2][:1]).abs().amax() > 1e-4  # scenarios get their own term
        for i, t in enumerate(model.task_names):
            torch.testing.assert_close(out[t] - model.towers[t](h).squeeze(-1), aux[:, i], rtol=1e-5, atol=1e-5)
        model.aux_encoder.table.weight[2].add_(1.0)
        moved = model(inputs)
    for t in model.task_names:
        assert torch.equal((moved[t] - out[t]).abs() > 1e-6, scen == 2), t


def test_star_model_hands_every_layer_the_rows_own_scenario(tiny_schema, batch):
    """Moving scenario p's own parameters (its partitioned-norm scale, its star weights in the first and
    the last layer) moves exactly the rows of p: the norm and each star layer read the row's scenario,
    not the centre of the star."""
    torch.manual_seed(0)
    model = build_model(tiny_schema, star_cfg()).eval()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    scen = inputs["scenario"]
    p = int(scen[0])
    with torch.no_grad():
        before = model(inputs)
        for param in (model.norm.scenario_gamma, model.star[0].scenario_weight, model.star[-1].scenario_bias):
            param[p - 1] += 0.3
            after = model(inputs)
            param[p - 1] -= 0.3
            for t in before:
                assert (after[t][scen == p] - before[t][scen == p]).abs().amin() > 0  # every row of p moves
                torch.testing.assert_close(after[t][scen != p], before[t][scen != p])


def test_every_task_trains_the_auxiliary_network_and_its_scenario_input(tiny_schema, batch):
    """Aux(s)_t is learnt with the rest of the model: each task's output sends a gradient into the
    auxiliary MLP (its own output unit only) and into the scenario embedding it reads."""
    torch.manual_seed(0)
    model = build_model(tiny_schema, star_cfg())
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    out_layer = model.aux.last_linear()
    for i, t in enumerate(model.task_names):
        moved = trained_by(model, inputs, t)
        assert any(n.startswith("aux.") for n in moved) and any(n.startswith("aux_encoder.") for n in moved), t
        rows = out_layer.weight.grad.abs().sum(1) > 0  # [T]: which output units the task's gradient reached
        assert rows.tolist() == [j == i for j in range(len(model.task_names))], t
