"""The one evaluator: every task's metrics, overall and per scenario.

Used by ``train`` (validation each epoch), ``evaluate``, ``report`` and ``bench``, so a number
means the same thing everywhere. Output shape (DESIGN.md, the ``M`` contract)::

    {"rows": N,
     "overall":   {task: {metric: value, ..., "rows": n}},
     "scenarios": {scenario: {task: {metric: value, ..., "rows": n}}},
     "oracle":    {"overall": ..., "scenarios": ...}}   # only with true_<task> columns

Binary tasks: ``auc`` (None when only one class is present), ``logloss``.
Count and regression tasks: ``smape`` (0/0 counts as 0), ``nmae`` = sum|y-p| / sum|y|,
``mape`` over non-zero labels, ``rmse``; counts also ``poisson_deviance``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.metrics import log_loss, mean_poisson_deviance, roc_auc_score

from msmt.spec.dataset import Task, TaskKind

EPS = 1e-12
HIGHER_IS_BETTER = {"auc"}


def smape(y: np.ndarray, p: np.ndarray) -> float:
    """mean(|y - p| / ((|y| + |p|) / 2)), with 0/0 counted as zero error."""
    denom = (np.abs(y) + np.abs(p)) / 2.0
    err = np.abs(y - p)
    ratio = np.divide(err, denom, out=np.zeros_like(err, dtype=np.float64), where=denom > 0)
    return float(ratio.mean())


def nmae(y: np.ndarray, p: np.ndarray) -> float | None:
    total = np.abs(y).sum()
    return float(np.abs(y - p).sum() / total) if total > 0 else None


def mape(y: np.ndarray, p: np.ndarray) -> float | None:
    nz = y != 0
    return float(np.mean(np.abs(y[nz] - p[nz]) / np.abs(y[nz]))) if nz.any() else None


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    return {"auc": auc, "logloss": float(log_loss(y, p, labels=[0, 1]))}


def value_metrics(y: np.ndarray, p: np.ndarray, count: bool) -> dict[str, float | None]:
    y = y.astype(np.float64)
    p = p.astype(np.float64)
    out = {
        "smape": smape(y, p),
        "nmae": nmae(y, p),
        "mape": mape(y, p),
        "rmse": float(np.sqrt(np.mean((y - p) ** 2))),
    }
    if count:
        out["poisson_deviance"] = float(mean_poisson_deviance(y, np.clip(p, EPS, None)))
    return out


def task_metrics(task: Task, y: np.ndarray, p: np.ndarray) -> dict[str, float | int | None]:
    if task.kind == TaskKind.BINARY:
        out = binary_metrics(y, p)
    else:
        out = value_metrics(y, p, count=task.kind == TaskKind.COUNT)
    return {**out, "rows": int(len(y))}


def _grouped(tasks, labels, preds, scenarios) -> dict:
    overall = {t.name: task_metrics(t, labels[t.name], preds[t.name]) for t in tasks}
    per_scenario = {}
    for s in sorted(np.unique(scenarios).tolist(), key=str):
        rows = scenarios == s
        per_scenario[str(s)] = {t.name: task_metrics(t, labels[t.name][rows], preds[t.name][rows]) for t in tasks}
    return {"overall": overall, "scenarios": per_scenario}


def compute_metrics(
    tasks: tuple[Task, ...] | list[Task],
    labels: Mapping[str, np.ndarray],
    preds: Mapping[str, np.ndarray],
    scenarios: np.ndarray,
    truth: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Metrics per task, overall and per scenario (and for the oracle when ``truth`` is given).

    Args:
        labels / preds / truth: task name -> [N] arrays; preds are probabilities or expected
            values (not logits); truth holds the generator's true expected values.
        scenarios: [N] scenario values (raw names, as in the data).
    """
    out = {"rows": int(len(scenarios)), **_grouped(tasks, labels, preds, scenarios)}
    if truth:
        oracle_tasks = [t for t in tasks if t.name in truth]
        if oracle_tasks:
            out["oracle"] = _grouped(oracle_tasks, labels, truth, scenarios)
    return out


def monitor_value(metrics: dict, monitor: str) -> tuple[float, bool]:
    """``"click.auc"`` -> (value, higher_is_better) from the overall block."""
    task, _, metric = monitor.partition(".")
    value = metrics["overall"][task][metric]
    return (float("nan") if value is None else float(value)), metric in HIGHER_IS_BETTER
