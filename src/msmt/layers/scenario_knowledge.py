"""Scenario knowledge representation of M2M (Zhang et al., WSDM 2022): S̃ = MLP(S ⊕ A).

S embeds the scenario attributes (``scenario_sparse`` / ``scenario_dense`` batch keys) and A the
advertiser profile. A scenario never seen in training (index 0) still gets a meaningful S̃ from
its attributes: the scenario *id* is not used when attributes exist. Datasets without scenario
attributes fall back to a learned scenario-id embedding as S (unseen scenarios then share the
embedding of index 0, which training never updates beyond its initial value).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers.embedding import FeatureEncoder
from msmt.layers.mlp import MLP
from msmt.spec.fitted import FittedSchema


class ScenarioEmbedding(nn.Module):
    """batch -> S [B, out_dim]: the scenario attributes embedded (``scenario_sparse`` /
    ``scenario_dense``), or a learned scenario-id embedding when the dataset has no attributes.
    PEPNet's domain-side input; the S of :class:`ScenarioKnowledge`.

    ``dropout`` (training only): each row's S is, with this probability, replaced by the S of a
    scenario known by nothing but its data — a learned "unknown scenario" vector with attributes,
    the embedding of index 0 (the unseen scenario) without — so the model also learns to read a
    scenario from its history (the cross-section channel, ``panel.cross_section_keys``) rather
    than only from what it was told about it. At evaluation every row keeps its own S."""

    def __init__(self, schema: FittedSchema, embedding_dim: int, dropout: float = 0.0):
        super().__init__()
        attrs = schema.spec.scenario.attributes
        self.attributes: FeatureEncoder | None = None
        self.scenario_id: nn.Embedding | None = None
        self.dropout = float(dropout)
        if attrs.sparse or attrs.dense:
            self.attributes = FeatureEncoder(schema, embedding_dim, features=attrs, prefix="scenario_")
            self.out_dim = self.attributes.out_dim
            if self.dropout > 0:
                self.unknown = nn.Parameter(torch.zeros(self.out_dim))  # S of a scenario known only by its data
        else:
            self.scenario_id = nn.Embedding(schema.num_scenarios + 1, embedding_dim)
            nn.init.normal_(self.scenario_id.weight, std=0.05)
            self.out_dim = embedding_dim

    def _dropped(self, batch: dict[str, Tensor]) -> Tensor | None:
        """[B] bool: the rows whose S is the unknown scenario's this call (None: none, as at evaluation)."""
        if not (self.training and self.dropout > 0):
            return None
        scenario = batch["scenario"]
        return torch.rand(scenario.shape[0], device=scenario.device) < self.dropout

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        dropped = self._dropped(batch)
        if self.attributes is not None:
            s = self.attributes(batch)  # [B, out_dim]
            return s if dropped is None else torch.where(dropped[:, None], self.unknown.to(s.dtype).expand_as(s), s)
        scenario = batch["scenario"]  # [B]; 0 = unseen
        return self.scenario_id(scenario if dropped is None else scenario.masked_fill(dropped, 0))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.embed(batch)


class ScenarioKnowledge(ScenarioEmbedding):
    """(batch, profile [B, A]) -> S̃ [B, out_dim], layer-normalised per row (unit scale for the generators)."""

    def __init__(
        self, schema: FittedSchema, embedding_dim: int, profile_dim: int, hidden: list[int], out_dim: int, act: str, dropout: float = 0.0,
    ):
        super().__init__(schema, embedding_dim, dropout)
        self.mlp = MLP(self.out_dim + profile_dim, hidden, out_dim, act)
        self.norm = nn.LayerNorm(out_dim)  # per row: no dependence on batch-mates
        self.out_dim = out_dim

    def forward(self, batch: dict[str, Tensor], profile: Tensor) -> Tensor:
        return self.norm(self.mlp(torch.cat([self.embed(batch), profile], dim=1)))
