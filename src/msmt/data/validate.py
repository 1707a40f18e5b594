"""Input validation: every problem is reported with file, column and what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.spec.dataset import DatasetSpec, TaskKind
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


def label_column(frame: pd.DataFrame, column: str, kind: TaskKind) -> np.ndarray:
    """A task's labels, checked against its kind."""
    y = numeric_column(frame, column, allow_missing=False)
    bad, rule = rules(kind).label_problem(y)
    if bad.any():
        row = _first(bad)
        raise DataError(source_of(frame), column, f"{rule}, got {y[row]:g} in data row {row + 1}")
    return y


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
            label_column(frame, task.label, task.kind)
        if spec.sample_weight:
            w = numeric_column(frame, spec.sample_weight, allow_missing=False)
            if (w < 0).any():
                raise DataError(source_of(frame), spec.sample_weight, "sample weights must be >= 0")


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
