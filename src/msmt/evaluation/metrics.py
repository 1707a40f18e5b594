"""The one evaluator: every task's metrics, overall and per scenario.

Used by ``train`` (validation each epoch), ``evaluate``, ``report`` and ``bench``, so a number
means the same thing everywhere. Output shape (DESIGN.md, the ``M`` contract)::

    {"rows": N,
     "overall":   {task: {metric: value, ..., "rows": n}},
     "scenarios": {scenario: {task: {metric: value, ..., "rows": n}}},
     "oracle":    {"overall": ..., "scenarios": ...},  # only with true_<task> columns
     "cohorts":   {"<group> ∈ train": {task: ...}, "<group> ∉ train": {task: ...}}}  # only with a declared group

``cohorts`` splits the rows by whether their group (``dataset.group``: the user, the advertiser)
has its own row in the training vocabulary of that column (:func:`cohort_labels`): a model's score
on users it has never seen is the cold-start number, and it can differ from the overall one.

A task declared for some scenarios only (``tasks.<name>.scenarios``) is measured on the rows of
those scenarios: it has no entry in another scenario's block, and its overall entry (and
``rows``) covers its own rows only.

Which measures a task gets is its kind's entry in :mod:`msmt.spec.task_kinds` (definitions in
:mod:`msmt.spec.measures`): binary ``auc`` (None when only one class is present), ``logloss``;
count and regression ``smape``, ``nmae``, ``mape``, ``rmse``; counts also ``poisson_deviance``.
A run trained with ``train.point_forecast: scaled | median`` scores a count task's ``smape``, ``nmae`` and
``mape`` on its point forecast for absolute errors (:mod:`msmt.scoring.point`), the rest on the mean.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from msmt.scoring.point import ABSOLUTE_MEASURES
from msmt.spec.dataset import Task
from msmt.spec.task_kinds import higher_is_better, rules


def task_metrics(task: Task, y: np.ndarray, p: np.ndarray) -> dict[str, float | int | None]:
    return {**rules(task).measures(y, p), "rows": int(len(y))}


def _block(tasks, labels, preds, rows, per_row, present, points=None) -> dict:
    """Metrics of each task on ``rows`` ([N] bool) where it exists; a task with no such row is left out.
    ``points``: {task: [N] point forecast} whose absolute-error measures replace the mean's."""
    out = {}
    for t in tasks:
        where = present[t.name] if rows is None else rows & present[t.name]
        if not where.any():
            continue
        y, p = labels[t.name], preds[t.name]
        out[t.name] = task_metrics(t, y[where], p[where])
        if points and t.name in points:
            of_point = rules(t).measures(y[where], points[t.name][where])
            out[t.name].update({m: of_point[m] for m in ABSOLUTE_MEASURES if m in of_point})
        for measure, values in per_row.get(t.name, {}).items():  # means of per-row measures
            out[t.name][measure] = float(np.mean(values[where]))
    return out


COHORTS = ("∈ train", "∉ train")  # the group value has its own training row / has none


def cohort_labels(group: str, seen: np.ndarray) -> np.ndarray:
    """[N] ``"<group> ∈ train"`` / ``"<group> ∉ train"`` from [N] bool (the group value has its own training row)."""
    return np.where(np.asarray(seen, dtype=bool), f"{group} {COHORTS[0]}", f"{group} {COHORTS[1]}").astype(object)


def is_cohort(name: str) -> bool:
    """Whether a group name of the metrics (or a leaderboard's ``scenario`` column) is a cohort."""
    return str(name).endswith(tuple(f" {c}" for c in COHORTS))


def _present(tasks, scenarios: np.ndarray) -> dict[str, np.ndarray]:
    """task -> [N] bool: a task declared for some scenarios only (``tasks.<name>.scenarios``) is measured on those rows only."""
    return {t.name: np.isin(scenarios.astype(str), t.scenarios) if t.scenarios else np.ones(len(scenarios), bool) for t in tasks}


def _grouped(tasks, labels, preds, scenarios, per_row=None, points=None) -> dict:
    per_row = per_row or {}
    scenarios = np.asarray(scenarios)
    present = _present(tasks, scenarios)
    overall = _block(tasks, labels, preds, None, per_row, present, points)
    per_scenario = {
        str(s): _block(tasks, labels, preds, scenarios == s, per_row, present, points)
        for s in sorted(np.unique(scenarios).tolist(), key=str)
    }
    return {"overall": overall, "scenarios": {s: block for s, block in per_scenario.items() if block}}


def compute_metrics(
    tasks: tuple[Task, ...] | list[Task],
    labels: Mapping[str, np.ndarray],
    preds: Mapping[str, np.ndarray],
    scenarios: np.ndarray,
    truth: Mapping[str, np.ndarray] | None = None,
    per_row: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    cohorts: np.ndarray | None = None,
    points: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Metrics per task, overall and per scenario (and for the oracle when ``truth`` is given).

    Args:
        labels / preds / truth: task name -> [N] arrays; preds are probabilities or expected
            values (not logits); truth holds the generator's true expected values.
        scenarios: [N] scenario values (raw names, as in the data).
        per_row: {task: {measure: [N] per-row values}} reported as their mean in each group (e.g.
            the negative-binomial deviance, which needs the model's dispersion of each row).
        cohorts: [N] cohort names (:func:`cohort_labels`), measured into ``out["cohorts"]``.
        points: {task: [N] point forecast for absolute errors} (:mod:`msmt.scoring.point`): a
            task's ``nmae``, ``smape`` and ``mape`` are then of it, its other measures of ``preds``.
    """
    out = {"rows": int(len(scenarios)), **_grouped(tasks, labels, preds, scenarios, per_row, points)}
    if cohorts is not None:
        cohorts, present = np.asarray(cohorts), _present(tasks, np.asarray(scenarios))
        blocks = {
            str(c): _block(tasks, labels, preds, cohorts == c, per_row or {}, present, points) for c in sorted(np.unique(cohorts).tolist())
        }
        out["cohorts"] = {c: block for c, block in blocks.items() if block}
    if truth:
        oracle_tasks = [t for t in tasks if t.name in truth]
        if oracle_tasks:
            out["oracle"] = _grouped(oracle_tasks, labels, truth, scenarios)
    return out


def monitor_value(metrics: dict, monitor: str) -> tuple[float, bool]:
    """``"click.auc"`` -> (value, higher_is_better) from the overall block."""
    task, _, metric = monitor.partition(".")
    value = metrics["overall"][task][metric]
    return (float("nan") if value is None else float(value)), higher_is_better(metric)
