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

    def forward(self, experts: Tensor, tasks: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        B, k, E = experts.shape
        m = tasks.shape[0]
        params = self.meta.generate(s)
        w1, b1 = params[0]  # first layer on [E_j ; T_t] = E_j·W1[:E] + T_t·W1[E:] (no pair tensor built)
        if w1.dim() == 3:  # static ablation: shared weights
            w1, b1 = w1.expand(B, -1, -1, -1), b1.expand(B, -1, -1)
        w1, b1 = w1[:, 0], b1[:, 0]  # [B, E+Dt, H1], [B, H1]
        from_experts = torch.bmm(experts, w1[:, :E])  # [B, k, H1]
        from_tasks = torch.matmul(tasks, w1[:, E:])  # [B, m, H1]
        pre = from_tasks.unsqueeze(2) + from_experts.unsqueeze(1) + b1.view(B, 1, 1, -1)  # [B, m, k, H1]
        last = len(self.meta.shapes) == 1
        h = self.meta.act(pre) if (not last or self.meta.final_act) else pre
        h = self.meta.apply(h.view(B, 1, m * k, -1), params, first=1)  # [B, 1, m*k, H]
        scores = (h @ self.v).view(B, m, k)
        alpha = scores.softmax(dim=-1)  # over experts
        return torch.bmm(alpha, experts), alpha
