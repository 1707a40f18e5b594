"""Error measures of one task on one set of rows (NumPy in, Python numbers out).

The definitions of DESIGN.md and MODELS.md: SMAPE = mean(|y − p| / ((|y| + |p|) / 2)) with 0/0
counted as zero error; NMAE = Σ|y − p| / Σ|y|; MAPE over the rows with y ≠ 0; RMSE; AUC and
log loss from scikit-learn. Which measures a task reports is its kind's entry in
:mod:`msmt.spec.task_kinds`; grouping by scenario is :mod:`msmt.evaluation.metrics`.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


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


def binary_measures(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """``auc`` (None when only one class is present) and ``logloss`` of probabilities ``p``."""
    from sklearn.metrics import log_loss, roc_auc_score  # on use: importing scikit-learn takes ~1 s

    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    return {"auc": auc, "logloss": float(log_loss(y, p, labels=[0, 1]))}


def value_measures(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """``smape``, ``nmae``, ``mape`` and ``rmse`` of predicted values ``p``."""
    y = y.astype(np.float64)
    p = p.astype(np.float64)
    return {
        "smape": smape(y, p),
        "nmae": nmae(y, p),
        "mape": mape(y, p),
        "rmse": float(np.sqrt(np.mean((y - p) ** 2))),
    }


def negative_binomial_deviance(y: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """[N] NB2 unit deviances 2·[ℓ(y; y) − ℓ(μ; y)] = 2·[y log(y/μ) − (y + 1/α) log((1 + αy)/(1 + αμ))]
    (0·log 0 = 0), the negative-binomial counterpart of the Poisson deviance."""
    y, mu, alpha = (np.asarray(v, dtype=np.float64) for v in (y, mu, alpha))
    mu = np.clip(mu, EPS, None)
    ratio = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return 2.0 * (ratio - (y + 1.0 / alpha) * np.log1p(alpha * y) + (y + 1.0 / alpha) * np.log1p(alpha * mu))


def count_measures(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """:func:`value_measures` plus the mean Poisson deviance of expected counts ``p``."""
    from sklearn.metrics import mean_poisson_deviance

    out = value_measures(y, p)
    out["poisson_deviance"] = float(mean_poisson_deviance(y.astype(np.float64), np.clip(p.astype(np.float64), EPS, None)))
    return out
