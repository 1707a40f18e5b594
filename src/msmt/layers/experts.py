"""A bank of k expert MLPs on one shared input (MMoE's experts, M2M's expert views).

E_j = MLP_j(x), j = 1..k, all with the same layer sizes. Every expert reads the same input, so
their first layers are one GEMM: ``[B, in] x [in, k·h₁]`` (one weight ``first.weight``
[k·h₁, in], expert j owning rows j·h₁ … (j+1)·h₁). Its output is split column-wise (views, no
copy) and each expert continues on its own slice: the activation and the deeper layers run per
expert, so their [B, h] tensors stay cache-sized. Against k separate MLPs this is ~1.1× faster
in bfloat16 training and equal in float32; stacking the deeper layers into batched matmuls
instead is 0.84–0.91× in bfloat16 (the levers of ``benchmarks/speed.py``, docs/speed.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from msmt.layers.mlp import MLP, activation

INITS = ("per_expert", "stacked")


def _uniform(shape: tuple[int, ...], bound: float) -> Tensor:
    return torch.empty(shape).uniform_(-bound, bound)


class ExpertBank(nn.Module):
    """k MLPs with identical shapes: [B, in] -> [B, k, dims[-1]].

    Args:
        k: number of experts.
        in_dim: input width.
        dims: hidden sizes of every expert (Linear -> activation -> dropout per layer).
        init: the order in which the initial weights are drawn, so that a seed gives the same
            network as the layer this one replaced (and published results reproduce):
            ``"per_expert"`` — expert by expert, each like ``MLP`` (nn.Linear's init; MMoE);
            ``"stacked"`` — layer by layer, all experts' [k, in, out] weights in one draw
            (M2M). Both draw U(-1/√fan_in, 1/√fan_in), nn.Linear's distribution.

    Parameters: ``first`` (nn.Linear(in_dim, k·dims[0]), all experts' first layers) and
    ``deeper[j]`` (an :class:`MLP` over ``dims[1:]`` for expert j; empty when ``len(dims) == 1``).
    """

    def __init__(
        self,
        k: int,
        in_dim: int,
        dims: list[int] | tuple[int, ...],
        act: str = "relu",
        dropout: float = 0.0,
        init: str = "per_expert",
    ):
        super().__init__()
        if not dims:
            raise ValueError("an expert needs at least one hidden layer")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        dims = list(dims)
        self.k, self.width, self.out_dim = k, dims[0], dims[-1]
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        with torch.device("meta"):  # shapes only, no random draws: the weights are drawn below
            self.first = nn.Linear(in_dim, k * dims[0])
            self.deeper = nn.ModuleList(MLP(dims[0], dims[1:], act=act, dropout=dropout) for _ in range(k))
        sizes = [in_dim, *dims]
        if init == "per_expert":
            layers = [[self._linear_draw(a, b) for a, b in zip(sizes[:-1], sizes[1:])] for _ in range(k)]
        else:
            stacked = [(_uniform((k, a, b), 1 / math.sqrt(a)), _uniform((k, b), 1 / math.sqrt(a))) for a, b in zip(sizes[:-1], sizes[1:])]
            layers = [[(w[j].t().contiguous(), bias[j].clone()) for w, bias in stacked] for j in range(k)]
        self.first.weight = nn.Parameter(torch.cat([layer[0][0] for layer in layers]))
        self.first.bias = nn.Parameter(torch.cat([layer[0][1] for layer in layers]))
        for mlp, layer in zip(self.deeper, layers):
            for linear, (w, bias) in zip((m for m in mlp.net if isinstance(m, nn.Linear)), layer[1:]):
                linear.weight, linear.bias = nn.Parameter(w), nn.Parameter(bias)

    @staticmethod
    def _linear_draw(in_dim: int, out_dim: int) -> tuple[Tensor, Tensor]:
        """(weight [out, in], bias [out]) drawn exactly as ``nn.Linear(in_dim, out_dim)`` draws them."""
        w = torch.empty(out_dim, in_dim)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        return w, _uniform((out_dim,), 1 / math.sqrt(in_dim))

    def last_layers(self) -> nn.Module:
        """The last linear layer of every expert (GradNorm's anchor): one module for all of them."""
        if self.deeper[0].last_linear() is not None:
            return nn.ModuleList(d.last_linear() for d in self.deeper)
        return self.first

    def forward(self, x: Tensor) -> Tensor:
        first = self.first(x).split(self.width, dim=1)  # k views [B, h1]
        return torch.stack([mlp(self.dropout(self.act(h))) for mlp, h in zip(self.deeper, first)], dim=1)
