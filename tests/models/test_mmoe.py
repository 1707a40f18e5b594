"""MMoE (Ma et al., KDD 2018): y_t = Tower_t(Σ_i softmax(W_t x)_i f_i(x)), checked against a
naive reference built from the weights: each expert run by hand from its slice of the fused first
layer, each task's gate a softmax over the k experts of that row and task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import encoded, model_config
from msmt.models import build_model


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encoded(tiny_train.iloc[:48].reset_index(drop=True), tiny_schema, with_labels=False)


def run_mlp(mlp, h):
    """An msmt MLP (Linear / ReLU layers) on one vector, in float64, without touching the module."""
    for layer in mlp.net:
        h = F.linear(h, layer.weight.double(), layer.bias.double()) if isinstance(layer, nn.Linear) else torch.relu(h)
    return h


def naive_mmoe(model, x):
    """{task: [B]} from x [B, D] with per-row, per-task loops (no batched gate tensor)."""
    bank = model.experts
    k, width, T = bank.k, bank.width, model.num_tasks
    out = {t: [] for t in model.task_names}
    for row in x.double():
        experts = []
        for j in range(k):
            w1 = bank.first.weight[j * width : (j + 1) * width].double()  # expert j's rows of the fused layer
            h = torch.relu(w1 @ row + bank.first.bias[j * width : (j + 1) * width].double())
            experts.append(run_mlp(bank.deeper[j], h))
        for t, name in enumerate(model.task_names):
            w_t = model.gates.weight[t * k : (t + 1) * k].double()  # W_t [k, D]
            logits = w_t @ row
            gate = torch.exp(logits - logits.max())
            gate = gate / gate.sum()
            assert abs(float(gate.sum()) - 1.0) < 1e-12 and len(gate) == k  # a distribution over the experts
            z = sum(gate[i] * experts[i] for i in range(k))
            out[name].append(run_mlp(model.towers[name], z).squeeze(-1))
    assert T == len(out)
    return {t: torch.stack(v) for t, v in out.items()}


@pytest.mark.parametrize("num_experts,hidden", [(4, [16]), (3, [12, 8])])  # k ≠ and = the 3 tasks; deeper experts
def test_mmoe_equals_naive_gated_mixture(tiny_schema, batch, num_experts, hidden):
    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("mmoe", hidden_dims=hidden, mmoe={"num_experts": num_experts})).eval()
    with torch.no_grad():
        fast = model(batch)
        x = model.encoder(batch)
        ref = naive_mmoe(model, x)
    for t in model.task_names:
        torch.testing.assert_close(fast[t].double(), ref[t], atol=1e-5, rtol=1e-5)
