"""Input validation: every problem is reported with file, column and what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.spec.dataset import DatasetSpec, TaskKind
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


def label_column(frame: pd.DataFrame, column: str, kind: TaskKind) -> np.ndarray:
    """A task's labels, checked against its kind."""
    y = numeric_column(frame, column, allow_missing=False)
    bad, rule = rules(kind).label_problem(y)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(source_of(frame), column, f"{rule}, got {y[row]:g} in data row {row + 1}")
    return y


def validate_frame(frame: pd.DataFrame, spec: DatasetSpec, with_labels: bool) -> None:
    """Check columns, dense values and (optionally) labels before anything is fitted or scored."""
    require_columns(frame, spec.required_columns(with_labels=with_labels))
    for feat in (*spec.features.dense, *spec.scenario.attributes.dense):
        numeric_column(frame, feat.column)
    if with_labels:
        for task in spec.tasks:
            label_column(frame, task.label, task.kind)
        if spec.sample_weight:
            w = numeric_column(frame, spec.sample_weight, allow_missing=False)
            if (w < 0).any():
                raise DataError(source_of(frame), spec.sample_weight, "sample weights must be >= 0")
