"""A key's earlier outcomes as dense features: what a user did before each row (``dataset.behaviour``).

For row i with key k and time t, the *earlier rows* are the history rows of key k with time < t
(strictly: rows logged at the same time never see each other's labels), the latest ``length`` of
them. Per task in ``behaviour.tasks`` the feature is the smoothed rate

    rate = (Σ labels of the earlier rows + prior · m) / (#earlier rows with a label + prior)

with m the task's training mean (:func:`behaviour_priors`, kept in the run's schema), and the
count feature is the number of earlier rows (log1p, as the spec declares it). With no earlier
row the rate is m: a key never seen is scored at the population's rate, like the OOV prior of an
ID embedding, but here every later row of a new user moves it.

History rows are the ``context`` rows (the splits before this one, ``--context`` files) and, with
``own_history`` and labels present, the frame's own rows. The computation is vectorised: all
rows' (key, time) are ranked together, the history is sorted by (key, time rank), and per query
row two binary searches give its key's earlier rows as one slice of cumulative sums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from msmt.data.encoders import text
from msmt.data.io import source_of
from msmt.data.validate import numeric_column, require_columns, task_rows
from msmt.spec.dataset import DatasetSpec
from msmt.spec.errors import DataError


def time_order(frame: pd.DataFrame, column: str) -> np.ndarray:
    """[N] float64 values that order the rows by ``column``: numbers as they are (also numbers held
    as text or in an object column, as a request gives them), else dates (a datetime column or text
    that parses as dates) as nanoseconds since 1970; a missing or unreadable value is an error."""
    require_columns(frame, [column])
    values = frame[column]
    if not pd.api.types.is_datetime64_any_dtype(values):
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() or pd.api.types.is_numeric_dtype(values):
            return numeric_column(frame, column, allow_missing=False)
    parsed = pd.to_datetime(values, errors="coerce")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataError(source_of(frame), column, f"neither a number nor a date: {values.iloc[row]!r}", row=row)
    return parsed.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)


def _labels(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """[N, T] float64 labels of the behaviour tasks (NaN where a row's scenario lacks the task or the value is missing)."""
    cols = []
    for name in spec.behaviour.tasks:
        task = spec.task(name)
        y = numeric_column(frame, task.label)
        cols.append(np.where(task_rows(frame, spec, task), y, np.nan))
    return np.stack(cols, axis=1)


def behaviour_priors(train: pd.DataFrame, spec: DatasetSpec) -> dict[str, float]:
    """``{task: training mean of its label}`` over the rows that have the task: the ``m`` of each rate."""
    labels = _labels(train, spec)
    return {name: float(np.nanmean(labels[:, j])) if np.isfinite(labels[:, j]).any() else 0.0
            for j, name in enumerate(spec.behaviour.tasks)}


def has_labels(frame: pd.DataFrame, spec: DatasetSpec) -> bool:
    return all(spec.task(name).label in frame.columns for name in spec.behaviour.tasks)


def behaviour_values(
    frame: pd.DataFrame, spec: DatasetSpec, priors: dict[str, float],
    context: pd.DataFrame | None = None, own_history: bool = True,
) -> np.ndarray:
    """[N, T + 1] float64: per behaviour task its smoothed earlier rate, then the number of earlier
    rows (raw; the spec's ``log1p`` transform is applied with the other dense features)."""
    b = spec.behaviour
    require_columns(frame, [b.key, b.time])
    parts = []
    if context is not None and len(context):
        require_columns(context, [b.key, b.time, *(spec.task(t).label for t in b.tasks)])
        parts.append(context)
    if own_history and has_labels(frame, spec):
        parts.append(frame)
    T = len(b.tasks)
    prior_m = np.array([priors[t] for t in b.tasks], dtype=np.float64)
    out = np.empty((len(frame), T + 1), dtype=np.float64)
    out[:, :T] = prior_m
    out[:, T] = 0.0
    if not parts or not len(frame):
        return out
    h_keys = np.concatenate([text(p[b.key]).to_numpy(dtype=object) for p in parts])
    h_time = np.concatenate([time_order(p, b.time) for p in parts])
    h_y = np.concatenate([_labels(p, spec) for p in parts])
    q_keys = text(frame[b.key]).to_numpy(dtype=object)
    q_time = time_order(frame, b.time)

    codes, _ = pd.factorize(np.concatenate([h_keys, q_keys]))
    ranks = np.unique(np.concatenate([h_time, q_time]), return_inverse=True)[1].reshape(-1)
    stride = np.int64(ranks.max() + 2)
    comb = codes.astype(np.int64) * stride + ranks.astype(np.int64)
    h_comb, q_comb = comb[: len(h_keys)], comb[len(h_keys):]
    q_code = codes[len(h_keys):].astype(np.int64)

    order = np.argsort(h_comb, kind="stable")
    h_sorted = h_comb[order]
    y = h_y[order]
    known = np.isfinite(y)
    sums = np.vstack([np.zeros((1, T)), np.cumsum(np.where(known, y, 0.0), axis=0)])  # [H + 1, T]
    counts = np.vstack([np.zeros((1, T)), np.cumsum(known, axis=0)])

    end = np.searchsorted(h_sorted, q_comb, side="left")  # first history row at or after (key, time)
    start = np.searchsorted(h_sorted, q_code * stride, side="left")  # the key's first history row
    lo = np.maximum(start, end - b.length)
    n = counts[end] - counts[lo]
    out[:, :T] = (sums[end] - sums[lo] + b.prior * prior_m) / np.maximum(n + b.prior, 1e-12)
    out[:, :T] = np.where(n + b.prior > 0, out[:, :T], prior_m)
    out[:, T] = end - lo
    return out


def add_behaviour(
    frame: pd.DataFrame, spec: DatasetSpec, priors: dict[str, float],
    context: pd.DataFrame | None = None, own_history: bool = True,
) -> pd.DataFrame:
    """A copy of ``frame`` with the ``behaviour.*`` columns (:func:`behaviour_values`)."""
    values = behaviour_values(frame, spec, priors, context, own_history)
    out = frame.copy()
    for j, name in enumerate(spec.behaviour.feature_names):
        out[name] = values[:, j]
    out.attrs = dict(frame.attrs)
    return out
