"""APG: a linear layer whose weights are generated per row from a condition z (Yan et al., NeurIPS
2022, "APG: Adaptive Parameter Generation Network for Click-Through Rate Prediction").

Row-vector form, for input x [B, N] and condition z [B, c]:

    W(z) = U · S(z) · V,   U [N, K], V [K, M] shared, S(z) [K, K] generated,   y = act(x W(z) + b)

S(z) is the generated core: reshape(G [z; 1]) with a linear generator G — the generation of M2M's
meta unit (:class:`~msmt.layers.meta_unit.MetaUnit`, one [K, K] layer without bias), not a second
hypernetwork. The dense [N, M] matrix is never built: y = ((x U) S(z)) V + b costs N·K + K² + K·M
per row instead of N·M per row plus N·M·c to generate (the paper's "decomposed feed-forward").

Over-parameterisation (the paper's section 3.3): with ``overparam`` = P > K, U = U_l U_r
([N, P] · [P, K]) and V = V_l V_r ([K, P] · [P, M]) are trained as products of two matrices — the
same function class, a different optimisation path — and multiply back into U and V for use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from msmt.layers.meta_unit import MetaUnit
from msmt.layers.mlp import activation


def _uniform(*shape: int, fan_in: int) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class APGLinear(nn.Module):
    """x [B, N], z [B, c] -> [B, M] with a per-row weight W(z) = U S(z) V (see the module docstring).

    Args:
        in_dim, out_dim: N and M.
        condition_dim: c, the width of z.
        rank: K, the size of the generated core S(z).
        overparam: P > K to over-parameterise U and V (0: plain U and V).
        act: activation after the layer (None: linear).
    """

    def __init__(self, in_dim: int, out_dim: int, condition_dim: int, rank: int, overparam: int = 0, act: str | None = "relu"):
        super().__init__()
        if overparam and overparam <= rank:
            raise ValueError(f"overparam ({overparam}) must exceed rank ({rank})")
        self.overparam = overparam
        if overparam:
            self.u_left, self.u_right = _uniform(in_dim, overparam, fan_in=in_dim), _uniform(overparam, rank, fan_in=overparam)
            self.v_left, self.v_right = _uniform(rank, overparam, fan_in=rank), _uniform(overparam, out_dim, fan_in=overparam)
        else:
            self.u = _uniform(in_dim, rank, fan_in=in_dim)
            self.v = _uniform(rank, out_dim, fan_in=rank)
        self.core = MetaUnit([rank, rank], condition_dim, bias=False)  # S(z): one generated [K, K] layer
        self.bias = _uniform(out_dim, fan_in=in_dim)
        self.act = activation(act) if act else None

    def factors(self) -> tuple[Tensor, Tensor]:
        """(U [N, K], V [K, M]), multiplied out when over-parameterised."""
        if self.overparam:
            return self.u_left @ self.u_right, self.v_left @ self.v_right
        return self.u, self.v

    def generated_core(self, z: Tensor) -> Tensor:
        """S(z) [B, K, K] for each row."""
        w, _ = self.core.generate(z)[0]  # [B, 1, K, K]
        return w[:, 0]

    def dense_weight(self, z: Tensor) -> Tensor:
        """W(z) = U S(z) V [B, N, M] built explicitly (for inspection and tests; forward never builds it)."""
        u, v = self.factors()
        return u @ self.generated_core(z) @ v

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        u, v = self.factors()
        h = self.core((x @ u)[:, None, None, :], z)[:, 0, 0]  # (x U) S(z): [B, K]
        y = h @ v + self.bias  # [B, M]
        return self.act(y) if self.act is not None else y
