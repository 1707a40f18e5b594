"""The meta unit of M2M (Zhang et al., WSDM 2022, "Leaving No One Behind", section 3.3).

Meta(h; S̃) is a small K-layer network whose weights and biases are *generated* for every row
from its scenario knowledge representation S̃ [B, s]: one linear generator maps S̃ to a vector
that is cut and reshaped into each layer's matrix W⁽ⁱ⁾ [d_i, d_{i+1}] and bias b⁽ⁱ⁾ [d_{i+1}];
then h⁽ⁱ⁺¹⁾ = act(h⁽ⁱ⁾ W⁽ⁱ⁾ + b⁽ⁱ⁾). Every row (scenario and advertiser profile) so gets its own
network, applied to all rows at once with batched matrix products — no loop over rows.

``groups`` G independent networks are generated per row by the same fused generator (M2M's
per-task meta towers), so one linear layer and one batched matmul per depth serve all of them.
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
            every row (the generator's constant part only), S̃ ignored.

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
        self.sizes = [a * b + b for a, b in self.shapes]
        self.total = sum(self.sizes)
        self.groups = groups
        self.static = static
        self.final_act = final_act
        self.act = activation(act)
        constant = torch.cat([self._constant_init(a, b) for a, b in self.shapes]).repeat(groups)  # [G*P]
        if static:
            self.theta = nn.Parameter(constant.view(groups, self.total))
            self.generator = None
        else:
            self.generator = nn.Linear(scenario_dim, groups * self.total)
            with torch.no_grad():
                self.generator.bias.copy_(constant)
                # scenario-dependent part: about half the scale of the constant part for unit-scale S̃
                std = torch.cat([torch.full((a * b + b,), 0.5 / math.sqrt(a * scenario_dim)) for a, b in self.shapes])
                self.generator.weight.normal_().mul_(std.repeat(groups).unsqueeze(1))

    @staticmethod
    def _constant_init(a: int, b: int) -> Tensor:
        bound = 1.0 / math.sqrt(a)  # nn.Linear's default scale
        return torch.empty(a * b + b).uniform_(-bound, bound)

    def generate(self, s: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per layer (W [B, G, d_i, d_{i+1}], b [B, G, d_{i+1}]); without the B axis when static."""
        if self.generator is None:
            theta = self.theta  # [G, P]
        else:
            theta = self.generator(s).view(s.shape[0], self.groups, self.total)  # [B, G, P]
        params = []
        for (a, b), chunk in zip(self.shapes, theta.split(self.sizes, dim=-1)):
            w, bias = chunk.split([a * b, b], dim=-1)
            params.append((w.unflatten(-1, (a, b)), bias))
        return params

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        params = self.generate(s)
        last = len(params) - 1
        for i, (w, b) in enumerate(params):
            x = torch.matmul(x, w) + b.unsqueeze(-2)  # batched over (B, G): [B, G, n, d_{i+1}]
            if i < last or self.final_act:
                x = self.act(x)
        return x
