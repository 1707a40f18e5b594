"""AITM: Adaptive Information Transfer Multi-task framework (Xi et al., KDD 2021, "Modeling the
Sequential Dependence among Audience Multi-step Conversions with Multi-task Learning in Targeted
Display Advertising").

network, for the funnel f_1 → f_2 → … (binary tasks such as click → conversion, each predicted
over all impressions: ``model.aitm.funnel``; by default the dataset's declared funnel, a task's
binary ``product_of`` factors then the task, e.g. click → ctcvr; without a declaration, every
binary task in spec order):
  x    = emb(features) ⊕ dense                                   [B, D]
  q_j  = Tower_j(x)  (``model.hidden_dims``)                     [B, k]
  z_1  = q_1;   z_j = AIT(p_{j−1}, q_j),  p_{j−1} = Transfer_j(z_{j−1})   (j ≥ 2)
  out_j = Head_j(z_j)  (``model.tower_dims`` then one unit): a logit          {f_j: [B]}
Information flows one way, from an earlier step to a later one: f_j's output never reads a
later step. Tasks outside the funnel get a plain tower on x.

Loss: the tasks' BCE (the trainer's) plus the behavioural expectation calibrator
(:meth:`extra_losses`), α · mean_n Σ_{j≥2} max(ŷ_j − ŷ_{j−1}, 0) with ŷ = σ(out): a later step is
never more likely than the one before (P(conversion) ≤ P(click)).

A dataset ``auxiliary`` output that completes a funnel task's ``product_of`` (ctcvr = click × cvr)
is returned as the quotient ŷ_ctcvr / ŷ_click (pCVR over all impressions, capped below 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder, activation
from msmt.layers.ait import AdaptiveInformationTransfer
from msmt.layers.probability import quotient_logit
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register
from msmt.spec.dataset import TaskKind
from msmt.spec.errors import ConfigError
from msmt.spec.model_params import AITMParams


def declared_funnel(spec) -> list[str]:
    """The first task declared ``product_of`` preceded by its factors that are tasks ([] if none)."""
    for t in spec.tasks:
        if t.product_of:
            return [f for f in t.product_of if f in spec.task_names] + [t.name]
    return []


def funnel_of(spec, params: AITMParams) -> list[str]:
    """The funnel's task names, in order: ``model.aitm.funnel``, else the declared funnel, else
    every binary task in spec order."""
    if params.funnel:
        return list(params.funnel)
    return declared_funnel(spec) or [t.name for t in spec.tasks if t.kind == TaskKind.BINARY]


@register("aitm")
class AITM(MultiTaskModel):
    """Input: a Batch; output: {task: [B]}."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        p: AITMParams = self.params
        spec = schema.spec
        self.funnel = funnel_of(spec, p)
        bad = [n for n in self.funnel if n not in spec.task_names or spec.task(n).kind != TaskKind.BINARY]
        if bad or len(set(self.funnel)) != len(self.funnel):
            raise ConfigError(f"model.aitm.funnel: {bad or self.funnel} must name distinct binary tasks ({spec.task_names})")
        self.calibrator_weight = p.calibrator_weight
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        d_in = self.encoder.out_dim
        self.towers = nn.ModuleDict({t: MLP(d_in, cfg.hidden_dims, act=cfg.activation, dropout=cfg.dropout) for t in self.funnel})
        k = self.towers[self.funnel[0]].out_dim if self.funnel else d_in
        self.transfer = nn.ModuleDict({t: nn.Sequential(nn.Linear(k, k), activation(cfg.activation)) for t in self.funnel[1:]})
        self.ait = nn.ModuleDict({t: AdaptiveInformationTransfer(k) for t in self.funnel[1:]})
        self.heads = nn.ModuleDict({t: MLP(k, cfg.tower_dims, 1, cfg.activation, cfg.dropout) for t in self.funnel})
        others = [t for t in self.task_names if t not in self.funnel]
        self.plain = nn.ModuleDict({t: MLP(d_in, [*cfg.hidden_dims, *cfg.tower_dims], 1, cfg.activation, cfg.dropout) for t in others})
        self.quotients = {  # auxiliary output -> (product task, its factors that are funnel tasks)
            a.name: (t.name, [f for f in t.product_of if f != a.name])
            for a in spec.auxiliary for t in spec.tasks
            if a.name in t.product_of and t.name in self.funnel and all(f in self.funnel for f in t.product_of if f != a.name)
        }

    @classmethod
    def not_applicable(cls, spec) -> str | None:
        if len(declared_funnel(spec)) >= 2:
            return None
        return ("no funnel is declared (a task `product_of` a binary task, e.g. ctcvr = click × cvr; AITM's calibrator "
                "would otherwise force an order P(task₂) ≤ P(task₁) the data may not have)")

    def network(self, batch) -> dict[str, Tensor]:
        x = self.encoder(batch)  # [B, D]
        out, z = {}, None
        for j, t in enumerate(self.funnel):
            q = self.towers[t](x)  # [B, k]
            z = q if j == 0 else self.ait[t](self.transfer[t](z), q)  # the previous step's z only: forward along the funnel
            out[t] = self.heads[t](z).squeeze(-1)
        for t, tower in self.plain.items():
            out[t] = tower(x).squeeze(-1)
        return {t: out[t] for t in self.task_names}

    def calibrator(self, outputs: dict[str, Tensor], mask: Tensor | None = None) -> Tensor:
        """α · mean_n Σ_{j≥2} max(ŷ_j − ŷ_{j−1}, 0) over the rows where both steps exist."""
        first = next(iter(outputs.values()))
        total = first.new_zeros(())
        for j in range(1, len(self.funnel)):
            prev, cur = self.funnel[j - 1], self.funnel[j]
            excess = F.relu(torch.sigmoid(outputs[cur]) - torch.sigmoid(outputs[prev]))  # [B]
            if mask is not None:
                both = mask[:, self.task_names.index(prev)] & mask[:, self.task_names.index(cur)]
                excess = torch.where(both, excess, torch.zeros_like(excess))
            total = total + excess.mean()
        return self.calibrator_weight * total

    def extra_losses(self, batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if len(self.funnel) < 2 or self.calibrator_weight == 0:
            return {}
        return {"calibrator": self.calibrator(outputs, batch.get("task_mask"))}

    def auxiliary_outputs(self, batch) -> dict[str, Tensor]:
        if not self.quotients:
            return {}
        out = self.network(batch)
        return {a: quotient_logit(out[t], torch.stack([out[f] for f in rest], -1)) for a, (t, rest) in self.quotients.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def last_shared_layer(self) -> nn.Module | None:
        """The embedding layer: the only part every task shares."""
        return self.encoder
