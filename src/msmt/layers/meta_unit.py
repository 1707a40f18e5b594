"""The meta unit of M2M (Zhang et al., WSDM 2022, "Leaving No One Behind", section 3.3).

Meta(h; S̃) is a small K-layer network whose weights and biases are *generated* for every row
from its scenario knowledge representation S̃ [B, s]: for layer i a linear generator gives
W⁽ⁱ⁾ = reshape(G_Wⁱ [S̃; 1]) [d_i, d_{i+1}] and b⁽ⁱ⁾ = G_bⁱ [S̃; 1] [d_{i+1}]; then
h⁽ⁱ⁺¹⁾ = act(h⁽ⁱ⁾ W⁽ⁱ⁾ + b⁽ⁱ⁾). Every row (scenario and advertiser profile) gets its own network,
applied to all rows at once with batched products — no loop over rows or scenarios.

Generation is one GEMM per layer, [B, s+1] x [s+1, G·d_i·d_{i+1}], whose output is viewed (no
copy) as the per-row matrices. With one input vector per row and group (the meta tower) the
per-row matrices are never built: h·W(S̃) is evaluated as a bilinear form in h and [S̃; 1]
(``MetaUnit.bilinear``), one GEMM per group over all rows (docs/results/m2m_speed.md).

``groups`` G independent networks are generated per row (M2M's per-task meta towers).
``bias=False`` generates weights only (APG's r x r core S(z), :mod:`msmt.layers.apg`).
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
        bias: generate a bias per layer too (False: h⁽ⁱ⁺¹⁾ = act(h⁽ⁱ⁾ W⁽ⁱ⁾), no ``bias_i``).

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
        bias: bool = True,
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
        use_bias = bias
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
            if use_bias:
                self.biases.append(nn.Parameter(bias))
        self.use_bias = use_bias

    @staticmethod
    def _with_one(s: Tensor) -> Tensor:
        return torch.cat([s, s.new_ones(s.shape[0], 1)], dim=1)  # [B, s+1]

    def _bias(self, i: int) -> nn.Parameter | None:
        return self.biases[i] if self.use_bias else None

    def generate(self, s: Tensor, first: int = 0) -> list[tuple[Tensor, Tensor | None]]:
        """Per layer ``first..K-1`` (W [B, G, d_i, d_{i+1}], b [B, G, d_{i+1}] or None without biases);
        without the B axis when static."""
        pairs = [(self.weights[i], self._bias(i)) for i in range(first, len(self.shapes))]
        if self.static:
            return pairs
        s1 = self._with_one(s)  # [B, s+1]
        B = s.shape[0]

        def gen(p: Tensor | None) -> Tensor | None:
            return None if p is None else (s1 @ p.flatten(1)).view(B, *p.shape[1:])

        return [(gen(w), gen(bias)) for w, bias in pairs]

    def apply(self, x: Tensor, params: list[tuple[Tensor, Tensor | None]], first: int = 0) -> Tensor:
        """Run layers ``first..K-1`` with their generated ``params`` (``generate(s, first)``) on x [B, G, n, d_first]."""
        last = len(self.shapes) - 1
        for i, (w, b) in enumerate(params, start=first):
            if w.dim() == 3:  # static [G, d_i, d_{i+1}]: one GEMM per group over all rows, not a per-row broadcast
                B, G, n, a = x.shape
                x = torch.bmm(x.transpose(0, 1).reshape(G, B * n, a), w).view(G, B, n, -1).transpose(0, 1)
            else:
                x = torch.matmul(x, w)  # batched over (B, G): [B, G, n, d_{i+1}]
            if b is not None:
                x = x + b.unsqueeze(-2)
            if i < last or self.final_act:
                x = self.act(x)
        return x

    @staticmethod
    def bilinear(h: Tensor, s1: Tensor, w: Tensor) -> Tensor:
        """h·W(S̃) per row and group without building W: h [B, G, n, a], [S̃; 1] [B, c], generator
        w [c, G, a, o] -> [B, G, n, o]. Used for n = 1 (the meta tower); with several vectors per
        row (meta attention) generating W once and a batched matmul is faster (m2m_meta_ab.py).

        W(S̃) = Σ_c [S̃; 1]_c G_c is linear in [S̃; 1], so h·W(S̃) = Σ_c [S̃; 1]_c (h·G_c). The
        order with the smaller intermediate is used: h·G first ([B, G, n, c, o]) when o ≤ a, else
        the outer product h ⊗ [S̃; 1] first ([B, G, n, c·a]); either way one GEMM per group over
        all rows instead of generating [B, G, a, o] and applying it row by row.
        """
        B, G, n, a = h.shape
        c, o = w.shape[0], w.shape[-1]
        rows = h.transpose(0, 1).reshape(G, B * n, a)  # [G, B·n, a]
        if o <= a:
            y = torch.bmm(rows, w.permute(1, 2, 0, 3).reshape(G, a, c * o)).view(G, B, n, c, o)
            out = (y * s1.view(1, B, 1, c, 1)).sum(3)  # [G, B, n, o]
        else:
            outer = (rows.view(G, B, n, 1, a) * s1.view(1, B, 1, c, 1)).reshape(G, B * n, c * a)
            out = torch.bmm(outer, w.permute(1, 0, 2, 3).reshape(G, c * a, o)).view(G, B, n, o)
        return out.transpose(0, 1)

    def run(self, x: Tensor, s1: Tensor, first: int = 0) -> Tensor:
        """Layers ``first..K-1`` on x [B, G, n, d_first] given [S̃; 1] [B, s+1], as bilinear forms."""
        last = len(self.shapes) - 1
        for i in range(first, last + 1):
            w, b = self.weights[i], self._bias(i)
            x = self.bilinear(x, s1, w)  # [B, G, n, d_{i+1}]
            if b is not None:
                x = x + (s1 @ b.flatten(1)).view(-1, b.shape[1], 1, b.shape[2])
            if i < last or self.final_act:
                x = self.act(x)
        return x

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        if self.static or x.shape[2] != 1:  # several vectors per row: generate once, batched matmuls
            return self.apply(x, self.generate(s))
        return self.run(x, self._with_one(s))  # one vector per (row, group), the meta tower
