"""MMoE: Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

Experts f_i(x), i = 1..k, each [B, E]; per task a gate g_t(x) = softmax(W_t x) in R^k;
z_t = sum_i g_t(x)_i f_i(x); y_t = Tower_t(z_t). The experts are one :class:`ExpertBank` (their
first layers in one GEMM).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.layers.experts import ExpertBank
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


@register("mmoe")
class MMoE(MultiTaskModel):
    """Experts use ``model.hidden_dims``; towers use ``model.tower_dims``."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        k = self.params.num_experts
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        d_in = self.encoder.out_dim
        self.experts = ExpertBank(k, d_in, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        self.gates = nn.Linear(d_in, k * self.num_tasks, bias=False)  # W_t for all tasks in one matmul
        d_exp = self.experts.out_dim
        self.towers = nn.ModuleDict({t: MLP(d_exp, cfg.tower_dims, 1, cfg.activation, cfg.dropout) for t in self.task_names})

    def network(self, batch) -> dict[str, Tensor]:
        x = self.encoder(batch)  # [B, D]
        experts = self.experts(x)  # [B, k, E]
        gates = self.gates(x).view(x.shape[0], self.num_tasks, -1).softmax(-1)  # [B, T, k]
        mixed = torch.bmm(gates, experts).unbind(1)  # T x [B, E]
        return {t: self.towers[t](z).squeeze(-1) for t, z in zip(self.task_names, mixed)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.experts.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        """The last linear layer of every expert: all tasks' gates read every expert."""
        return self.experts.last_layers()
