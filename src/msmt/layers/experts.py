"""k expert MLPs evaluated together as stacked weights (M2M's expert views, MMoE's experts).

E_j = MLP_j(F), j = 1..k. The first layer of all experts is one matmul ([B, in] x [in, k*h]);
deeper layers are one batched matmul over the expert axis, so k experts cost a few kernel
launches instead of k times as many.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from msmt.layers.mlp import activation


class ParallelLinear(nn.Module):
    """k independent linear maps: [B, k, in] -> [B, k, out] (or [B, in] shared input -> [B, k, out])."""

    def __init__(self, k: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(max(in_dim, 1))
        self.weight = nn.Parameter(torch.empty(k, in_dim, out_dim).uniform_(-bound, bound))  # nn.Linear's scale
        self.bias = nn.Parameter(torch.empty(k, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        k, i, o = self.weight.shape
        if x.dim() == 2:  # one input shared by all experts: a single [B, in] x [in, k*out] matmul
            y = x @ self.weight.permute(1, 0, 2).reshape(i, k * o)
            return y.view(-1, k, o) + self.bias
        return torch.einsum("bki,kio->bko", x, self.weight) + self.bias


class ParallelMLP(nn.Module):
    """k MLPs with identical shapes: [B, in] -> [B, k, dims[-1]]."""

    def __init__(self, k: int, in_dim: int, dims: list[int] | tuple[int, ...], act: str = "relu", dropout: float = 0.0):
        super().__init__()
        sizes = [in_dim, *dims]
        self.layers = nn.ModuleList(ParallelLinear(k, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = self.dropout(self.act(layer(x)))
        return x
