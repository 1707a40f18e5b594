"""Shared-Bottom (Caruana, 1997): one shared MLP under one tower per task.

h = MLP_shared(emb(x)) [B, H];  y_t = Tower_t(h) [B].
"""

from __future__ import annotations

from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


@register("shared_bottom")
class SharedBottom(MultiTaskModel):
    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        self.bottom = MLP(self.encoder.out_dim, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout)
        self.towers = nn.ModuleDict(
            {t: MLP(self.bottom.out_dim, cfg.tower_dims, 1, cfg.activation, cfg.dropout) for t in self.task_names}
        )

    def network(self, batch) -> dict[str, Tensor]:
        h = self.bottom(self.encoder(batch))  # [B, H]
        return {t: self.towers[t](h).squeeze(-1) for t in self.task_names}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.bottom.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        return self.bottom.last_linear()
