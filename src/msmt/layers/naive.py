"""Naive forecasts of a panel's tasks from each row's own raw history (MODELS.md, "Forecasting
against the naive forecast").

For task t reading panel metric m (``DatasetSpec.history_of``) over a row's window of W past
steps, with x_j the raw value at step j and o_j whether it was observed (``seq.raw``,
``seq.present``; position W-1 is yesterday):

* ``last``     the value at the most recent observed step;
* ``mean``     the trailing mean over the observed steps, b = Σ_j o_j x_j / Σ_j o_j;
* ``weekday``  the value 7 steps back (same weekday last week) when observed, else ``mean``.

Binary tasks read the indicator 1[x_j > 0] (``last``: yesterday's indicator, ``mean``: the
window's rate). A row with nothing observed falls back to the task's prior (``FittedSchema.task_stats``): the
training-label mean of the row's scenario (an unseen scenario: the overall mean), or with
``prior="overall"`` the overall mean for every row (the forecast offset's choice: a row without
history then has the same reference in a known scenario as in a new one, and the network learns
the scenario's level from its attributes).
Everything is per row: nothing mixes rows of the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.spec.dataset import TaskKind
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema

METHODS = ("last", "mean", "weekday")
WEEK = 7
EPSILON_SHARE = 0.01  # ε_t of the offset, as a share of the task's training-label mean


def forecast_tasks(schema: FittedSchema) -> list[tuple[str, str]]:
    """(task, panel metric) for every task that has a history to forecast it from."""
    spec = schema.spec
    return [(t.name, m) for t in spec.tasks if (m := spec.history_of(t)) is not None]


class NaiveForecast(nn.Module):
    """batch -> ({task: [B] naive forecast in user units}, {task: [B] bool, True where the row had history}).

    Args:
        schema: a fitted schema with a panel and ``task_stats`` (the priors).
        method: ``last``, ``mean`` or ``weekday``.
    """

    def __init__(self, schema: FittedSchema, method: str = "mean", prior: str = "scenario"):
        super().__init__()
        if prior not in ("scenario", "overall"):
            raise ValueError(f"prior must be 'scenario' or 'overall', got {prior!r}")
        if method not in METHODS:
            raise ConfigError(f"naive forecast method '{method}' (expected one of {list(METHODS)})")
        if schema.panel is None:
            raise ConfigError("naive forecasts need a dataset with a 'panel' section (the history to read)")
        pairs = forecast_tasks(schema)
        if not pairs:
            raise ConfigError("naive forecasts: no task has a history (set tasks.<name>.history to a panel metric)")
        missing = [t for t, _ in pairs if t not in schema.task_stats]
        if missing:
            raise ConfigError(f"naive forecasts: no training-label statistics for {missing} (a run written before msmt 0.2)")
        if method == "weekday" and schema.panel.window < WEEK:
            raise ConfigError(f"naive forecast 'weekday' needs a panel window of at least {WEEK} steps (window {schema.panel.window})")
        self.method = method
        self.tasks = [t for t, _ in pairs]
        binary = [schema.spec.task(t).kind == TaskKind.BINARY for t in self.tasks]
        self.register_buffer("binary", torch.tensor(binary, dtype=torch.bool), persistent=False)
        metrics = list(schema.panel.metrics)
        self.register_buffer("columns", torch.tensor([metrics.index(m) for _, m in pairs], dtype=torch.long), persistent=False)
        stats = [schema.task_stats[t] for t in self.tasks]
        prior = [[s["mean"], *(s["scenario_mean"] if prior == "scenario" else [s["mean"]] * schema.num_scenarios)] for s in stats]
        self.register_buffer("prior", torch.tensor(prior, dtype=torch.float32).T.contiguous(), persistent=False)  # [P+1, T]

    def values(self, batch: dict[str, Tensor], methods: tuple[str, ...] | None = None) -> tuple[Tensor, Tensor]:
        """(value [C, B, T], has [B, T] bool): the forecast of every task by each of ``methods``
        (default: this module's own, C = 1), columns in ``self.tasks`` order; the history is read once
        for all of them (the forecast offset's candidates). ``weekday`` needs a window of ≥ 7 steps."""
        x = batch["seq.raw"].index_select(2, self.columns)  # [B, W, T]
        seen = batch["seq.present"].index_select(2, self.columns).to(x.dtype)  # [B, W, T]
        x = torch.where(self.binary, (x > 0).to(x.dtype), x)  # binary tasks read the indicator
        count = seen.sum(1)  # [B, T]
        mean = (x * seen).sum(1) / count.clamp_min(1.0)
        has = count > 0
        prior = self.prior[batch["scenario"]]  # [B, T]
        out = []
        for method in methods or (self.method,):
            if method == "mean":
                value = mean
            elif method == "last":
                W = x.shape[1]
                steps = torch.arange(1, W + 1, device=x.device, dtype=x.dtype).view(1, W, 1)
                latest = (seen * steps).argmax(1, keepdim=True)  # [B, 1, T]: the most recent observed step
                value = x.gather(1, latest).squeeze(1)
            else:
                week = x[:, -WEEK]  # [B, T]: 7 steps before the row's own step
                value = torch.where(seen[:, -WEEK] > 0, week, mean)
            out.append(torch.where(has, value, prior))
        return torch.stack(out), has

    def forward(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        value, has = self.values(batch)
        value = value[0]
        return {t: value[:, i] for i, t in enumerate(self.tasks)}, {t: has[:, i] for i, t in enumerate(self.tasks)}


AUTO_CANDIDATES = ("mean", "last", "weekday")  # model.forecast: auto chooses among these (ties: the first)
BACKTEST_STEPS = 7  # blend_backtest's default (model.backtest_days): each candidate is scored on the window's last week


def backtest_errors(x: Tensor, seen: Tensor, candidates: list[str], epsilon: Tensor, steps: int = BACKTEST_STEPS) -> Tensor:
    """Each candidate naive forecast's recent error inside each row's own window.

    x, seen: [B, W, T] raw values and whether each step was observed (position W-1 is yesterday);
    epsilon: [T]. For each of the window's last ``steps`` positions j that was observed and has an
    observed step before it, the candidate forecasts x_j from the steps before j alone (``last``:
    the latest observed one; ``mean``: their mean; ``weekday``: x_{j-7} when observed, else that
    mean) and errs by |log(x_j + ε) − log(forecast + ε)|. Returns [B, T, C] the mean error over those
    positions (0 where there is none). Everything is per row; no cumulative-max op (exportable).
    """
    B, W, T = x.shape
    steps = min(steps, W)
    seen = seen.to(x.dtype)
    before = torch.ones(W, W, dtype=x.dtype, device=x.device).tril(-1)  # [j, i] = 1 where i < j
    count = torch.einsum("ji,bit->bjt", before, seen)  # observed steps before j
    mean = torch.einsum("ji,bit->bjt", before, seen * x) / count.clamp_min(1.0)
    position = torch.arange(1, W + 1, dtype=x.dtype, device=x.device).view(1, 1, W, 1)
    latest = (before.view(1, W, W, 1) * seen.unsqueeze(1) * position).amax(2)  # [B, W(j), T]: 1 + index of the latest i < j seen
    last = x.gather(1, (latest - 1).clamp_min(0).long())
    forecasts = {"mean": mean, "last": last}
    if "weekday" in candidates:
        week = torch.cat([x.new_zeros(B, WEEK, T), x[:, :-WEEK]], 1)  # x_{j-7}
        week_seen = torch.cat([seen.new_zeros(B, WEEK, T), seen[:, :-WEEK]], 1)
        forecasts["weekday"] = torch.where(week_seen > 0, week, mean)
    valid = (seen * (count > 0).to(x.dtype))[:, W - steps :]  # [B, steps, T]
    eps = epsilon.to(x.dtype)
    target = torch.log(x[:, W - steps :] + eps)
    errors = [((torch.log(forecasts[c][:, W - steps :] + eps) - target).abs() * valid).sum(1) for c in candidates]
    return torch.stack(errors, -1) / valid.sum(1).clamp_min(1.0).unsqueeze(-1)


class ForecastOffset(nn.Module):
    """The offset form of count heads (GLM offsets; DeepAR scales by the series level):
    log λ_t = log(b_t + ε_t) + f_t(x), with b_t the naive forecast of task t and ε_t = 1% of its
    training-label mean, so that f ≡ 0 gives exactly the naive forecast where the row has history
    (``naive_<method>``) and the network learns only the correction. A row without history is
    offset by the task's overall training mean (the same reference in a known scenario as in a
    new one). Only count tasks with a history get an offset.

    ``method="auto"``: b_t is, per task, the naive forecast (:data:`AUTO_CANDIDATES`; ``weekday``
    only with a window of ≥ 7 steps) with the smallest absolute error Σ|y − b| on the training
    split — the backtest a forecaster runs before anything else. :meth:`fit` chooses it from
    labelled batches before training (``MultiTaskModel.fit_statistics``); the choice is the
    buffer ``choice`` [T] (saved with the weights); before :meth:`fit` it is the trailing mean.

    ``method="blend"``: b_t is a per-row convex combination of the same candidates,
    b_t = Σ_c w_tc b_tc with w_t = softmax(a_t + V_t z_t), z_tc = log(b_tc + ε_t) − log(b_t,mean + ε_t)
    (how far each candidate sits from the trailing mean); a_t [C] and V_t [C, C] are learnt with
    the network (zero at the start: the plain average of the candidates). A row whose recent
    days left the window's level can lean on the last value, a noisy one on the mean — what one
    choice for the whole training split cannot do when the data changes regime.

    ``method="blend_backtest"``: the blend whose gate also reads how each candidate has just done on
    the row's own series, w_t = softmax(a_t + V_t z_t + U_t e_t) with e_tc the candidate's mean
    absolute log-error over the window's last ``backtest_days`` days (7), each day forecast from the days before it
    (:func:`backtest_errors`; U_t [C, C] learnt, zero at the start). When the data changes regime
    inside the window, the candidate that has stopped tracking the series shows it in e, on data
    whose training split never saw that regime (forecast combination weighted by recent
    performance, Bates & Granger 1969).

    ``unseen_correction`` w < 1: on a row whose scenario training never saw (index 0) and that has
    its own history of the task, the network keeps only w of its correction, log λ_t = log(b_t + ε_t)
    + w f_t(x): such a scenario's generated weights come from attributes no training row shared,
    while its level shows in its first days (chosen on a known scenario held out of training,
    ``benchmarks/held_out_scenario.py``). Rows of known scenarios and rows without history keep all
    of f (without history b is only the overall mean). Scoring only: no training row is unseen.

    ``forward(batch, outputs)`` -> outputs with ``log(b + ε)`` added to those tasks' log-rates.
    """

    def __init__(self, schema: FittedSchema, method: str = "mean", backtest_days: int = BACKTEST_STEPS, unseen_correction: float = 1.0):
        super().__init__()
        self.unseen_correction = float(unseen_correction)  # in [0, 1]: model.unseen_scenario_correction
        self.selects = method == "auto"
        self.blends = method in ("blend", "blend_backtest")
        self.backtests = method == "blend_backtest"
        if self.selects or self.blends:
            self.candidates = [m for m in AUTO_CANDIDATES if m != "weekday" or schema.panel.window >= WEEK]
        else:
            self.candidates = [method]
        self.naive = naive = NaiveForecast(schema, self.candidates[0], prior="overall")  # computes every candidate
        counts = [t for t in naive.tasks if schema.spec.task(t).kind == TaskKind.COUNT]
        if not counts:
            raise ConfigError("model.forecast: no count task has a history to offset (tasks.<name>.history)")
        self.tasks = counts
        self.label_index = [schema.spec.task_names.index(t) for t in counts]
        # the offset tasks' columns among every naive forecast's tasks (each candidate computed once per batch)
        self.register_buffer("task_columns", torch.tensor([naive.tasks.index(t) for t in counts]), persistent=False)
        self.register_buffer("count_columns", naive.columns[self.task_columns].clone(), persistent=False)  # their panel metrics
        eps = [EPSILON_SHARE * max(schema.task_stats[t]["mean"], 1e-6) for t in counts]
        self.register_buffer("epsilon", torch.tensor(eps, dtype=torch.float32), persistent=False)
        if self.selects:  # index into self.candidates per offset task; persistent: the fitted choice
            self.register_buffer("choice", torch.zeros(len(counts), dtype=torch.long))
        if self.blends:  # the blend's gate: logits a_t + V_t z_t over the candidates
            C = len(self.candidates)
            self.gate_bias = nn.Parameter(torch.zeros(len(counts), C))
            self.gate_weight = nn.Parameter(torch.zeros(len(counts), C, C))
            self.mean_index = self.candidates.index("mean")
        if self.backtests:  # the gate's weights on the candidates' recent errors
            if not 1 <= backtest_days <= schema.panel.window:
                raise ConfigError(f"model.backtest_days: {backtest_days} (expected 1 to the panel window, {schema.panel.window} steps)")
            self.backtest_days = backtest_days
            self.error_weight = nn.Parameter(torch.zeros(len(counts), C, C))

    def naive_values(self, batch: dict[str, Tensor]) -> Tensor:
        """[C, B, T] every candidate's naive forecast of the offset tasks (C = 1 unless ``auto`` or ``blend``)."""
        return self.naive.values(batch, tuple(self.candidates))[0].index_select(2, self.task_columns)

    def errors(self, batch: dict[str, Tensor]) -> Tensor:
        """[B, T, C] each candidate's recent backtest error on the row's window (``blend_backtest``)."""
        x = batch["seq.raw"].index_select(2, self.count_columns)
        seen = batch["seq.present"].index_select(2, self.count_columns)
        return backtest_errors(x, seen, self.candidates, self.epsilon, self.backtest_days)

    def offsets(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """{task: [B] log(b + ε)} for the offset tasks."""
        values = self.naive_values(batch)  # [C, B, T]
        if self.selects:
            index = self.choice.view(1, 1, -1).expand(1, values.shape[1], -1)
            chosen = values.gather(0, index)[0]  # [B, T]
        elif self.blends:
            values = values.permute(1, 2, 0)  # [B, T, C]
            logs = torch.log(values + self.epsilon.unsqueeze(-1))
            z = logs - logs[..., self.mean_index].unsqueeze(-1)
            logits = self.gate_bias.to(z.dtype) + torch.einsum("btc,tcd->btd", z, self.gate_weight.to(z.dtype))
            if self.backtests:
                errors = self.errors(batch).to(z.dtype)  # [B, T, C]
                logits = logits + torch.einsum("btc,tcd->btd", errors, self.error_weight.to(z.dtype))
            chosen = (torch.softmax(logits, -1) * values).sum(-1)  # [B, T]
        else:
            chosen = values[0]
        return {t: torch.log(chosen[:, i] + self.epsilon[i]) for i, t in enumerate(self.tasks)}

    def chosen(self) -> dict[str, str]:
        """{task: the naive forecast its offset uses}."""
        if self.blends:
            return {t: "blend of " + " / ".join(self.candidates) for t in self.tasks}
        if not self.selects:
            return {t: self.candidates[0] for t in self.tasks}
        return {t: self.candidates[int(c)] for t, c in zip(self.tasks, self.choice.tolist())}

    @torch.no_grad()
    def fit(self, batches, reduce=lambda t: t) -> None:
        """Choose each task's naive forecast by its absolute error on labelled ``batches`` (the
        training split; ``reduce`` sums over data-parallel ranks). No-op unless ``auto``."""
        if not self.selects:
            return
        errors = torch.zeros(len(self.candidates), len(self.tasks), dtype=torch.float64, device=self.choice.device)
        columns = torch.tensor(self.label_index, device=self.choice.device)
        for batch in batches:
            batch = {k: v.to(self.choice.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            y = batch["labels"].index_select(1, columns).to(torch.float64)  # [B, T]
            mask = batch["task_mask"].index_select(1, columns) if "task_mask" in batch else torch.ones_like(y, dtype=torch.bool)
            values = self.naive_values(batch).to(torch.float64)  # [C, B, T]
            errors += ((values - y).abs() * mask).sum(1)
        self.choice.copy_(reduce(errors).argmin(0))

    def shrink_unseen(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The offset tasks' corrections f(x) [B] times w on the rows of an unseen scenario with their own history."""
        has = batch["seq.present"].index_select(2, self.count_columns).any(1)  # [B, T]: the row observed the task's metric
        unseen = (batch["scenario"] == 0).unsqueeze(1) & has  # [B, T]
        out = dict(outputs)
        for i, t in enumerate(self.tasks):
            o = outputs[t]
            out[t] = torch.where(unseen[:, i], o * self.unseen_correction, o)
        return out

    def forward(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        offsets = self.offsets(batch)
        if self.unseen_correction != 1.0:
            outputs = self.shrink_unseen(batch, outputs)
        return {t: (o + offsets[t].to(o.dtype)) if t in offsets else o for t, o in outputs.items()}
