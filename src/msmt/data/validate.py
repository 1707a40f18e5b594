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


def _cell(value):
    """A cell as its reader wrote it: the file's text, or a plain Python number (``inf``, not ``np.float64(inf)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def number_problem(
    values: np.ndarray, allow_missing: bool = True, min_value: float | None = None, why: str = "", shown=None,
) -> tuple[int, str] | None:
    """The rule for numbers, shared by files (:func:`numeric_column`) and the service's requests
    (:func:`msmt.serving.request.check_numbers`): ``(row, problem)`` of the first value of
    ``values`` (float64, NaN = missing) that is missing where not allowed, infinite, outside
    float32's range or below ``min_value``; None when every value passes. ``shown(row)``: the
    value as the caller's input wrote it (the file's text)."""
    shown = shown or (lambda row: values[row])
    missing = np.isnan(values)
    if not allow_missing and missing.any():
        return _first(missing), "missing value"
    present = np.where(missing, 0.0, values)
    infinite = ~np.isfinite(present)
    if infinite.any():
        row = _first(infinite)
        return row, f"infinite value {shown(row)!r}"
    huge = np.abs(present) > FLOAT32_MAX
    if huge.any():
        row = _first(huge)
        return row, f"value {values[row]:g} is outside the float32 range (|x| <= {FLOAT32_MAX:.3g})"
    if min_value is not None:
        low = present < min_value
        if low.any():
            row = _first(low)
            return row, f"{why or 'values must be'} >= {min_value:g}, got {values[row]:g}"
    return None


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
        raise DataError(source_of(frame), column, f"non-numeric value {_cell(values.iloc[row])!r}", row=row)
    out = numeric.to_numpy(dtype=np.float64)
    problem = number_problem(out, allow_missing, min_value, why, shown=lambda row: _cell(values.iloc[row]))
    if problem is not None:
        raise DataError(source_of(frame), column, problem[1], row=problem[0])
    return out


#: ``min_value`` and its reason of each numeric input rule (:func:`numeric_rules`)
LOG1P_WHY = "transform log1p needs values"
METRIC_WHY = "a panel metric (log1p in the history) needs values"


def numeric_rules(spec: DatasetSpec) -> list[tuple[str, float | None, str]]:
    """``(column, min_value, why)`` of every numeric input a row to score may hold: dense
    features and scenario attributes (>= 0 under ``log1p``), panel metrics (>= 0). Checked by
    :func:`validate_frame` on files and by the service on requests: one list, two callers.
    The ``behaviour.*`` features are computed, never read, so they have no rule."""
    out = []
    derived = spec.derived_columns
    for feat in (*spec.features.dense, *spec.scenario.attributes.dense):
        if feat.column in derived:
            continue
        out.append((feat.column, 0.0, LOG1P_WHY) if feat.transform == "log1p" else (feat.column, None, ""))
    if spec.panel is not None:
        out += [(metric, 0.0, METRIC_WHY) for metric in spec.panel.metrics]
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
            raise DataError(source_of(frame), column, "missing value", row=_first(missing))
        y = np.where(rows, y, 0.0)
    else:
        y = numeric_column(frame, column, allow_missing=False)
    bad, rule = rules(kind).label_problem(y)
    if bad.any():
        row = _first(bad)
        raise DataError(source_of(frame), column, f"{rule}, got {y[row]:g}", row=row)
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
            raise DataError(source_of(frame), column, "missing value", row=_first(missing))
        w = np.where(rows, w, 0.0)
    if (w < 0).any():
        raise DataError(source_of(frame), column, "sample weights must be >= 0")
    return w


def validate_frame(frame: pd.DataFrame, spec: DatasetSpec, with_labels: bool) -> None:
    """Check columns, dense values and (optionally) labels before anything is fitted or scored."""
    require_columns(frame, spec.required_columns(with_labels=with_labels))
    metrics = set(spec.panel.metrics) if spec.panel is not None else set()
    for column, min_value, why in numeric_rules(spec):
        if column in frame.columns or column not in metrics:  # unlabelled data to score may lack the metrics
            numeric_column(frame, column, min_value=min_value, why=why)
    if with_labels:
        for task in spec.tasks:
            rows = task_rows(frame, spec, task)
            label_column(frame, task.label, task.kind, rows)
            if task.weight_column:
                weight_values(frame, task.weight_column, rows)
        if spec.sample_weight:
            weight_values(frame, spec.sample_weight)


def scenario_value_problem(value, schema: FittedSchema) -> str | None:
    """The one rule for a scenario value in data to score: it must be given (not missing, not
    blank) and, unless the dataset declares scenario attributes, seen in training (``259`` and
    ``"259"`` are the same scenario, as the scenario column is read as text)."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value) or not str(value).strip():
        return "missing scenario"
    if not schema.spec.scenario.attributes.columns and str(value) not in schema.scenarios:
        return (
            f"scenario {value!r} was not seen in training (known: {list(schema.scenarios)}); "
            "a new scenario can be scored only when the dataset declares scenario attributes"
        )
    return None


def scenario_problem(values: pd.Series | list, schema: FittedSchema) -> tuple[int, str] | None:
    """``(row, problem)`` of the first row whose scenario breaks :func:`scenario_value_problem`,
    None when every row passes. Shared by files (:func:`check_scenarios`, a column: the rule runs
    once per distinct value) and the service's requests (a short list of values)."""
    if isinstance(values, pd.Series):
        firsts = values.reset_index(drop=True).drop_duplicates()  # each distinct value at its first row
        bad = [(int(row), problem) for row, v in firsts.items() if (problem := scenario_value_problem(v, schema))]
        return min(bad) if bad else None
    seen: dict = {}
    for row, v in enumerate(values):
        key = (type(v), v)
        if key not in seen:
            seen[key] = scenario_value_problem(v, schema)
            if seen[key]:
                return row, seen[key]
    return None


def check_scenarios(frame: pd.DataFrame, schema: FittedSchema) -> None:
    """The one rule for scenarios in data to score (``evaluate``, ``predict``, ``adapt``; the
    service applies the same rule to requests): every row names its scenario, and a scenario
    unseen in training is an error unless the dataset describes scenarios by attributes
    (``scenario.attributes``); then it is scored as the unknown scenario (index 0) from its
    attributes, which is what M2M's zero-shot scoring of a new scenario needs."""
    column = schema.spec.scenario.column
    problem = scenario_problem(frame[column], schema)
    if problem is not None:
        raise DataError(source_of(frame), column, problem[1], row=problem[0])
