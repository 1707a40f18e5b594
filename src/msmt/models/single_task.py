"""Single-task baseline: one independent network (embeddings + MLP + output) per task."""

from __future__ import annotations

from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


@register("single_task")
class SingleTask(MultiTaskModel):
    """T separate models in one module; nothing is shared, so nothing transfers between tasks.

    Batch -> {task: [B]}. Each task has its own embedding table, ``hidden_dims`` MLP and
    ``tower_dims`` head.
    """

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.encoders = nn.ModuleDict()
        self.nets = nn.ModuleDict()
        for name in self.task_names:
            enc = FeatureEncoder.for_model(schema, cfg)
            self.encoders[name] = enc
            self.nets[name] = MLP(enc.out_dim, [*cfg.hidden_dims, *cfg.tower_dims], 1, cfg.activation, cfg.dropout)

    def personal_parameters(self) -> list[str]:
        """The last (output) layer of every task's network."""
        last = {t: [n for n, m in net.net.named_children() if isinstance(m, nn.Linear)][-1] for t, net in self.nets.items()}
        return [f"nets.{t}.net.{i}.{w}" for t, i in last.items() for w in ("weight", "bias")]

    def network(self, batch) -> dict[str, Tensor]:
        return {t: self.nets[t](self.encoders[t](batch)).squeeze(-1) for t in self.task_names}
