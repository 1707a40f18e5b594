"""Shared-Bottom with one tower per *scenario* ("SBMM"), each tower emitting its scenario's tasks.

The seed's layout (MODELS.md): h = MLP_shared(emb(x)) [B, H]; scenario p owns a tower whose output
layer has one unit per task that exists in p (``tasks.<name>.scenarios``; every task by default),
e.g. a first-level page with stay, dwell time and click, a second-level page with play time and
like. A row is scored by its own scenario's tower only. All towers run as batched matmuls
(:class:`~msmt.layers.scenario_towers.ScenarioTowers`, [P, B, H] x [P, H, h]) and each row
gathers its scenario's slice, so there is no loop over scenarios and no row depends on another.
A row whose scenario lacks a task (it has no loss or metric there) or is unseen in training
(index 0) gets the mean of the towers that have the task. Per-task sample weights are the
dataset's ``tasks.<name>.weight_column`` (the loss, not the model, reads them).

Shapes: batch -> {task: [B] logit / log-rate / value}.
"""

from __future__ import annotations

from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.layers.scenario_towers import ScenarioTowers
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


@register("sbmm")
class SharedBottomScenarioTowers(MultiTaskModel):
    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        self.bottom = MLP(self.encoder.out_dim, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        present = schema.scenario_tasks() or [[True] * self.num_tasks]  # [P][T]
        self.towers = ScenarioTowers(present, self.bottom.out_dim, cfg.tower_dims, cfg.activation, cfg.dropout)

    def network(self, batch) -> dict[str, Tensor]:
        h = self.bottom(self.encoder(batch))  # [B, H]
        out = self.towers.pick(self.towers(h), batch["scenario"])  # [P, B, T] -> [B, T]
        return {t: out[:, i] for i, t in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.bottom.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        return self.bottom.last_linear()
