"""Meta tower of M2M (Zhang et al., WSDM 2022, section 3.3, "Meta Tower Module").

Per task t: h⁰ = R_t;  hˡ = σ(Metaˡ_t(hˡ⁻¹; S̃)) + hˡ⁻¹ for l = 1..L (residual), so each
scenario bends each task's tower its own way while the skip keeps the shared signal.
Each task has its own generated networks; all tasks' networks of one level come from one fused
generator (``MetaUnit(groups=m)``).
"""

from __future__ import annotations

from torch import Tensor, nn

from msmt.layers.meta_unit import MetaUnit
from msmt.layers.mlp import activation


class MetaTower(nn.Module):
    """R [B, m, E], S̃ [B, s] -> [B, m, E].

    Args:
        num_tasks: m.  dim: E.  hidden: inner width of each meta unit.
        meta_layers: depth K of each meta unit.  levels: L residual levels.
        static: "w/o meta tower" ablation — the same residual tower with shared weights.
    """

    def __init__(self, num_tasks: int, dim: int, scenario_dim: int, hidden: int, meta_layers: int, levels: int, act: str, static: bool = False):
        super().__init__()
        dims = [dim] + [hidden] * (meta_layers - 1) + [dim]
        self.units = nn.ModuleList(MetaUnit(dims, scenario_dim, groups=num_tasks, act=act, static=static) for _ in range(levels))
        self.act = activation(act)

    def forward(self, r: Tensor, s: Tensor) -> Tensor:
        h = r.unsqueeze(2)  # [B, m, 1, E]: one vector per (row, task)
        for unit in self.units:
            h = self.act(unit(h, s)) + h
        return h.squeeze(2)
