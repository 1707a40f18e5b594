"""Shared-Bottom (Caruana 1997): every task's tower reads the one shared bottom h = MLP(emb(x)).

Checked against a forward written from the raw Linear weights (so a tower reading another
task's head, or the embedding instead of h, shows), and by gradients: task t's output reaches
the shared bottom and the embeddings, its own tower, and no other task's tower.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import encoded, model_config, trained_by
from msmt.models import build_model


@pytest.fixture(scope="module")
def batch(tiny_train, tiny_schema):
    return encoded(tiny_train.iloc[:64].reset_index(drop=True), tiny_schema, with_labels=False)


@pytest.fixture()
def model(tiny_schema):
    torch.manual_seed(0)
    return build_model(tiny_schema, model_config("shared_bottom", hidden_dims=[12, 10], tower_dims=[6])).eval()


def by_hand(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MLP's layers in order, each Linear from its raw weights (eval: dropout is the identity)."""
    for layer in mlp.net:
        if isinstance(layer, nn.Linear):
            x = x @ layer.weight.T + layer.bias
        elif isinstance(layer, nn.ReLU):
            x = torch.relu(x)
    return x


def test_each_tower_reads_the_shared_bottom(model, batch):
    assert len(model.task_names) >= 2
    with torch.no_grad():
        out = model(batch)
        h = by_hand(model.bottom, model.encoder(batch))  # [B, H], the bottom from its raw weights
        for t in model.task_names:
            torch.testing.assert_close(out[t], by_hand(model.towers[t], h).squeeze(-1), atol=1e-5, rtol=1e-5)


def test_task_gradients_reach_the_bottom_and_only_their_own_tower(model, batch):
    for t in model.task_names:
        moved = trained_by(model, batch, t)
        assert any(n.startswith("bottom.") for n in moved), t  # the shared bottom learns from every task
        assert any(n.startswith("encoder.") for n in moved), t
        assert any(n.startswith(f"towers.{t}.") for n in moved), t
        others = [n for n in moved if n.startswith("towers.") and not n.startswith(f"towers.{t}.")]
        assert not others, (t, others)


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_model_activation_is_the_one_configured(tiny_schema, batch, act):
    """``model.activation`` reaches every hidden layer: the forward by hand with that function
    (GELU, SiLU) equals the model's, and the same weights through ReLU give another output."""
    fn = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[act]

    def through(mlp, x, f, output_layer):
        linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            x = x @ layer.weight.T + layer.bias
            if not (output_layer and i == len(linears) - 1):
                x = f(x)
        return x

    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("shared_bottom", hidden_dims=[12, 10], tower_dims=[6], activation=act)).eval()
    with torch.no_grad():
        out = model(batch)
        x = model.encoder(batch)
        for f in (fn, torch.relu):
            h = through(model.bottom, x, f, output_layer=False)  # hidden layers only
            for t in model.task_names:
                want = through(model.towers[t], h, f, output_layer=True).squeeze(-1)
                if f is fn:
                    torch.testing.assert_close(out[t], want, atol=1e-5, rtol=1e-5)
                else:
                    assert (out[t] - want).abs().max() > 1e-4, t
