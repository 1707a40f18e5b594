"""The point forecast for absolute errors: c · expected count, c per count task and scenario.

A count model predicts the mean μ of tomorrow's count (its loss is a Poisson or NB likelihood).
NMAE = Σ|y − ŷ| / Σ|y| is minimised row by row by the *median* of the count's distribution, not
its mean (:func:`msmt.synth.advertiser.median_oracle`); over-dispersed counts have their median
below the mean. With ``train.point_forecast: scaled`` the run fits, after training, one factor per
count task and scenario on the validation split,

    c = argmin_c Σ_rows |c·μ − y|  =  the μ-weighted median of y / μ,

the least-absolute-deviation fit of a scale (a weighted median: Koenker & Bassett, 1978, "Regression
Quantiles"); a scenario with fewer than :data:`MIN_ROWS` validation rows, or none (a scenario
new at scoring time), takes the factor fitted on all of the task's rows. The factors live in
``RUN_DIR/point_forecast.json``.

The factors are a bet that the days scored look like the validation days; where the level moves
(real ads data that changes regime) they can make NMAE worse. So each task's factors are first
checked on a holdout: fitted on the validation split's earlier half (by the panel's time; by row
order for other data), they are kept only when they lower NMAE on its later half; otherwise the
task's factor is 1 (its point forecast is the mean). The check's numbers are stored beside the
factors (``holdout``).

With ``train.point_forecast: median`` the point is the median of a Poisson with the scaled rate,
m = median Poisson(c·μ), an integer (λ − ln 2 ≤ median < λ + 1/3 for λ = c·μ: Choi, 1994, "On the
medians of gamma distributions and an equation of Ramanujan", Proc. AMS 121). The factor carries the
skew of over-dispersed counts; the median of the rescaled Poisson adds what matters on rare counts:
a count of 0 or 1 is forecast as 0 or 1, not 0.6 (measured on the simulator's minor scenario,
whose daily cost is mostly 0, 1 or 2: ``docs/results/forecasting.md``). Its holdout check compares
that median with the mean; a task whose check fails keeps the mean (factor 1, no median).

How they are used: the absolute-error measures ``nmae``, ``smape`` and ``mape`` score the point
forecast c·μ, while ``rmse`` and the deviances score the mean μ (the split GluonTS's evaluator
makes: absolute errors on the median forecast, squared error on the mean); ``msmt predict`` and
the service give ``point_<task>`` beside ``pred_<task>`` (still μ). Binary and regression tasks
have no point forecast of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from msmt.data.io import atomic_write_text
from msmt.spec.dataset import Task
from msmt.spec.errors import RunDirError
from msmt.spec.task_kinds import rules

POINT_FILE = "point_forecast.json"
FORMAT = 1
MIN_ROWS = 200  # validation rows a scenario needs for a factor of its own
ABSOLUTE_MEASURES = ("smape", "nmae", "mape")  # scored on the point forecast; the rest on the mean


def lad_scale(pred: np.ndarray, label: np.ndarray) -> float:
    """argmin_c Σ|c·pred − label| over rows with pred > 0: the pred-weighted median of label / pred
    (Σ|c·p − y| = Σ p·|c − y/p|). 1.0 when no row has a positive prediction."""
    pred, label = np.asarray(pred, np.float64), np.asarray(label, np.float64)
    keep = pred > 0
    if not keep.any():
        return 1.0
    pred, ratio = pred[keep], label[keep] / pred[keep]
    order = np.argsort(ratio, kind="stable")
    weight = np.cumsum(pred[order])
    return float(ratio[order][np.searchsorted(weight, weight[-1] / 2)])


def poisson_median(rate: np.ndarray) -> np.ndarray:
    """[N] the median of Poisson(rate) row by row: the smallest integer m with P(Y ≤ m) ≥ 1/2 (0 at rate 0)."""
    from scipy import stats  # on use: importing scipy.stats takes ~0.5 s, paid by every msmt process that trains or scores

    return stats.poisson.ppf(0.5, np.asarray(rate, np.float64))


@dataclass(frozen=True)
class PointScales:
    """{task: factor over all rows} and {task: {scenario: factor}} (scenarios with enough rows).

    ``median``: None for ``train.point_forecast: scaled`` (the point is c·μ); for ``median`` the
    tasks whose point is the Poisson median of c·μ (:func:`poisson_median`; a task left out, its
    holdout check failed, has factor 1 and the mean as its point)."""

    overall: dict[str, float]
    scenarios: dict[str, dict[str, float]] = field(default_factory=dict)
    # task -> {"mean", "scaled": later-half NMAE of the mean and of the point fitted on the earlier half, "kept"}
    holdout: dict[str, dict] = field(default_factory=dict)
    median: tuple[str, ...] | None = None

    def factors(self, task: str, scenarios: np.ndarray) -> np.ndarray:
        """[N] factor of each row's scenario (the task's overall factor where it has none)."""
        own = self.scenarios.get(task, {})
        default = self.overall[task]
        return np.fromiter((own.get(str(s), default) for s in scenarios), dtype=np.float64, count=len(scenarios))

    def apply(self, preds: dict[str, np.ndarray], scenarios: np.ndarray) -> dict[str, np.ndarray]:
        """{task: [N] point forecast} for the tasks that have factors (the others are left out)."""
        out = {}
        for t in self.overall:
            if t in preds:
                rate = self.factors(t, scenarios) * preds[t]
                out[t] = (poisson_median(rate) if t in (self.median or ()) else rate).astype(np.float32)
        return out

    def to_json(self) -> str:
        body = {"format": FORMAT, "fitted_on": "validation", "overall": self.overall, "scenarios": self.scenarios, "holdout": self.holdout}
        if self.median is not None:  # written by median runs only: a scaled run's file is as before
            body["median"] = list(self.median)
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str) -> PointScales:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this msmt reads {FORMAT}")
            overall = {str(t): float(c) for t, c in data["overall"].items()}
            scenarios = {str(t): {str(s): float(c) for s, c in by.items()} for t, by in data["scenarios"].items()}
            holdout = {str(t): dict(check) for t, check in data.get("holdout", {}).items()}
            median = tuple(str(t) for t in data["median"]) if "median" in data else None
            if median is not None and not set(median) <= set(overall):
                raise ValueError(f"'median' names {sorted(set(median) - set(overall))}, which have no factor")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RunDirError(f"{source}: not a point-forecast file ({type(exc).__name__}: {exc})") from None
        bad = [c for c in [*overall.values(), *(c for by in scenarios.values() for c in by.values())] if not np.isfinite(c) or c < 0]
        if bad:
            raise RunDirError(f"{source}: a factor must be finite and >= 0 (found {bad[0]})")
        return cls(overall, scenarios, holdout, median)


def fit_point_scales(
    tasks: list[Task], labels: dict[str, np.ndarray], preds: dict[str, np.ndarray], scenarios: np.ndarray,
    min_rows: int | None = None, median: bool = False,
) -> PointScales:
    """The factors of every count task from validation ``labels`` / ``preds`` ({task: [N]}) and
    [N] scenario names; a task declared for some scenarios only is fitted on its own rows.
    ``min_rows``: a scenario's rows needed for a factor of its own (default :data:`MIN_ROWS`);
    ``median``: every count task's point is the Poisson median of c·μ (``train.point_forecast: median``)."""
    min_rows = MIN_ROWS if min_rows is None else min_rows
    scenarios = np.asarray(scenarios).astype(str)
    overall, per_scenario = {}, {}
    for task in tasks:
        if not rules(task).scaled_point:
            continue
        rows = np.isin(scenarios, task.scenarios) if task.scenarios else np.ones(len(scenarios), bool)
        y, p = labels[task.name][rows], preds[task.name][rows]
        overall[task.name] = lad_scale(p, y)
        names, counts = np.unique(scenarios[rows], return_counts=True)
        per_scenario[task.name] = {
            str(s): lad_scale(p[scenarios[rows] == s], y[scenarios[rows] == s]) for s, n in zip(names, counts) if n >= min_rows
        }
    return PointScales(overall, per_scenario, median=tuple(overall) if median else None)


def earlier_half(times: np.ndarray | None, n: int) -> np.ndarray:
    """[n] bool: the rows of the earlier half of the distinct ``times`` (row order when ``times`` is
    None or has fewer than two distinct values)."""
    if times is not None:
        rank = pd.Series(times).rank(method="dense").to_numpy()
        distinct = int(np.nanmax(rank)) if n else 0
        if distinct >= 2:
            return rank <= distinct // 2
    return np.arange(n) < n // 2


def fit_checked_point_scales(
    tasks: list[Task], labels: dict[str, np.ndarray], preds: dict[str, np.ndarray], scenarios: np.ndarray,
    earlier: np.ndarray, min_rows: int | None = None, median: bool = False,
) -> PointScales:
    """:func:`fit_point_scales` on all rows, each task's factors (and median) kept only when the point
    forecast fitted on the ``earlier`` rows ([N] bool) lowers the NMAE of the other rows against the
    mean (else factor 1 and the mean)."""
    scenarios = np.asarray(scenarios).astype(str)
    earlier = np.asarray(earlier, dtype=bool)
    half = fit_point_scales(tasks, {k: v[earlier] for k, v in labels.items()}, {k: v[earlier] for k, v in preds.items()},
                            scenarios[earlier], min_rows, median)
    whole = fit_point_scales(tasks, labels, preds, scenarios, min_rows, median)
    overall, per_scenario, holdout = {}, {}, {}
    for task in tasks:
        if task.name not in whole.overall:
            continue
        later = ~earlier & (np.isin(scenarios, task.scenarios) if task.scenarios else True)
        y, mu = labels[task.name][later], preds[task.name][later]
        total = float(np.abs(y).sum())
        mean = float(np.abs(y - mu).sum()) / total if total > 0 else None
        scaled = float(np.abs(y - half.apply({task.name: mu}, scenarios[later])[task.name]).sum()) / total if total > 0 else None
        kept = mean is not None and scaled < mean
        holdout[task.name] = {"mean": mean, "scaled": scaled, "kept": kept}
        overall[task.name] = whole.overall[task.name] if kept else 1.0
        per_scenario[task.name] = whole.scenarios[task.name] if kept else {}
    kept_median = tuple(t for t in overall if holdout[t]["kept"]) if median else None
    return PointScales(overall, per_scenario, holdout, kept_median)


def save_point_scales(scales: PointScales, run_dir: Path) -> None:
    atomic_write_text(run_dir / POINT_FILE, scales.to_json())


def load_point_scales(run_dir: Path) -> PointScales | None:
    """The run's point forecast, or None when it was trained with ``train.point_forecast: mean``."""
    path = Path(run_dir) / POINT_FILE
    return PointScales.from_json(path.read_text(), str(path)) if path.is_file() else None
