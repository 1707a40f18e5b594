"""HMoE: scenario gates over shared experts, combined in the label space (Li et al., CIKM 2020,
"Improving Multi-Scenario Learning to Rank in E-commerce by Exploiting Task Relationships in the
Label Space").

network:
  x = emb(features) ⊕ dense                                            [B, D]
  E = experts E_i(x), i = 1..k                                          [B, k, E]
  scenario p's view:  z_p = Σ_i softmax(W_p x)_i E_i                    [P, B, E]
  scenario p's prediction of task t: y_pt = Tower_pt(z_p)               [P, B, T]
  a row of scenario s:  out_t = Σ_p α_sp(x) · ỹ_pt,  α_s = softmax_p(R_s x + r_s)  (over the
      scenarios that have task t), ỹ_pt = y_pt for p = s and stop_grad(y_pt) for p ≠ s:
      the other scenarios' towers inform the row's prediction but are never trained by it.
The combination is over logits / log-rates. A row of a scenario unseen in training (index 0)
has a combination gate of its own (R_0, learned from no row: uniform at first) over towers that
all stay fixed for it. Towers: ``model.tower_dims`` (:class:`ScenarioTowers`, one per scenario
with exactly its tasks); experts: ``model.hidden_dims``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers import FeatureEncoder
from msmt.layers.experts import ExpertBank
from msmt.layers.scenario_towers import ScenarioTowers
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register
from msmt.spec.model_params import HMoEParams


@register("hmoe")
class HMoE(MultiTaskModel):
    """Input: a Batch; output: {task: [B]}."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p: HMoEParams = self.params
        present = schema.scenario_tasks() or [[True] * self.num_tasks]  # [P][T]
        self.num_scenarios = P = len(present)
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        d_in = self.encoder.out_dim
        self.experts = ExpertBank(p.num_experts, d_in, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        self.gates = nn.Linear(d_in, P * p.num_experts, bias=False)  # W_p for every scenario in one matmul
        self.towers = ScenarioTowers(present, self.experts.out_dim, cfg.tower_dims, cfg.activation, cfg.dropout)
        self.relation = nn.Linear(d_in, (P + 1) * P)  # R_s, r_s for s = 0 (unknown), 1..P
        nn.init.zeros_(self.relation.weight)  # start from the plain mean of the scenarios' predictions
        nn.init.zeros_(self.relation.bias)

    def scenario_predictions(self, x: Tensor) -> Tensor:
        """y [P, B, T]: every scenario's towers on every row (before the combination)."""
        experts = self.experts(x)  # [B, k, E]
        gates = self.gates(x).view(x.shape[0], self.num_scenarios, -1).softmax(-1)  # [B, P, k]
        views = torch.bmm(gates, experts)  # [B, P, E]
        return self.towers(views.transpose(0, 1))  # [P, B, T]

    def combination(self, x: Tensor, scenario: Tensor) -> Tensor:
        """α [B, P, T]: the row's own scenario's weights over the scenarios that have each task."""
        B, P = x.shape[0], self.num_scenarios
        logits = self.relation(x).view(B, P + 1, P)[torch.arange(B, device=x.device), scenario]  # [B, P]
        allowed = self.towers.present.unsqueeze(0)  # [1, P, T]
        logits = logits.unsqueeze(-1).masked_fill(~allowed, float("-inf"))
        return logits.softmax(1)

    def network(self, batch) -> dict[str, Tensor]:
        x = self.encoder(batch)  # [B, D]
        y = self.scenario_predictions(x)  # [P, B, T]
        scenario = batch["scenario"]
        own = torch.arange(1, self.num_scenarios + 1, device=x.device)[:, None] == scenario[None, :]  # [P, B]
        y = torch.where(own.unsqueeze(-1), y, y.detach())  # stop-gradient on the other scenarios' towers
        alpha = self.combination(x, scenario)  # [B, P, T]
        out = (alpha * y.transpose(0, 1)).sum(1)  # [B, T]
        return {t: out[:, i] for i, t in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.experts.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        return self.experts.last_layers()
