"""Input validation: every problem is reported with file, column and what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.spec.dataset import DatasetSpec, Task, TaskKind
from msmt.spec.errors import DataError
from msmt.spec.fitted import FittedSchema
from msmt.spec.task_kinds import rules


def require_columns(frame: pd.DataFrame, columns: list[str]) -> None:
    for col in columns:
        if col not in frame.columns:
            raise DataError(source_of(frame), col, "missing column")


FLOAT32_MAX = float(np.finfo(np.float32).max)  # tensors are float32: a larger magnitude would become inf


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def numeric_column(frame: pd.DataFrame, column: str, allow_missing: bool = True, min_value: float | None = None, why: str = "") -> np.ndarray:
    """The column as float64; a value that is not a number, not finite, outside float32's range
    or (``min_value``) too small is an error naming the column, the data row and the value."""
    values = frame[column]
    if isinstance(values, pd.DataFrame):  # two columns of that name (a Parquet file may hold them)
        raise DataError(source_of(frame), column, "duplicate column name")
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        row = _first(bad.to_numpy())
        raise DataError(source_of(frame), column, f"non-numeric value {values.iloc[row]!r} in data row {row + 1}")
    out = numeric.to_numpy(dtype=np.float64)
    missing = np.isnan(out)
    if not allow_missing and missing.any():
        raise DataError(source_of(frame), column, f"missing value in data row {_first(missing) + 1}")
    present = np.where(missing, 0.0, out)
    infinite = ~np.isfinite(present)
    if infinite.any():
        row = _first(infinite)
        raise DataError(source_of(frame), column, f"infinite value {values.iloc[row]!r} in data row {row + 1}")
    huge = np.abs(present) > FLOAT32_MAX
    if huge.any():
        row = _first(huge)
        raise DataError(source_of(frame), column, f"value {out[row]:g} in data row {row + 1} is outside the float32 range (|x| <= {FLOAT32_MAX:.3g})")
    if min_value is not None:
        low = present < min_value
        if low.any():
            row = _first(low)
            raise DataError(source_of(frame), column, f"{why or 'values must be'} >= {min_value:g}, got {out[row]:g} in data row {row + 1}")
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
        row = _first(bad)
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
        if feat.transform == "log1p":
            numeric_column(frame, feat.column, min_value=0.0, why="transform log1p needs values")
        else:
            numeric_column(frame, feat.column)
    if spec.panel is not None:
        for metric in spec.panel.metrics:
            if metric in frame.columns:  # unlabelled data to score may lack them
                numeric_column(frame, metric, min_value=0.0, why="a panel metric (log1p in the history) needs values")
    if with_labels:
        for task in spec.tasks:
            rows = task_rows(frame, spec, task)
            label_column(frame, task.label, task.kind, rows)
            if task.weight_column:
                weight_values(frame, task.weight_column, rows)
        if spec.sample_weight:
            weight_values(frame, spec.sample_weight)


def check_scenarios(frame: pd.DataFrame, schema: FittedSchema) -> None:
    """The one rule for scenarios in data to score (``evaluate``, ``predict``, ``adapt``; the
    service applies the same rule to requests): every row names its scenario, and a scenario
    unseen in training is an error unless the dataset describes scenarios by attributes
    (``scenario.attributes``); then it is scored as the unknown scenario (index 0) from its
    attributes, which is what M2M's zero-shot scoring of a new scenario needs."""
    column = schema.spec.scenario.column
    values = frame[column]
    missing = values.isna().to_numpy() | (values.astype("string").str.strip() == "").fillna(True).to_numpy()
    if missing.any():
        raise DataError(source_of(frame), column, f"missing scenario in data row {_first(missing) + 1}")
    if schema.spec.scenario.attributes.columns:
        return
    unseen = ~values.astype(str).isin(set(schema.scenarios)).to_numpy()
    if unseen.any():
        row = _first(unseen)
        raise DataError(
            source_of(frame), column,
            f"scenario {values.iloc[row]!r} in data row {row + 1} was not seen in training (known: {list(schema.scenarios)}); "
            "a new scenario can be scored only when the dataset declares scenario attributes",
        )
