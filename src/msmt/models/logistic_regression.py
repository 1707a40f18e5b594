"""Logistic regression: the generalised linear model a practitioner tries first.

Per task t, a linear predictor over the declared features, through the task kind's own link
(:mod:`msmt.spec.task_kinds`: a logit for binary tasks, a log-rate for count tasks, the value for
regression tasks):

    η_t(x) = b_t + c_{t,s} + Σ_f w_{t,f}[x_f] + Σ_m mean_{v ∈ x_m} w_{t,m}[v] + u_tᵀ d

* one weight per category and task (a 1-dim embedding per category: exactly one-hot logistic
  regression; hashed features are bucket ids, so a bucket is a category) for every sparse feature
  f; a multi-valued feature m contributes the mean of its values' weights;
* u_t over the standardised dense features d (and the panel-history summary with
  ``model.history_summary``);
* a per-scenario bias c_{t,s} (a scenario unseen in training, index 0, keeps c = 0: the shared
  level) and a task bias b_t started at the link of the task's training mean.

On panel data a count task with a history is offset by its naive forecast like every model's
(``model.forecast``: log λ = log(b + ε) + η, a GLM offset; its b_t then starts at 0).

Weights start at zero (the problem is convex; the start does not matter). L2 shrinkage is the
trainer's ``train.weight_decay`` (AdamW's decoupled form). ID dropout (``features.sparse[*].dropout``)
applies as for every model: the OOV weight is then the population's weight.
Shapes: batch -> {task: [B]}. Nothing mixes rows of the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers.embedding import FeatureEncoder
from msmt.models.base import NETWORK_OPTIONS, MultiTaskModel
from msmt.models.registry import register
from msmt.spec.task_kinds import rules


@register("logistic_regression")
class LogisticRegression(MultiTaskModel):
    """batch -> {task: [B] linear predictor in the task's output space}; see the module docstring."""

    ignored_options = NETWORK_OPTIONS  # no embeddings of its own size, no hidden layers

    def __init__(self, schema, cfg):
        super().__init__(schema, cfg)
        T = self.num_tasks
        # one column per task: embed_fields gives [B, F, T], each field's weight for each task
        self.encoder = FeatureEncoder(schema, T, history=cfg.history_summary, history_live=cfg.history_live, id_warmup=getattr(cfg, "id_warmup", None),
                                      oov_init=cfg.oov_init)
        nn.init.zeros_(self.encoder.table.weight)  # every OOV weight then is the mean of its seen weights too (model.oov_init)
        dense_width = self.encoder.out_dim - T * len(self.encoder.field_names)
        self.dense = nn.Linear(dense_width, T, bias=False) if dense_width else None
        if self.dense is not None:
            nn.init.zeros_(self.dense.weight)
        self.scenario_bias = nn.Embedding(schema.num_scenarios + 1, T)
        nn.init.zeros_(self.scenario_bias.weight)
        offset = set(self.forecast.tasks) if self.forecast is not None else set()  # these start from log(b + ε) already
        start = [0.0 if t.name in offset else float(rules(t.kind).inverse_link(torch.tensor(schema.label_stat(t.name, "mean", 0.5))))
                 for t in schema.spec.tasks]
        self.bias = nn.Parameter(torch.tensor(start, dtype=torch.float32))  # [T]

    def network(self, batch) -> dict[str, Tensor]:
        fields = self.encoder.embed_fields(batch)  # [B, F, T]
        eta = fields.sum(1) + self.scenario_bias(batch["scenario"]) + self.bias  # [B, T]
        if self.dense is not None:
            eta = eta + self.dense(self.encoder.flatten(batch, fields[:, :0]))  # dense (+ history) values only
        return {t: eta[:, i] for i, t in enumerate(self.task_names)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return []  # every weight belongs to one task (its column)

    def personal_parameters(self) -> list[str]:
        """A group adapts its task biases."""
        return ["bias"]
