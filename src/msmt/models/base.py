"""The contract every msmt model follows.

``forward(batch) -> {task_name: Tensor[B]}``: a logit for binary tasks, a log-rate for count
tasks, a value for regression tasks. Models compute no loss; the trainer derives it from each
task's declared kind (TorchRec's split between model and loss wrapper).

A model implements ``network(batch)``, the function f(x) of the paper it follows; ``forward``
adds what every model shares: on panel data, the forecast offset of count tasks
(``model.forecast``, :class:`msmt.layers.naive.ForecastOffset`: log λ = log(b + ε) + f(x), so
the network learns the correction to the naive forecast), and for negative-binomial tasks a
learned dispersion (:meth:`MultiTaskModel.distribution_parameters`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from msmt.layers.naive import BACKTEST_STEPS, ForecastOffset
from msmt.spec.batch import Batch
from msmt.spec.dataset import TaskKind
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema


def drop_history(batch: Batch, rate: float, gap_rate: float = 0.0) -> Batch:
    """The batch with part of each row's panel history hidden (training only).

    * ``rate``: the row's whole history is removed with this probability, so the model also
      learns to forecast a unit without history — a new advertiser, a new scenario's first day —
      whose forecast offset is then the task's prior.
    * ``gap_rate``: with this probability the history is cut to a block of k days that ends g days
      before the row (g ~ U{1..W-1} the most recent days hidden, k ~ U{1..W-g} days kept, W the
      window): a unit whose first days are all it has when it is scored days later, as a new
      scenario's units with K days of context (``msmt.experiments.forecasting``). A complete
      panel never shows that pattern in training (recent days missing, older days present).

    The cross-section channel (``seq.cross_*``, ``panel.cross_section_keys``) is hidden on the
    same days: a new scenario's units lack their days before launch because the scenario had none,
    so its other advertisers have none either. The group channel (``seq.group_*``: the
    advertiser's other scenarios) is kept: those existed.

    Shapes: ``seq.mask`` [B, W] (column W-1 is day t-1), ``seq.behaviour`` [B, W],
    ``seq.performance`` / ``seq.raw`` [B, W, P], ``seq.present`` [B, W, P], ``seq.cross_raw``
    [B, W, P], ``seq.cross_count`` / ``seq.cross_active`` [B, W]."""
    mask = batch["seq.mask"]
    B, W = mask.shape
    device = mask.device
    hidden = (torch.rand(B, device=device) < rate)[:, None].expand(B, W)  # [B, W]
    if gap_rate > 0 and W > 1:
        lag = torch.arange(W, 0, -1, device=device)[None, :]  # [1, W]: W, ..., 1 (days before the row)
        gap = torch.randint(1, W, (B, 1), device=device)  # g: the most recent days hidden
        kept = 1 + (torch.rand(B, 1, device=device) * (W - gap)).long()  # k ~ U{1..W-g}
        cut = (torch.rand(B, 1, device=device) < gap_rate) & ((lag <= gap) | (lag > gap + kept))
        hidden = hidden | cut
    keep = ~hidden
    out = dict(batch)
    out["seq.mask"] = mask & keep
    out["seq.behaviour"] = batch["seq.behaviour"] * keep
    for key in ("seq.performance", "seq.raw"):
        if key in batch:
            out[key] = batch[key] * keep[:, :, None].to(batch[key].dtype)
    if "seq.present" in batch:
        out["seq.present"] = batch["seq.present"] & keep[:, :, None]
    if "seq.cross_raw" in batch:  # the cross-section goes with the unit's days: a new scenario has neither before launch
        out["seq.cross_raw"] = batch["seq.cross_raw"] * keep[:, :, None].to(batch["seq.cross_raw"].dtype)
        for key in ("seq.cross_count", "seq.cross_active"):
            out[key] = batch[key] * keep.to(batch[key].dtype)
    return out


NETWORK_OPTIONS = frozenset({"embedding_dim", "hidden_dims", "tower_dims", "dropout", "activation"})  # the shape of a network
INITIAL_LOG_DISPERSION = -1.0  # α = 0.37 (NB2): between Poisson and heavy over-dispersion


class MultiTaskModel(nn.Module):
    """Base class: holds the schema and task list; subclasses build the network."""

    registry_name = "base"
    # forward() augments its input in training mode; meta-training turns this off and augments each
    # episode's batches once instead (msmt.meta.algorithms.meta_train), so an inner loop sees one draw
    augments_in_forward: bool = True
    # shared ``model.*`` options this model does not read (a GLM has no hidden layers): a
    # hyper-parameter search leaves them out (msmt.experiments.tuned.model_space)
    ignored_options: frozenset[str] = frozenset()
    # train.ema_epochs applies (msmt.training.averaging); False for a fit of a few epochs (the naive forecasters'
    # scale: 2 epochs), which an average with a time constant of several epochs drags back towards its start
    averages_weights: bool = True

    def __init__(self, schema: FittedSchema, cfg):
        super().__init__()
        self.schema = schema
        self.cfg = cfg
        self.params = cfg.params()
        self.task_names: list[str] = schema.spec.task_names
        self.num_tasks = len(self.task_names)
        self.history_dropout = float(getattr(cfg, "history_dropout", 0.0))
        self.history_gap_dropout = float(getattr(cfg, "history_gap_dropout", 0.0))
        method = self.forecast_method(schema, cfg)
        unseen = float(getattr(cfg, "unseen_scenario_correction", 1.0))
        if unseen != 1.0 and not method and "unseen_scenario_correction" not in self.ignored_options:
            raise ConfigError(f"model.unseen_scenario_correction: {unseen:g} shrinks the correction of a forecast offset, and this model has none "
                              "(model.forecast: none, or a dataset without a panel)")
        self.forecast = ForecastOffset(
            schema, method, backtest_days=int(getattr(cfg, "backtest_days", BACKTEST_STEPS)), unseen_correction=unseen,
        ) if method else None
        self.dispersion = nn.ParameterDict(
            {
                t.name: nn.Parameter(torch.full((schema.num_scenarios + 1 if t.dispersion == "scenario" else 1,), INITIAL_LOG_DISPERSION))
                for t in schema.spec.tasks
                if t.distribution == "negative_binomial"
            }
        )

    @property
    def fits_statistics(self) -> bool:
        """True: the trainer calls :meth:`fit_statistics` once before training (here: the
        forecast offset chooses its naive forecast, ``model.forecast: auto``)."""
        return self.forecast is not None and self.forecast.selects

    @classmethod
    def forecast_method(cls, schema: FittedSchema, cfg) -> str | None:
        """The naive forecast the count heads are offset by (None: no offset).

        ``model.forecast``: ``auto`` (on panel data with a count task that has a history: per
        task the naive forecast that backtests best on the training split, see
        :class:`~msmt.layers.naive.ForecastOffset`; else none), ``blend`` / ``blend_backtest`` (a learnt
        per-row mix of the naive forecasts; else none), ``none``, or ``last`` / ``mean`` / ``weekday``.
        """
        choice = getattr(cfg, "forecast", "none")
        if choice == "none":
            return None
        offsettable = schema.panel is not None and schema.task_stats and any(
            t.kind == TaskKind.COUNT and schema.spec.history_of(t) for t in schema.spec.tasks
        )
        if choice in ("auto", "blend", "blend_backtest"):
            return choice if offsettable else None
        if not offsettable:
            raise ConfigError(f"model.forecast: '{choice}' needs panel data with a count task that has a history (tasks.<name>.history)")
        return choice

    def network(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """The model's own function f(x): {task: [B] logit / log-rate / value}."""
        raise NotImplementedError

    def augment(self, batch: Batch) -> Batch:
        """The training-time input augmentation (``model.history_dropout``, ``model.history_gap_dropout``): a
        new batch with part of the panel history hidden, drawn anew per call; ``batch`` itself where there is none."""
        if (self.history_dropout > 0 or self.history_gap_dropout > 0) and "seq.mask" in batch:
            return drop_history(batch, self.history_dropout, self.history_gap_dropout)
        return batch

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if self.training and self.augments_in_forward:
            batch = self.augment(batch)
        out = self.network(batch)
        return self.forecast(batch, out) if self.forecast is not None else out

    def fit_statistics(self, batches: Iterable[Batch], reduce: Callable[[Tensor], Tensor] = lambda t: t) -> None:
        """Closed-form statistics (counts held in buffers) from one pass over the labelled training
        batches, before any gradient step; the trainer calls it when ``fits_statistics`` is set
        (the popularity baseline). ``reduce`` sums a tensor over data-parallel ranks (each rank
        passes its own shard). A model whose parameters all come from here has none to train:
        the trainer then runs no gradient step. Base: the forecast offset's choice (``auto``)."""
        if self.forecast is not None:
            self.forecast.fit(batches, reduce)

    def distribution_parameters(self, batch: Batch) -> dict[str, Tensor]:
        """{task: [B] log α} of the negative-binomial tasks ({} when there are none)."""
        return {
            name: (p[batch["scenario"]] if p.shape[0] > 1 else p.expand(batch["scenario"].shape[0]))
            for name, p in self.dispersion.items()
        }

    @classmethod
    def not_applicable(cls, spec) -> str | None:
        """Why this model cannot be meaningfully trained on a dataset ``spec`` (None: it can).

        Checked by ``msmt bench`` before any data is read, so a grid reports the cell as n/a
        with this one-line reason instead of a number that would mean something else.
        """
        return None

    def auxiliary_outputs(self, batch: Batch) -> dict[str, Tensor]:
        """{name: [B]} for the dataset's ``auxiliary`` outputs (label-free; e.g. ESMM's CVR logit).

        Models that do not produce auxiliary outputs return ``{}``.
        """
        return {}

    def extra_losses(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """{name: scalar} loss terms of the model's own, already weighted, that the trainer adds to
        the balanced task objective (AITM's calibrator, ESCM²'s counterfactual regulariser).

        ``batch`` is labelled (``labels``, ``weight``, ``task_mask``...); ``outputs`` is
        ``forward(batch)``. Models without such terms return ``{}``.
        """
        return {}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss flows through (loss balancing needs the split)."""
        return []

    def personal_parameters(self) -> list[str]:
        """Names of the parameters a group adapts: its personal block (``meta.personal: [auto]``).

        Default: the task towers (``towers.*``), small and read by every row of the group. A model
        without towers declares its own (M2M: its output heads; single-task: each network's last
        layer; the naive forecasters: their scales).
        """
        return [n for n, _ in self.named_parameters() if n.startswith("towers.")]

    def last_shared_layer(self) -> nn.Module | None:
        """The last layer shared by all tasks: where GradNorm measures gradient norms."""
        return None

    def task_parameters(self) -> list[nn.Parameter]:
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared]
