"""The meta unit of M2M (Zhang et al., WSDM 2022, "Leaving No One Behind", section 3.3).

Meta(h; S̃) is a small K-layer network whose weights and biases are *generated* for every row
from its scenario knowledge representation S̃ [B, s]: for layer i a linear generator gives
W⁽ⁱ⁾ = reshape(G_Wⁱ [S̃; 1]) [d_i, d_{i+1}] and b⁽ⁱ⁾ = G_bⁱ [S̃; 1] [d_{i+1}]; then
h⁽ⁱ⁺¹⁾ = act(h⁽ⁱ⁾ W⁽ⁱ⁾ + b⁽ⁱ⁾). Every row (scenario and advertiser profile) gets its own network,
applied to all rows at once with batched products — no loop over rows or scenarios.

Generation is one GEMM per layer, [B, s+1] x [s+1, G·d_i·d_{i+1}], whose output is viewed (no
copy) as the per-row matrices; with one input vector per row and group (the meta tower) the
generated matrix is applied as an elementwise product and a sum, which on CPU is about twice as
fast as a batched matmul of B·G 1-row products (benchmarks/m2m_speed.py).

``groups`` G independent networks are generated per row (M2M's per-task meta towers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from msmt.layers.mlp import activation


class MetaUnit(nn.Module):
    """Per-row generated K-layer network.

    Args:
        dims: [d_0, d_1, ..., d_K] layer sizes (K = len(dims) - 1 ≥ 1 generated layers).
        scenario_dim: size s of S̃.
        groups: G networks generated per row.
        act: activation after each layer; the last layer's only with ``final_act``.
        static: the "w/o meta" ablation: the same network with learned weights shared by
            every row (only the generators' constant parts), S̃ ignored.

    Parameters per layer i (the linear generators): ``weight_i`` [s+1, G, d_i, d_{i+1}] and
    ``bias_i`` [s+1, G, d_{i+1}], row s being the constant part; static: [G, d_i, d_{i+1}] and [G, d_{i+1}].
    Shapes: ``forward(x [B, G, n, d_0], s [B, s]) -> [B, G, n, d_K]``.
    """

    def __init__(
        self,
        dims: list[int],
        scenario_dim: int,
        groups: int = 1,
        act: str = "relu",
        final_act: bool = False,
        static: bool = False,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError("a meta unit needs at least one layer (dims = [in, out])")
        self.shapes = list(zip(dims[:-1], dims[1:]))
        self.groups = groups
        self.static = static
        self.final_act = final_act
        self.act = activation(act)
        s = scenario_dim
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in self.shapes:
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default scale for the constant part
            if static:
                w = torch.empty(groups, a, b).uniform_(-bound, bound)
                bias = torch.empty(groups, b).uniform_(-bound, bound)
            else:
                # scenario-dependent part: about half the constant part's scale for unit-scale S̃
                w = torch.randn(s + 1, groups, a, b) * (0.5 / math.sqrt(a * s))
                w[s].uniform_(-bound, bound)
                bias = torch.randn(s + 1, groups, b) * (0.5 / math.sqrt(a * s))
                bias[s].uniform_(-bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(bias))

    @staticmethod
    def _with_one(s: Tensor) -> Tensor:
        return torch.cat([s, s.new_ones(s.shape[0], 1)], dim=1)  # [B, s+1]

    def generate(self, s: Tensor, first: int = 0) -> list[tuple[Tensor, Tensor]]:
        """Per layer ``first..K-1`` (W [B, G, d_i, d_{i+1}], b [B, G, d_{i+1}]); without the B axis when static."""
        pairs = list(zip(self.weights, self.biases))[first:]
        if self.static:
            return pairs
        s1 = self._with_one(s)  # [B, s+1]
        B = s.shape[0]
        return [((s1 @ w.flatten(1)).view(B, *w.shape[1:]), (s1 @ bias.flatten(1)).view(B, *bias.shape[1:])) for w, bias in pairs]

    def apply(self, x: Tensor, params: list[tuple[Tensor, Tensor]], first: int = 0) -> Tensor:
        """Run layers ``first..K-1`` with their generated ``params`` (``generate(s, first)``) on x [B, G, n, d_first]."""
        last = len(self.shapes) - 1
        for i, (w, b) in enumerate(params, start=first):
            x = torch.matmul(x, w) + b.unsqueeze(-2)  # batched over (B, G): [B, G, n, d_{i+1}]
            if i < last or self.final_act:
                x = self.act(x)
        return x

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        params = self.generate(s)
        if self.static or x.shape[2] != 1:
            return self.apply(x, params)
        h = x.squeeze(2)  # one vector per (row, group): [B, G, d_0]
        last = len(params) - 1
        for i, (w, b) in enumerate(params):
            h = (h.unsqueeze(-1) * w).sum(-2) + b  # h·W per (row, group), [B, G, d_{i+1}]
            if i < last or self.final_act:
                h = self.act(h)
        return h.unsqueeze(2)
