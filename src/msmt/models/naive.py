"""Naive forecasters as models: what a practitioner tries first, trained and scored like any model.

``naive_last`` (yesterday's value, or the most recent observed one), ``naive_mean`` (the trailing
mean over the panel window) and ``naive_weekday`` (the same weekday last week), from each row's
own raw history (:class:`msmt.layers.naive.NaiveForecast`; MODELS.md). What they fit is a scale:

* count task with a history:   log λ_t = log(b_t + ε_t) + log s_t      (s_t = 1 at start: exactly
  the naive forecast; ε_t as in :class:`~msmt.layers.naive.ForecastOffset`, so a forecast-aware
  model with f ≡ 0 equals this model at start);
* binary task with a history:  logit p_t = a_t + c_t · logit(clip(r_t, 0.02, 0.98)), r_t the last
  indicator / window rate (Platt scaling of the naive rate; a_t = 0, c_t = 1 at start);
* a task without a history:    the task's training-label mean in the row's scenario, through a
  learned shift of its link.

Only panel datasets with a task that has a history apply (``not_applicable`` says why otherwise).
The training-time history dropouts (``model.history_dropout``, ``model.history_gap_dropout``) are
for networks that learn from the history's pattern; a naive forecaster fits its scale on the
histories as they are, so it ignores them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers.naive import EPSILON_SHARE, NaiveForecast
from msmt.models.base import NETWORK_OPTIONS, MultiTaskModel
from msmt.models.registry import register
from msmt.spec.dataset import TaskKind
from msmt.spec.task_kinds import rules


class NaiveForecaster(MultiTaskModel):
    """batch -> {task: [B] log-rate / logit / value}; see the module docstring."""

    # no embeddings of its own size, no hidden layers; the scale is fitted on the histories as they are; no offset
    # whose correction an unseen scenario could shrink (the naive forecast is the model itself)
    ignored_options = NETWORK_OPTIONS | {"history_dropout", "history_gap_dropout", "unseen_scenario_correction"}
    # the scale is the forecaster (2 epochs in the studies): train.ema_epochs would keep an average pulled back
    # towards the unfitted scale (online ads, naive_mean: log-scales −0.10 / −0.09 / −0.04 fitted, −0.02 / −0.02 /
    # −0.00 averaged with a 3-epoch time constant), so the naive forecasters keep the fit as it is
    averages_weights = False

    method = "mean"

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        self.history_dropout = self.history_gap_dropout = 0.0  # ignored_options
        self.naive = NaiveForecast(schema, self.method)
        spec = schema.spec
        self.kinds = {t.name: t.kind for t in spec.tasks}
        eps = {t: EPSILON_SHARE * max(schema.task_stats[t]["mean"], 1e-6) for t in self.naive.tasks if self.kinds[t] == TaskKind.COUNT}
        self.epsilon = eps
        self.log_scale = nn.Parameter(torch.zeros(self.num_tasks))  # count tasks: log s_t
        self.bias = nn.Parameter(torch.zeros(self.num_tasks))  # binary: a_t; tasks without history: a shift
        self.slope = nn.Parameter(torch.ones(self.num_tasks))  # binary: c_t (on the centred logit of r_t)
        prior = []
        for t in spec.tasks:
            stats = schema.task_stats.get(t.name, {"mean": 0.0, "scenario_mean": [0.0] * schema.num_scenarios})
            prior.append([stats["mean"], *stats["scenario_mean"]])
        self.register_buffer("prior", torch.tensor(prior, dtype=torch.float32).T.contiguous(), persistent=False)  # [P+1, T]

    @classmethod
    def forecast_method(cls, schema, cfg) -> str | None:
        return None  # the naive forecast is the model itself, not an offset on top of it

    @classmethod
    def not_applicable(cls, spec) -> str | None:
        if spec.panel is None:
            return "a naive forecaster reads each unit's own history: the dataset has no `panel` section"
        if not any(spec.history_of(t) for t in spec.tasks):
            return "no task has a history to forecast it from (tasks.<name>.history)"
        return None

    def network(self, batch) -> dict[str, Tensor]:
        values, _ = self.naive(batch)
        out = {}
        for i, t in enumerate(self.task_names):
            kind = self.kinds[t]
            if t not in values:  # no history: the scenario's training mean, shifted
                out[t] = rules(kind).inverse_link(self.prior[batch["scenario"], i]) + self.bias[i]
            elif kind == TaskKind.COUNT:
                out[t] = torch.log(values[t] + self.epsilon[t]) + self.log_scale[i]
            elif kind == TaskKind.BINARY:
                out[t] = self.bias[i] + self.slope[i] * rules(kind).inverse_link(values[t].clamp(0.02, 0.98))
            else:
                out[t] = values[t] * torch.exp(self.log_scale[i]) + self.bias[i]
        return out

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def personal_parameters(self) -> list[str]:
        """The whole model: a scale (and Platt bias/slope) per task, per group."""
        return ["log_scale", "bias", "slope"]


@register("naive_last")
class NaiveLast(NaiveForecaster):
    """Yesterday's value (the most recent observed one); binary: yesterday's indicator."""

    method = "last"


@register("naive_mean")
class NaiveMean(NaiveForecaster):
    """The trailing mean over the panel window; binary: the window's rate."""

    method = "mean"


@register("naive_weekday")
class NaiveWeekday(NaiveForecaster):
    """The same weekday last week (the trailing mean when that day is missing)."""

    method = "weekday"
