"""Input validation: every problem is reported with file, column and what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.spec.dataset import DatasetSpec, Task, TaskKind
from msmt.spec.errors import DataError
from msmt.spec.task_kinds import rules


def require_columns(frame: pd.DataFrame, columns: list[str]) -> None:
    for col in columns:
        if col not in frame.columns:
            raise DataError(source_of(frame), col, "missing column")


def numeric_column(frame: pd.DataFrame, column: str, allow_missing: bool = True) -> np.ndarray:
    """The column as float64; a non-numeric value is an error naming the row and value."""
    values = frame[column]
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(source_of(frame), column, f"non-numeric value {values.iloc[row]!r} in data row {row + 1}")
    if not allow_missing and numeric.isna().any():
        row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
        raise DataError(source_of(frame), column, f"missing value in data row {row + 1}")
    out = numeric.to_numpy(dtype=np.float64)
    if not np.isfinite(out[~np.isnan(out)]).all():
        raise DataError(source_of(frame), column, "infinite value")
    return out


def label_column(frame: pd.DataFrame, column: str, kind: TaskKind, rows: np.ndarray | None = None) -> np.ndarray:
    """A task's labels, checked against its kind.

    ``rows`` ([N] bool, :func:`task_rows`): where the task exists; elsewhere a label may be
    missing and is not checked, and the returned value there is 0 (never read: no loss, no metric).
    """
    if rows is not None and not rows.all():
        y = numeric_column(frame, column)
        missing = rows & np.isnan(y)
        if missing.any():
            raise DataError(source_of(frame), column, f"missing value in data row {int(np.flatnonzero(missing)[0]) + 1}")
        y = np.where(rows, y, 0.0)
    else:
        y = numeric_column(frame, column, allow_missing=False)
    bad, rule = rules(kind).label_problem(y)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(source_of(frame), column, f"{rule}, got {y[row]:g} in data row {row + 1}")
    return y


def task_rows(frame: pd.DataFrame, spec: DatasetSpec, task: Task) -> np.ndarray:
    """[N] bool: the rows whose scenario has ``task`` (``tasks.<name>.scenarios``; all rows by default)."""
    if task.scenarios is None:
        return np.ones(len(frame), dtype=bool)
    values = frame[spec.scenario.column].astype("string")  # as the scenario column is encoded
    return values.isin(task.scenarios).fillna(False).to_numpy(dtype=bool)


def task_presence(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """[N, T] bool: ``task_rows`` of every task, in ``spec.tasks`` order."""
    if not spec.tasks:
        return np.ones((len(frame), 0), dtype=bool)
    return np.stack([task_rows(frame, spec, t) for t in spec.tasks], axis=1)


def weight_values(frame: pd.DataFrame, column: str, rows: np.ndarray | None = None) -> np.ndarray:
    """A loss-weight column: numeric and >= 0 (missing allowed only outside ``rows``, read as 0)."""
    w = numeric_column(frame, column, allow_missing=rows is not None)
    if rows is not None:
        missing = rows & np.isnan(w)
        if missing.any():
            raise DataError(source_of(frame), column, f"missing value in data row {int(np.flatnonzero(missing)[0]) + 1}")
        w = np.where(rows, w, 0.0)
    if (w < 0).any():
        raise DataError(source_of(frame), column, "sample weights must be >= 0")
    return w


def validate_frame(frame: pd.DataFrame, spec: DatasetSpec, with_labels: bool) -> None:
    """Check columns, dense values and (optionally) labels before anything is fitted or scored."""
    require_columns(frame, spec.required_columns(with_labels=with_labels))
    for feat in (*spec.features.dense, *spec.scenario.attributes.dense):
        numeric_column(frame, feat.column)
    if with_labels:
        for task in spec.tasks:
            rows = task_rows(frame, spec, task)
            label_column(frame, task.label, task.kind, rows)
            if task.weight_column:
                weight_values(frame, task.weight_column, rows)
        if spec.sample_weight:
            weight_values(frame, spec.sample_weight)
