"""Smoothed popularity: the per-item rate a practitioner tries first, per scenario.

For each task t, scenario s and value i of one declared ID column (``model.popularity.column``),
over the training rows where the task exists (``task_mask``; unweighted):

    r_{s,t}   = Σ_{rows in s} y / n_s                     the scenario's rate
    p_{s,i,t} = (Σ_{rows in s with i} y + m · r_{s,t}) / (n_{s,i} + m)

m = ``model.popularity.prior_strength`` (pseudo-rows of the scenario's rate: an ID seen once
barely moves from its scenario). An ID never seen (the out-of-vocabulary index, rare values under
``min_count`` included, and padding) gets r_{s,t}. A scenario unseen in training (index 0) reads
the statistics pooled over every scenario (the overall rate). The output is p through the task
kind's inverse link (logit / log-rate / value), so every command scores it like any model.

Closed form: the counts are buffers filled by :meth:`fit_statistics` in one pass over the
training split before training (:func:`msmt.training.loop.fit`); the model has no parameters, so
no gradient step runs. Before that pass every ID scores its scenario's rate (the schema's
training-label means).

Column by default: the one sparse feature whose name ends with ``item_id``, ``movie_id`` or
``ad_id``, else the dataset's ``group`` when it is a sparse feature; more than one such feature is
an error naming ``model.popularity.column``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from msmt.models.base import NETWORK_OPTIONS, MultiTaskModel
from msmt.models.registry import register
from msmt.spec.batch import Batch
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import OOV
from msmt.spec.task_kinds import rules

ID_SUFFIXES = ("item_id", "movie_id", "ad_id")


def default_column(spec) -> str | None:
    """The ID column popularity counts by default (None: none); raises when ambiguous."""
    sparse = [f.name for f in spec.features.sparse]
    named = [n for n in sparse if n.endswith(ID_SUFFIXES)]
    if len(named) > 1:
        raise ConfigError(f"model.popularity.column: more than one ID feature {named}; set one")
    if named:
        return named[0]
    return spec.group if spec.group in sparse else None


@register("popularity")
class Popularity(MultiTaskModel):
    """batch -> {task: [B] smoothed (scenario, ID) rate in the task's output space}; see the module docstring."""

    ignored_options = NETWORK_OPTIONS | {"unseen_scenario_correction"}  # no embeddings of its own size, no hidden layers, no offset

    fits_statistics = True

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        spec = schema.spec
        sparse = [f.name for f in spec.features.sparse]
        column = self.params.column or default_column(spec)
        if column is None:
            raise ConfigError(f"model.popularity.column: no default ID feature (none ends with {list(ID_SUFFIXES)} and `group` is not a sparse feature); set one of {sparse}")
        if column not in sparse:
            raise ConfigError(f"model.popularity.column: '{column}' is not a sparse feature (sparse: {sparse})")
        self.column, self.field = column, sparse.index(column)
        self.prior_strength = float(self.params.prior_strength)
        P, T = schema.num_scenarios + 1, self.num_tasks
        V = schema.vocab_sizes(spec.features.sparse)[self.field]
        self.kinds = [t.kind for t in spec.tasks]
        # row 0 (unseen scenario) holds the sums over every scenario; ID columns 0 (padding) and 1 (OOV) stay empty
        self.register_buffer("id_sums", torch.zeros(P, V, T))
        self.register_buffer("id_rows", torch.zeros(P, V, T))
        self.register_buffer("scenario_sums", torch.zeros(P, T))
        self.register_buffer("scenario_rows", torch.zeros(P, T))
        prior = []
        for t in spec.tasks:
            stats = schema.task_stats.get(t.name, {"mean": 0.0, "scenario_mean": [0.0] * schema.num_scenarios})
            prior.append([stats["mean"], *stats["scenario_mean"]])
        self.register_buffer("prior", torch.tensor(prior, dtype=torch.float32).T.contiguous(), persistent=False)  # [P, T]

    @classmethod
    def forecast_method(cls, schema, cfg) -> str | None:
        return None  # the rate is the prediction itself: no naive-forecast offset on top of it

    @classmethod
    def not_applicable(cls, spec) -> str | None:
        try:
            if default_column(spec) is None:
                return "popularity counts by an ID column: no sparse feature ends with item_id/movie_id/ad_id and `group` is not a sparse feature"
        except ConfigError:
            return None  # ambiguous: training names the key to set
        return None

    @torch.no_grad()
    def fit_statistics(self, batches: Iterable[Batch], reduce: Callable[[Tensor], Tensor] = lambda t: t) -> None:
        """Count (Σ y, n) per (scenario, ID, task) over ``batches`` (labelled); ``reduce`` sums a
        tensor over data-parallel ranks."""
        for buf in (self.id_sums, self.id_rows, self.scenario_sums, self.scenario_rows):
            buf.zero_()
        V, T = self.id_sums.shape[1], self.id_sums.shape[2]
        for batch in batches:
            s = batch["scenario"].to(self.id_sums.device)  # [B]
            ids = batch["sparse"][:, self.field].to(s.device)  # [B]
            mask = batch["task_mask"].to(s.device).float() if "task_mask" in batch else torch.ones(len(s), T, device=s.device)
            y = batch["labels"].to(s.device).float() * mask  # [B, T]
            self.scenario_sums.index_add_(0, s, y)
            self.scenario_rows.index_add_(0, s, mask)
            known = (ids > OOV).float().unsqueeze(1)  # [B, 1]: only seen IDs get rows of their own
            cell = s * V + ids
            self.id_sums.view(-1, T).index_add_(0, cell, y * known)
            self.id_rows.view(-1, T).index_add_(0, cell, mask * known)
        for buf in (self.id_sums, self.id_rows, self.scenario_sums, self.scenario_rows):
            buf.copy_(reduce(buf))
            buf[0] = buf[1:].sum(0)  # the unseen scenario: pooled over every scenario

    def rates(self, batch: Batch) -> Tensor:
        """[B, T] the smoothed rate of each row's (scenario, ID) in user units."""
        s = batch["scenario"]
        ids = batch["sparse"][:, self.field]
        n_s = self.scenario_rows[s]  # [B, T]
        scenario_rate = torch.where(n_s > 0, self.scenario_sums[s] / n_s.clamp_min(1.0), self.prior[s])
        m = self.prior_strength
        n = self.id_rows[s, ids]  # [B, T]; 0 for OOV and padding
        return (self.id_sums[s, ids] + m * scenario_rate) / (n + m).clamp_min(1e-12) if m > 0 else torch.where(
            n > 0, self.id_sums[s, ids] / n.clamp_min(1.0), scenario_rate
        )

    def network(self, batch) -> dict[str, Tensor]:
        p = self.rates(batch)
        return {t: rules(kind).inverse_link(p[:, i]) for i, (t, kind) in enumerate(zip(self.task_names, self.kinds))}

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def personal_parameters(self) -> list[str]:
        return []  # nothing to adapt: counts, not parameters
