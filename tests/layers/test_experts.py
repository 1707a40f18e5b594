"""ExpertBank (msmt.layers.experts): k expert MLPs with their first layers in one GEMM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from msmt.layers import MLP
from msmt.layers.experts import ExpertBank


def naive_experts(bank: ExpertBank, x: torch.Tensor) -> torch.Tensor:
    """Expert by expert, from the bank's weights: relu(x W1_jᵀ + b1_j), then expert j's deeper MLP."""
    h = bank.width
    outs = []
    for j in range(bank.k):
        w, b = bank.first.weight[j * h : (j + 1) * h], bank.first.bias[j * h : (j + 1) * h]
        outs.append(bank.deeper[j](torch.relu(x @ w.t() + b)))
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("dims", [[6], [6, 5], [6, 5, 3]])
@pytest.mark.parametrize("init", ["per_expert", "stacked"])
def test_bank_equals_k_separate_experts(dims, init):
    torch.manual_seed(0)
    bank = ExpertBank(3, 7, dims, init=init).double()
    x = torch.randn(4, 7, dtype=torch.float64)
    got = bank(x)
    assert got.shape == (4, 3, dims[-1])
    torch.testing.assert_close(got, naive_experts(bank, x), atol=1e-12, rtol=0)


def test_gradients_match_the_naive_experts():
    torch.manual_seed(1)
    bank = ExpertBank(2, 5, [4, 3]).double()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    grads = []
    for fn in (bank, lambda v: naive_experts(bank, v)):
        bank.zero_grad()
        x.grad = None
        (fn(x) ** 2).sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in bank.parameters())])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_per_expert_init_draws_like_k_separate_mlps():
    """A seed gives the weights k separate MLPs (MMoE's former experts) got from it."""
    torch.manual_seed(3)
    mlps = [MLP(9, [8, 4]) for _ in range(3)]
    torch.manual_seed(3)
    bank = ExpertBank(3, 9, [8, 4], init="per_expert")
    firsts = [m.net[0] for m in mlps]
    torch.testing.assert_close(bank.first.weight, torch.cat([f.weight for f in firsts]), atol=0, rtol=0)
    torch.testing.assert_close(bank.first.bias, torch.cat([f.bias for f in firsts]), atol=0, rtol=0)
    for mlp, deeper in zip(mlps, bank.deeper):
        torch.testing.assert_close(deeper.net[0].weight, mlp.net[2].weight, atol=0, rtol=0)


def test_stacked_init_draws_layer_by_layer():
    """A seed gives the [k, in, out] draws of M2M's former stacked experts, U(±1/√fan_in)."""
    torch.manual_seed(4)
    w1 = torch.empty(2, 9, 8).uniform_(-1 / 3, 1 / 3)
    b1 = torch.empty(2, 8).uniform_(-1 / 3, 1 / 3)
    w2 = torch.empty(2, 8, 4).uniform_(-1 / math.sqrt(8), 1 / math.sqrt(8))
    torch.manual_seed(4)
    bank = ExpertBank(2, 9, [8, 4], init="stacked")
    torch.testing.assert_close(bank.first.weight, w1.transpose(1, 2).reshape(16, 9), atol=0, rtol=0)
    torch.testing.assert_close(bank.first.bias, b1.reshape(16), atol=0, rtol=0)
    torch.testing.assert_close(bank.deeper[1].net[0].weight, w2[1].t(), atol=0, rtol=0)
    assert bank.deeper[0].net[0].bias.untyped_storage().data_ptr() != bank.deeper[1].net[0].bias.untyped_storage().data_ptr()


def test_last_layers_and_bad_arguments():
    deep = ExpertBank(3, 4, [5, 2])
    assert isinstance(deep.last_layers(), nn.ModuleList) and len(deep.last_layers()) == 3
    assert all(lin.out_features == 2 for lin in deep.last_layers())
    shallow = ExpertBank(3, 4, [5])
    assert shallow.last_layers() is shallow.first
    with pytest.raises(ValueError, match="init"):
        ExpertBank(2, 4, [5], init="xavier")
    with pytest.raises(ValueError, match="hidden layer"):
        ExpertBank(2, 4, [])
