"""Shared-Bottom with one tower per *scenario* ("SBMM"), each tower emitting every task.

h = MLP_shared(emb(x)) [B, H]; scenario p's tower maps h to [B, T] (one unit per task) and a
row is scored by its own scenario's tower only. All towers are evaluated as one batched matmul
([P, B, H] x [P, H, T]) and each row gathers its scenario's slice, so there is no loop over
scenarios and no row depends on another. A row of a scenario unseen in training (index 0) gets
the mean of all towers' outputs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder, activation
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


class ScenarioTowers(nn.Module):
    """P parallel MLP towers [H -> tower_dims -> T], stored as stacked weights."""

    def __init__(self, num_scenarios: int, in_dim: int, dims: list[int], out_dim: int, act: str, dropout: float):
        super().__init__()
        sizes = [in_dim, *dims, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = torch.empty(num_scenarios, a, b)
            for p in range(num_scenarios):
                nn.init.kaiming_uniform_(w[p].T, a=math.sqrt(5))  # same init as nn.Linear
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(num_scenarios, 1, b).uniform_(-1 / math.sqrt(a), 1 / math.sqrt(a))))
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        """[B, H] -> [P, B, T]: every tower applied to every row."""
        x = h.unsqueeze(0).expand(self.weights[0].shape[0], -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = self.dropout(self.act(x))
        return x


@register("sbmm")
class SharedBottomScenarioTowers(MultiTaskModel):
    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        self.bottom = MLP(self.encoder.out_dim, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        self.towers = ScenarioTowers(
            max(schema.num_scenarios, 1), self.bottom.out_dim, cfg.tower_dims, self.num_tasks, cfg.activation, cfg.dropout
        )

    def network(self, batch) -> dict[str, Tensor]:
        h = self.bottom(self.encoder(batch))  # [B, H]
        per_tower = self.towers(h)  # [P, B, T]
        scen = batch["scenario"]  # [B], 0 = unknown
        own = (scen - 1).clamp_min(0)
        picked = per_tower.permute(1, 0, 2)[torch.arange(h.shape[0], device=h.device), own]  # [B, T]
        unknown = (scen == 0).unsqueeze(-1)
        out = torch.where(unknown, per_tower.mean(0), picked)
        return {t: out[:, i] for i, t in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.bottom.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        return self.bottom.last_linear()
