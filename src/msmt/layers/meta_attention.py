"""Meta attention of M2M (Zhang et al., WSDM 2022, section 3.3, "Meta Attention Module").

For task t and expert j:  a_tj = vᵀ Meta([E_j ⊕ T_t]; S̃);  α_tj = softmax_j(a_tj);
R_t = Σ_j α_tj E_j. The scenario decides how each task mixes the expert views.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers.meta_unit import MetaUnit


class MetaAttention(nn.Module):
    """experts [B, k, E], task views [m, Dt], S̃ [B, s] -> (R [B, m, E], α [B, m, k]).

    Args:
        expert_dim / task_dim: E and Dt.
        hidden: width of the meta unit's layers (its output, scored by v).
        layers: depth K of the meta unit.
        static: "w/o meta attention" ablation — the same attention with shared weights.
    """

    def __init__(self, expert_dim: int, task_dim: int, scenario_dim: int, hidden: int, layers: int, act: str, static: bool = False):
        super().__init__()
        dims = [expert_dim + task_dim] + [hidden] * layers
        self.meta = MetaUnit(dims, scenario_dim, groups=1, act=act, final_act=True, static=static)
        self.v = nn.Parameter(torch.randn(hidden) / hidden**0.5)

    def first_layer(self, experts: Tensor, tasks: Tensor, s: Tensor) -> Tensor:
        """Pre-activation of the meta unit's first layer on every pair [E_j ; T_t]: [B, m, k, H1].

        [E_j ; T_t]·W₁(S̃) = E_j·W₁ᴱ(S̃) + T_t·W₁ᵀ(S̃), so the pair tensor is never built. Only the
        expert block W₁ᴱ is generated per row; the task views are shared by all rows, so
        T_t·W₁ᵀ(S̃) = Σ_c [S̃; 1]_c (T_t·G_c) is one small [m, s+1, H1] product per batch and one
        [B, s+1] x [s+1, m·H1] GEMM (no per-row task block).
        """
        B, k, E = experts.shape
        m = tasks.shape[0]
        w, b = self.meta.weights[0], self.meta.biases[0]
        if self.meta.static:  # shared weights [1, E+Dt, H1]
            return (tasks @ w[0, E:]).unsqueeze(1) + (experts @ w[0, :E]).unsqueeze(1) + b[0]
        s1 = self.meta._with_one(s)  # [B, s+1]
        c, h1 = w.shape[0], w.shape[-1]
        w_e = (s1 @ w[:, 0, :E].reshape(c, E * h1)).view(B, E, h1)  # per-row expert block
        from_experts = torch.bmm(experts, w_e).unsqueeze(1)  # [B, 1, k, H1]
        per_c = torch.einsum("td,cdh->cth", tasks, w[:, 0, E:])  # T_t·G_c, [s+1, m, H1]
        from_tasks = (s1 @ per_c.reshape(c, m * h1)).view(B, m, 1, h1)
        return from_tasks + from_experts + (s1 @ b[:, 0]).view(B, 1, 1, h1)

    def forward(self, experts: Tensor, tasks: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        B, k, E = experts.shape
        m = tasks.shape[0]
        pre = self.first_layer(experts, tasks, s)  # [B, m, k, H1]
        last = len(self.meta.shapes) == 1
        h = self.meta.act(pre) if (not last or self.meta.final_act) else pre
        h = self.meta.apply(h.view(B, 1, m * k, -1), self.meta.generate(s, first=1), first=1)  # [B, 1, m*k, H]
        scores = (h @ self.v).view(B, m, k)
        alpha = scores.softmax(dim=-1)  # over experts
        return torch.bmm(alpha, experts), alpha
