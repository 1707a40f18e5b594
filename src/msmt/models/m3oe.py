"""M3oE: multi-domain multi-task mixture of experts (Zhang et al., SIGIR 2024, "M3oE: Multi-Domain
Multi-Task Mixture-of Experts Recommendation Framework").

network, for a row of scenario s and each task t:
  x  = emb(features) ⊕ dense                                                 [B, D]
  three expert groups on x (``model.hidden_dims`` each):
      shared S_i (i = 1..k), scenario-aspect D_p (one per scenario), task-aspect T_j (one per task)
  level 1 (aspect balance, learned scalars β_d = σ(b_d), β_t = σ(b_t)):
      D̃_s = β_d D_s + (1 − β_d) mean_{p≠s} D_p,    T̃_t = β_t T_t + (1 − β_t) mean_{j≠t} T_j
  level 2 (fusion, learned scalars a_d, a_t, the paper's AutoML weights):
      h_st = Σ_i softmax(G_st x)_i S_i + σ(a_d) D̃_s + σ(a_t) T̃_t                [B, T, E]
  out_t = Tower_st(h_st)  (``model.tower_dims``, one tower per scenario and task)   {task: [B]}
Only the row's own (s, t) gate and fused vector are formed; the towers run stacked and each row
takes its own scenario's. A row of a scenario unseen in training (index 0) uses the mean of the
scenarios' gates, the mean of the scenario experts, and the mean of the scenarios' towers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers import FeatureEncoder
from msmt.layers.experts import ExpertBank
from msmt.layers.scenario_towers import ScenarioTowers
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register
from msmt.spec.model_params import M3oEParams


def balance(groups: Tensor, own: Tensor, beta: Tensor) -> Tensor:
    """Level 1: β · g_own + (1 − β) · mean of the other groups. groups [B, G, E], own [B, n] group
    indices -> [B, n, E]; with one group, the group itself."""
    G = groups.shape[1]
    mine = groups.gather(1, own.unsqueeze(-1).expand(-1, -1, groups.shape[2]))  # [B, n, E]
    if G == 1:
        return mine
    others = (groups.sum(1, keepdim=True) - mine) / (G - 1)
    return beta * mine + (1 - beta) * others


@register("m3oe")
class M3oE(MultiTaskModel):
    """Input: a Batch; output: {task: [B]}."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p: M3oEParams = self.params
        self.num_scenarios = P = max(schema.num_scenarios, 1)
        T, k = self.num_tasks, p.num_experts
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        d_in = self.encoder.out_dim
        self.shared = ExpertBank(k, d_in, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        self.scenario_experts = ExpertBank(P, d_in, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        self.task_experts = ExpertBank(T, d_in, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        self.gates = nn.Linear(d_in, P * T * k, bias=False)  # G_st for every (scenario, task)
        self.balance_logits = nn.Parameter(torch.zeros(2))  # b_d, b_t (level 1)
        self.fusion_logits = nn.Parameter(torch.zeros(2))  # a_d, a_t (level 2)
        # tower (s, t) is ScenarioTowers' group s·T + t with a single output unit
        self.towers = ScenarioTowers([[True]] * (P * T), self.shared.out_dim, cfg.tower_dims, cfg.activation, cfg.dropout)

    def fused(self, x: Tensor, scenario: Tensor) -> Tensor:
        """h [B, T, E]: each row's fused representation for each task, in its own scenario."""
        B, P, T = x.shape[0], self.num_scenarios, self.num_tasks
        known = (scenario > 0).view(B, 1, 1)
        s = (scenario - 1).clamp_min(0)  # [B]
        gates = self.gates(x).view(B, P, T, -1).softmax(-1)  # [B, P, T, k]
        own_gate = gates[torch.arange(B, device=x.device), s]  # [B, T, k]
        gate = torch.where(known, own_gate, gates.mean(1))
        shared = torch.bmm(gate, self.shared(x))  # [B, T, E]
        beta_d, beta_t = torch.sigmoid(self.balance_logits).unbind()
        per_scenario = self.scenario_experts(x)  # [B, P, E]
        d = torch.where(known, balance(per_scenario, s[:, None], beta_d), per_scenario.mean(1, keepdim=True))  # [B, 1, E]
        own_task = torch.arange(T, device=x.device).expand(B, T)
        t = balance(self.task_experts(x), own_task, beta_t)  # [B, T, E]
        a_d, a_t = torch.sigmoid(self.fusion_logits).unbind()
        return shared + a_d * d + a_t * t

    def network(self, batch) -> dict[str, Tensor]:
        x = self.encoder(batch)  # [B, D]
        h = self.fused(x, batch["scenario"])  # [B, T, E]
        B, P, T = h.shape[0], self.num_scenarios, self.num_tasks
        inputs = h.transpose(0, 1).unsqueeze(0).expand(P, -1, -1, -1).reshape(P * T, B, -1)  # tower (s, t) reads h[:, t]
        per_tower = self.towers(inputs).view(P, T, B)  # [P, T, B]
        scenario = batch["scenario"]
        own = per_tower.permute(2, 0, 1)[torch.arange(B, device=h.device), (scenario - 1).clamp_min(0)]  # [B, T]
        out = torch.where((scenario > 0).unsqueeze(1), own, per_tower.mean(0).t())
        return {t: out[:, i] for i, t in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Inputs, the three expert groups and the fusion weights: every task reads all of them."""
        mods = [self.encoder, self.shared, self.scenario_experts, self.task_experts]
        return [*(q for m in mods for q in m.parameters()), self.balance_logits, self.fusion_logits]

    def last_shared_layer(self) -> nn.Module | None:
        return self.shared.last_layers()
