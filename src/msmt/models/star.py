"""STAR: Star Topology Adaptive Recommender (Sheng et al., CIKM 2021), multi-task heads.

    x = emb(batch)                      [B, D]
    z = PN(x; scenario)                 [B, D]   partitioned normalisation (per-scenario stats)
    h = StarFCN(z; scenario)            [B, H]   star-topology FC layers, W_p = W ⊙ W_p^s
    y_t = Tower_t(h) + Aux(s)_t         [B]      auxiliary network on the scenario indicator
                                                 (and the scenario attributes, if any)

The paper predicts one CTR; here the star FCN is shared by all tasks and each task has a plain
tower, and the auxiliary network emits one additive logit (log-rate, value) per task. Unknown
scenarios (index 0) use the centre of the star (``msmt.layers.star``).
"""

from __future__ import annotations

from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder, activation
from msmt.layers.star import PartitionedNorm, StarLinear
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


@register("star")
class STAR(MultiTaskModel):
    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p = self.params
        num_s = max(schema.num_scenarios, 1)
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        self.norm = PartitionedNorm(num_s, self.encoder.out_dim, momentum=p.norm_momentum)
        sizes = [self.encoder.out_dim, *cfg.hidden_dims]
        self.star = nn.ModuleList(StarLinear(num_s, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = activation(cfg.activation)
        self.dropout = nn.Dropout(cfg.dropout)
        self.towers = nn.ModuleDict({t: MLP(sizes[-1], cfg.tower_dims, 1, cfg.activation, cfg.dropout) for t in self.task_names})
        self.aux_encoder = FeatureEncoder(
            schema, cfg.embedding_dim, features=schema.spec.scenario.attributes, prefix="scenario_", with_scenario=True
        )
        self.aux = MLP(self.aux_encoder.out_dim, p.aux_dims, self.num_tasks, cfg.activation, cfg.dropout)

    def network(self, batch) -> dict[str, Tensor]:
        scen = batch["scenario"]  # [B]
        h = self.norm(self.encoder(batch), scen)  # [B, D]
        for layer in self.star:
            h = self.dropout(self.act(layer(h, scen)))  # [B, H]
        aux = self.aux(self.aux_encoder(batch))  # [B, T]
        return {t: self.towers[t](h).squeeze(-1) + aux[:, i] for i, t in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.norm.parameters(), *self.star.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        """The shared (centre) weights of the last star-topology layer."""
        return self.star[-1].shared if len(self.star) else self.norm
