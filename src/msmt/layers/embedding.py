"""Input encoding: every categorical feature through one fused embedding table.

All sparse and multi-valued features share one ``nn.Embedding`` with per-feature offsets, so a
batch needs one lookup instead of one per feature (fewer kernel launches on CPU). Each feature
keeps its own rows: indices never collide across features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers.history import HistorySummary
from msmt.spec.batch import Batch
from msmt.spec.dataset import FeatureSet
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import OOV, FittedSchema


class IdGenerator(nn.Module):
    """Meta-Embedding's generator (Pan et al., SIGIR 2019, "Warm Up Cold-start Advertisements"):
    [B, a] attribute embeddings (and dense values) of an ID's row -> [B, dim] the embedding of an
    ID never seen in training. A small MLP whose output starts near zero (the scale of a trained
    embedding row is learnt in the warm-up)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.Tanh(), nn.Linear(dim, dim))
        nn.init.normal_(self.net[-1].weight, std=0.01)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FeatureEncoder(nn.Module):
    """Embeds a feature set and concatenates it with its dense values.

    Input: a :data:`~msmt.data.tensorize.Batch`. Output: [B, out_dim] where
    ``out_dim = dim * (S + M [+ 1 for the scenario]) + D``.

    Args:
        schema: fitted encoders (vocabulary sizes).
        dim: embedding size.
        features: which feature set (the dataset's features, or the scenario attributes).
        prefix: batch-key prefix: ``""`` for features, ``"scenario_"`` for scenario attributes.
        with_scenario: also embed the scenario index as one more categorical feature.
        history: append a summary of the row's panel history (:class:`HistorySummary`).
        oov_init: ``"mean"``: each categorical feature's out-of-vocabulary row starts as the mean
            of its seen rows (:meth:`set_oov_to_mean`), so a value unseen in training is embedded
            like the average seen value; ``"random"``: drawn like every row. Either way, the
            feature's ID ``dropout`` is what trains that row afterwards.
    """

    def __init__(
        self,
        schema: FittedSchema,
        dim: int,
        features: FeatureSet | None = None,
        prefix: str = "",
        with_scenario: bool = False,
        history: bool = False,
        history_live: bool = False,
        id_warmup: dict[str, list[str]] | None = None,
        oov_init: str = "random",
    ):
        super().__init__()
        features = features if features is not None else schema.spec.features
        self.prefix = prefix
        self.with_scenario = with_scenario
        self.multi_names = [f.name for f in features.multi_sparse]
        sizes = schema.vocab_sizes(features.sparse) + schema.vocab_sizes(features.multi_sparse)
        if with_scenario:
            sizes.append(schema.num_scenarios + 1)
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.categorical_sizes = sizes[: len(sizes) - int(with_scenario)]  # vocabulary sizes of the sparse + multi-valued features
        self.num_sparse = len(features.sparse)
        rates = [f.dropout for f in features.sparse]  # ID dropout per sparse feature (None: none)
        self.register_buffer("dropout_rates", torch.tensor(rates, dtype=torch.float32) if any(rates) else None, persistent=False)
        self.num_dense = len(features.dense)
        self.dim = dim
        self.table = nn.Embedding(max(sum(sizes), 1), dim)
        nn.init.normal_(self.table.weight, std=0.05)
        n_embedded = self.num_sparse + len(self.multi_names) + int(with_scenario)
        self.history = HistorySummary(schema, live=history_live) if history else None
        self.out_dim = dim * n_embedded + self.num_dense + (self.history.out_dim if history else 0)
        self.generators = nn.ModuleDict()  # Meta-Embedding: ID feature -> its generator
        self.generated: dict[str, tuple[int, list[int], list[int]]] = {}  # name -> (field, attribute fields, dense columns)
        sparse_names = [f.name for f in features.sparse]
        dense_names = [f.name for f in features.dense]
        for name, attributes in (id_warmup or {}).items():
            if name not in sparse_names:
                raise ConfigError(f"model.id_warmup: '{name}' is not a sparse feature (sparse: {sparse_names})")
            unknown = sorted(set(attributes) - set(sparse_names) - set(dense_names) - {name})
            if unknown or not attributes or name in attributes:
                raise ConfigError(f"model.id_warmup.{name}: attributes must be other sparse or dense features, got {list(attributes)}")
            fields = [sparse_names.index(a) for a in attributes if a in sparse_names]
            cols = [dense_names.index(a) for a in attributes if a in dense_names]
            self.generated[name] = (sparse_names.index(name), fields, cols)
            self.generators[name] = IdGenerator(dim * len(fields) + len(cols), dim)
        self.field_names = [f.name for f in features.sparse] + self.multi_names + (["<scenario id>"] if with_scenario else [])
        self.dense_names = [f.name for f in features.dense]
        if oov_init not in ("random", "mean"):
            raise ConfigError(f"model.oov_init: '{oov_init}' (expected 'random' or 'mean')")
        if oov_init == "mean":
            self.set_oov_to_mean()

    @torch.no_grad()
    def set_oov_to_mean(self) -> None:
        """Set each sparse and multi-valued feature's OOV row to the (unweighted) mean of its seen
        rows 2..V-1: the cold-start prior's starting point (a feature with no seen value keeps its row)."""
        for start, size in zip(self.offsets.tolist(), self.categorical_sizes):
            if size > OOV + 1:
                self.table.weight[start + OOV] = self.table.weight[start + OOV + 1 : start + size].mean(0)

    def select(self, names: list[str] | tuple[str, ...], key: str) -> tuple[list[int], list[int]]:
        """(field indices, dense indices) of the features ``names`` (a model's prior/profile
        features); an unknown name is a ``ConfigError`` naming the config ``key``."""
        unknown = sorted(set(names) - set(self.field_names) - set(self.dense_names))
        if unknown:
            raise ConfigError(f"{key}: unknown feature(s) {unknown} (features: {self.field_names + self.dense_names})")
        return [i for i, n in enumerate(self.field_names) if n in names], [i for i, n in enumerate(self.dense_names) if n in names]

    @classmethod
    def for_model(cls, schema: FittedSchema, cfg) -> FeatureEncoder:
        """The input encoder of the shared ``model.*`` keys (scenario embedding, history summary,
        ID warm-up generators, the OOV rows' start)."""
        return cls(schema, cfg.embedding_dim, with_scenario=cfg.use_scenario_feature, history=cfg.history_summary,
                   history_live=getattr(cfg, "history_live", False), id_warmup=getattr(cfg, "id_warmup", None), oov_init=getattr(cfg, "oov_init", "random"))

    def generate_ids(self, single: Tensor, sparse: Tensor, batch: Batch) -> Tensor:
        """[B, S(+1), dim] single-field embeddings with each warmed-up ID field's OOV rows replaced
        by the embedding generated from the row's attributes (``batch["warm.<name>"]`` [B, dim],
        when given, replaces the generated one: the warm-up's adapted embedding)."""
        for name, (field, fields, cols) in self.generated.items():
            oov = (sparse[:, field] == OOV).unsqueeze(-1)  # [B, 1]
            override = batch.get(f"warm.{name}")
            if override is None:
                attrs = [single[:, fields].flatten(1)] if fields else []
                if cols:
                    attrs.append(batch[f"{self.prefix}dense"][:, cols])
                override = self.generators[name](torch.cat(attrs, dim=1) if len(attrs) > 1 else attrs[0])  # [B, dim]
            column = torch.where(oov, override.to(single.dtype), single[:, field])
            single = torch.cat([single[:, :field], column.unsqueeze(1), single[:, field + 1 :]], dim=1)
        return single

    def embed_fields(self, batch: Batch) -> Tensor:
        """[B, F, dim]: one embedding per categorical field (multi-valued ones mean-pooled).

        Field order: sparse features, multi-valued features, then the scenario id. The sparse
        features and the scenario id are looked up together (one gather, one table gradient).
        """
        S = self.num_sparse
        ids = []
        if S:
            sparse = batch[f"{self.prefix}sparse"]
            if self.training and self.dropout_rates is not None:  # ID dropout: value -> OOV
                dropped = torch.rand(sparse.shape, device=sparse.device) < self.dropout_rates
                sparse = torch.where(dropped & (sparse > 0), torch.full_like(sparse, OOV), sparse)
            ids.append(sparse + self.offsets[:S])
        if self.with_scenario:
            ids.append((batch["scenario"] + self.offsets[-1]).unsqueeze(1))
        single = self.table(ids[0] if len(ids) == 1 else torch.cat(ids, dim=1)) if ids else None  # [B, S (+1), dim]
        if self.generated:
            single = self.generate_ids(single, sparse, batch)
        if not self.multi_names:
            if single is None:
                dense = batch[f"{self.prefix}dense"]
                return dense.new_zeros(dense.shape[0], 0, self.dim)
            return single
        parts = [single[:, :S]] if S else []
        for j, name in enumerate(self.multi_names):
            ids_j = batch[f"multi.{name}"]  # [B, L], 0 = padding
            mask = (ids_j > 0).unsqueeze(-1).to(self.table.weight.dtype)
            emb = self.table(ids_j + self.offsets[S + j]) * mask
            parts.append((emb.sum(1) / mask.sum(1).clamp_min(1.0)).unsqueeze(1))
        if self.with_scenario:
            parts.append(single[:, S:])
        return torch.cat(parts, dim=1)

    def forward(self, batch: Batch) -> Tensor:
        return self.flatten(batch, self.embed_fields(batch))

    def flatten(self, batch: Batch, fields: Tensor) -> Tensor:
        """[B, out_dim] from the fields of :meth:`embed_fields` (for a model that also reads the fields)."""
        flat = fields.flatten(1)
        if self.num_dense:
            flat = torch.cat([flat, batch[f"{self.prefix}dense"]], dim=1)
        if self.history is not None:
            flat = torch.cat([flat, self.history(batch)], dim=1)
        return flat
