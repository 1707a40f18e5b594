"""PLE: Progressive Layered Extraction (Tang et al., RecSys 2020).

x = emb(batch) [B, D] is the input of every task and of the shared branch at level 1; level l
reads level l-1's task outputs z_t and shared output z_s (``msmt.layers.cgc``). Towers read the
last level's task outputs: y_t = Tower_t(z_t^L) [B]. ``num_levels: 1`` is CGC alone; one task
is allowed (its own experts plus the shared ones).
"""

from __future__ import annotations

from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.layers.cgc import ExtractionLevel
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


@register("ple")
class PLE(MultiTaskModel):
    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p = self.params
        dims = list(p.expert_dims or cfg.hidden_dims)
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        self.levels = nn.ModuleList()
        in_dim = self.encoder.out_dim
        for level in range(p.num_levels):
            last = level == p.num_levels - 1
            block = ExtractionLevel(
                self.num_tasks, in_dim, dims, p.task_experts, p.shared_experts, cfg.activation, cfg.dropout, not last
            )
            self.levels.append(block)
            in_dim = block.out_dim
        self.towers = nn.ModuleDict({t: MLP(in_dim, cfg.tower_dims, 1, cfg.activation, cfg.dropout) for t in self.task_names})

    def network(self, batch) -> dict[str, Tensor]:
        x = self.encoder(batch)  # [B, D]
        task_in, shared_in = [x] * self.num_tasks, x
        for level in self.levels:
            task_in, shared_in = level(task_in, shared_in)  # T x [B, E], [B, E] | None
        return {t: self.towers[t](task_in[i]).squeeze(-1) for i, t in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        mods = [self.encoder, *(m for level in self.levels for m in level.shared_modules())]
        return [p for m in mods for p in m.parameters()]

    def last_shared_layer(self) -> nn.Module | None:
        """The last linear layer of every shared expert of the last level (all tasks read them)."""
        return nn.ModuleList(e.last_linear() for e in self.levels[-1].shared_experts)
