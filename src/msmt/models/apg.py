"""APG: Adaptive Parameter Generation network (Yan et al., NeurIPS 2022), multi-scenario form.

network:
  x  = emb(features) ⊕ dense                                          [B, D]
  z  = LayerNorm(MLP(S ⊕ C))                                          [B, c]
       S: the row's scenario (its attributes, or its id embedding); C: ``model.apg.condition_features``
  h⁰ = x;  hˡ = act(hˡ⁻¹ · U_l S_l(z) V_l + b_l)  for each size in ``model.hidden_dims``   [B, H]
       (:class:`~msmt.layers.apg.APGLinear`: low-rank U [N, K], V [K, M] shared, S_l(z) [K, K]
       generated per row by M2M's meta-unit generator; over-parameterised with ``overparam``)
  out_t = Tower_t(h)  (``model.tower_dims``)                           {task: [B]}
Every scenario — and, with condition features, every user — gets its own bottom network, at
rank-K cost. The condition network is M2M's scenario knowledge (:class:`ScenarioKnowledge`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.layers.apg import APGLinear
from msmt.layers.scenario_knowledge import ScenarioKnowledge
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register
from msmt.spec.model_params import APGParams


@register("apg")
class APG(MultiTaskModel):
    """Input: a Batch; output: {task: [B]}."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p: APGParams = self.params
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        fields, dense = self.encoder.select(p.condition_features, "model.apg.condition_features")
        self.register_buffer("cond_fields", torch.tensor(fields, dtype=torch.long), persistent=False)
        self.register_buffer("cond_dense", torch.tensor(dense, dtype=torch.long), persistent=False)
        cond_dim = cfg.embedding_dim * len(fields) + len(dense)
        self.condition = ScenarioKnowledge(schema, cfg.embedding_dim, cond_dim, list(p.condition_hidden), p.condition_dim, cfg.activation)
        sizes = [self.encoder.out_dim, *cfg.hidden_dims]
        self.layers = nn.ModuleList(
            APGLinear(a, b, p.condition_dim, p.rank, p.overparam, cfg.activation) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.towers = nn.ModuleDict({t: MLP(sizes[-1], cfg.tower_dims, 1, cfg.activation, cfg.dropout) for t in self.task_names})

    def condition_vector(self, batch, fields: Tensor | None = None) -> Tensor:
        """z [B, c]: what the layers' weights are generated from."""
        fields = self.encoder.embed_fields(batch) if fields is None else fields
        extra = torch.cat([fields.index_select(1, self.cond_fields).flatten(1), batch["dense"].index_select(1, self.cond_dense)], 1)
        return self.condition(batch, extra)

    def network(self, batch) -> dict[str, Tensor]:
        fields = self.encoder.embed_fields(batch)  # [B, F, d]
        h = self.encoder.flatten(batch, fields)  # [B, D]
        z = self.condition_vector(batch, fields)  # [B, c]
        for layer in self.layers:
            h = self.dropout(layer(h, z))  # [B, M] with the row's own W(z)
        return {t: tower(h).squeeze(-1) for t, tower in self.towers.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.condition.parameters(), *self.layers.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        return self.layers[-1] if len(self.layers) else self.encoder
