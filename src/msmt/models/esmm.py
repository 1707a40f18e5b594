"""ESMM: Entire Space Multi-task Model (Ma et al., SIGIR 2018).

Shared embeddings feed one MLP tower per *plain* output (a task without ``product_of``, or an
auxiliary output such as CVR). A task declared ``product_of: [click, cvr]`` is not a tower: its
probability is the product of its factors' probabilities,

    pCTCVR = pCTR * pCVR,   log pCTCVR = log sigma(a_ctr) + log sigma(a_cvr),

returned as a logit (``msmt.layers.probability``) so the trainer's BCE-with-logits over *all*
impressions is exactly the ESMM loss  sum_n BCE(click_n, pCTR_n) + BCE(click_n conv_n, pCTCVR_n).
CVR therefore gets gradients only through pCTCVR over the entire impression space; it is never
fitted on clicked rows alone, and the trainer needs no ESMM branch.

Shapes: batch -> ``forward``: {task: [B] logit (or log-rate/value for non-binary tasks)};
``auxiliary_outputs``: {aux: [B] logit}.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers import MLP, FeatureEncoder
from msmt.layers.probability import product_logit
from msmt.models.base import MultiTaskModel
from msmt.models.registry import register


@register("esmm")
class ESMM(MultiTaskModel):
    """Towers use ``model.hidden_dims + model.tower_dims`` over the shared embedding layer."""

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        spec = schema.spec
        self.products = {t.name: list(t.product_of) for t in spec.tasks if t.product_of}
        self.aux_names = [a.name for a in spec.auxiliary]
        self.tower_names = [t.name for t in spec.tasks if not t.product_of] + self.aux_names
        self.encoder = FeatureEncoder.for_model(schema, cfg)
        dims = [*cfg.hidden_dims, *cfg.tower_dims]
        self.towers = nn.ModuleDict(
            {n: MLP(self.encoder.out_dim, dims, 1, cfg.activation, cfg.dropout) for n in self.tower_names}
        )

    @classmethod
    def not_applicable(cls, spec) -> str | None:
        if any(t.product_of for t in spec.tasks):
            return None
        return ("no task is declared `product_of` (ESMM needs a funnel such as ctcvr = click × cvr; "
                "without one it is only one tower per task over shared embeddings)")

    def _all_outputs(self, batch) -> dict[str, Tensor]:
        emb = self.encoder(batch)  # [B, D], shared by every tower
        plain = {n: tower(emb).squeeze(-1) for n, tower in self.towers.items()}  # {name: [B]}
        for name, parts in self.products.items():
            plain[name] = product_logit(torch.stack([plain[p] for p in parts], dim=-1))  # [B, K] -> [B]
        return plain

    def network(self, batch) -> dict[str, Tensor]:
        out = self._all_outputs(batch)
        return {t: out[t] for t in self.task_names}

    def auxiliary_outputs(self, batch) -> dict[str, Tensor]:
        out = self._all_outputs(batch)
        return {a: out[a] for a in self.aux_names}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def last_shared_layer(self) -> nn.Module | None:
        """The embedding layer: the only part every tower shares."""
        return self.encoder
