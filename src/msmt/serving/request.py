"""Request validation generated from a run's ``schema.json``.

A row holds the raw values as they appear in the data files, keyed by column name:

* scenario column and sparse columns (features and scenario attributes): string or integer
  (``259`` and ``"259"`` are the same category, as in :mod:`msmt.data.io`), or ``null``;
* dense columns: a finite number or ``null`` (missing: encoded as the training mean);
* multi-valued columns: the separator-joined string (``"Comedy Romance"``), a list of strings,
  or ``null``;
* the group column (``dataset.group``), when it is not a feature already: optional;
* panel datasets (``panel:``): the entity key columns (string or integer, not null, also when
  they are features or the group) and the time column (an integer step or a date string) are
  required; the panel's metric columns (a finite number
  >= 0 or ``null``) and event column are optional: a row's own values are history for the
  request's later rows of the same unit, exactly as in a file given to ``msmt predict``.

Every feature column is required (``null`` is allowed, a missing key is not). Columns the model
does not read (a label, a split column such as MovieLens' ``timestamp``) are ignored and listed
in the answer (``"ignored"``), so a row taken from a training file scores as ``msmt predict``
scores it; a required column that is missing is still an error, and the error also names the
row's unknown keys (a misspelt column).

After that typing, the rows pass the data pipeline's own rules (:func:`check_values`, the code
that checks files): numbers within float32's range, ``>= 0`` under ``log1p`` and for panel
metrics; every row names its scenario, and a scenario unseen in training is rejected unless the
dataset has scenario attributes to describe it. The body itself is parsed strictly
(:func:`parse_body`): a key twice in one object, or a non-finite number (``NaN``,
``Infinity``, ``1e400``), is an error naming where it is. Columns become pydantic fields through aliases,
so a column named like a pydantic attribute (``schema``, ``copy``) is still safe.

History rows (``context`` of a predict request, ``POST /v1/observe``) hold one unit's outcome of
one time step: the key columns and the time (required, not null), every metric column and the
event column (required, ``null`` = not known), validated like training data (counts and amounts
>= 0, finite).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model, field_validator, model_validator

from msmt.data.validate import number_problem, numeric_rules, scenario_problem
from msmt.spec.fitted import FittedSchema

Category = Union[StrictStr, StrictInt, None]
Number = Union[Annotated[float, Field(strict=True, allow_inf_nan=False)], None]
Tokens = Union[StrictStr, list[StrictStr], None]
Key = Union[StrictStr, StrictInt]
Time = Union[StrictInt, StrictStr, Annotated[float, Field(strict=True, allow_inf_nan=False)]]
Amount = Union[Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)], None]

#: what a value of each kind must be (error messages)
EXPECTED = {
    "scenario": "must be a string, an integer or null",
    "sparse": "must be a string, an integer or null",
    "group": "must be a string, an integer or null",
    "event": "must be a string, an integer or null",
    "key": "must be a string or an integer (a unit key, not null)",
    "time": "must be an integer step or a date string (not null)",
    "instant": "must be a number or a date string (not null)",
    "dense": "must be a finite number or null",
    "metric": "must be a finite number >= 0 or null (a count or an amount)",
    "multi": "must be a string, a list of strings or null",
}


class FieldError(ValueError):
    """A request problem found after pydantic's validation; ``field`` as ``rows[3].day``."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Column:
    """One request field: its column name, pydantic field name and kind."""

    column: str
    field: str
    kind: str  # "scenario" | "sparse" | "dense" | "multi" | "group" | "key" | "time" | "instant" | "metric" | "event"
    separator: str = " "
    required: bool = True


def request_columns(schema: FittedSchema) -> list[Column]:
    """The columns a row to score must (or may) hold, in a stable order."""
    spec = schema.spec
    cols: list[Column] = []
    seen: set[str] = set()
    unit_keys = set(spec.panel.keys) - {spec.scenario.column} if spec.panel else set()

    def add(column: str, kind: str, separator: str = " ", required: bool = True) -> None:
        if column in unit_keys:  # a feature or the group that is also a unit key: required, not null
            kind, required = "key", True
        if column not in seen:
            seen.add(column)
            cols.append(Column(column, f"f{len(cols)}", kind, separator, required))

    derived = spec.derived_columns  # computed from the request's context rows
    add(spec.scenario.column, "scenario")
    for fs in (spec.scenario.attributes, spec.features):
        for f in fs.sparse:
            add(f.column, "sparse")
        for f in fs.dense:
            if f.column not in derived:
                add(f.column, "dense")
        for f in fs.multi_sparse:
            add(f.column, "multi", f.separator)
    if spec.group:
        add(spec.group, "group", required=False)
    if spec.panel:
        for key in spec.panel.keys:
            add(key, "key")
        add(spec.panel.time, "time")
        for metric in spec.panel.metrics:
            add(metric, "metric", required=False)
        if spec.panel.event:
            add(spec.panel.event, "event", required=False)
    if spec.behaviour:
        add(spec.behaviour.key, "key")
        add(spec.behaviour.time, "instant")
    return cols


def history_columns(schema: FittedSchema) -> list[Column]:
    """The columns of a history row: one unit's outcome of one step (panel), or one earlier row of
    a key with its labels (``dataset.behaviour``); empty without either."""
    spec = schema.spec
    if spec.behaviour is not None:
        b = spec.behaviour
        names = [(b.key, "key"), (b.time, "instant")] + [(spec.task(t).label, "metric") for t in b.tasks]
        return [Column(c, f"f{i}", kind) for i, (c, kind) in enumerate(names)]
    panel = spec.panel
    if panel is None:
        return []
    names = [(k, "key") for k in panel.keys] + [(panel.time, "time")] + [(m, "metric") for m in panel.metrics]
    if panel.event:
        names.append((panel.event, "event"))
    return [Column(c, f"f{i}", kind) for i, (c, kind) in enumerate(names)]


_TYPES = {
    "scenario": Category, "sparse": Category, "group": Category, "event": Category, "dense": Number,
    "multi": Tokens, "key": Key, "time": Time, "instant": Time, "metric": Amount,
}


def _fields(cols: list[Column]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for c in cols:
        if c.required:
            fields[c.field] = (_TYPES[c.kind], Field(..., alias=c.column, description=f"{c.kind} column"))
        else:
            fields[c.field] = (_TYPES[c.kind], Field(default=None, alias=c.column, description=f"{c.kind} column (optional)"))
    return fields


def _integral_time(cols: list[Column]) -> dict[str, Any]:
    """A validator per time field: a number must be a whole step (``17.0`` is step 17)."""

    def check(cls, value):
        if isinstance(value, float) and value != round(value):
            raise ValueError(f"a time step must be a whole number or a date string, got {value!r}")
        return value

    return {f"_time_{c.field}": field_validator(c.field)(check) for c in cols if c.kind == "time"}


def _wrap(key: str):
    def wrap_list(cls, data):
        return {key: data} if isinstance(data, list) else data

    return model_validator(mode="before")(wrap_list)


def build_request_models(schema: FittedSchema, max_rows: int) -> tuple[type[BaseModel], type[BaseModel], list[Column]]:
    """``(Row, PredictRequest, columns)`` for this schema; ``PredictRequest.rows`` holds 1..max_rows rows.

    The body is ``{"rows": [row, ...]}`` (panel data: plus an optional ``"context": [history
    row, ...]``); a bare JSON list of rows is accepted as well.
    """
    cols = request_columns(schema)
    row = create_model(
        "Row",
        __config__=ConfigDict(extra="allow", populate_by_name=False, title="Row"),
        __validators__=_integral_time(cols),
        **_fields(cols),
    )
    body: dict[str, Any] = {"rows": (list[row], Field(..., min_length=1, max_length=max_rows, description="rows to score"))}
    spec = schema.spec
    if spec.panel is not None or spec.behaviour is not None:
        history_row = build_history_row(schema)
        per_row = spec.panel.window + 1 if spec.panel is not None else spec.behaviour.length
        body["context"] = (
            list[history_row],
            Field(
                default_factory=list,
                max_length=max_rows * per_row,
                description="earlier rows of the units (panel) or of the keys with their labels (behaviour), "
                            "used only as history (never scored)",
            ),
        )
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", title="PredictRequest"),
        __validators__={"_wrap": _wrap("rows")},
        **body,
    )
    return row, request, cols


def build_history_row(schema: FittedSchema) -> type[BaseModel]:
    """The model of one history row (``context`` item, observation)."""
    cols = history_columns(schema)
    return create_model(
        "HistoryRow",
        __config__=ConfigDict(extra="allow", populate_by_name=False, title="HistoryRow"),
        __validators__=_integral_time(cols),
        **_fields(cols),
    )


def build_observe_model(schema: FittedSchema, max_rows: int) -> tuple[type[BaseModel], list[Column]]:
    """``(ObserveRequest, columns)``: ``{"observations": [history row, ...]}`` or a bare list."""
    history_row = build_history_row(schema)
    request = create_model(
        "ObserveRequest",
        __config__=ConfigDict(extra="forbid", title="ObserveRequest"),
        __validators__={"_wrap": _wrap("observations")},
        observations=(list[history_row], Field(..., min_length=1, max_length=max_rows, description="outcomes to record")),
    )
    return request, history_columns(schema)


def ignored_columns(rows: list[BaseModel]) -> list[str]:
    """The keys of ``rows`` that are no column the model reads (sorted, each once)."""
    seen: set[str] = set()
    for r in rows:
        extra = r.__pydantic_extra__
        if extra:
            seen.update(extra)
    return sorted(seen)


def rows_to_frame(rows: list[BaseModel], cols: list[Column]) -> pd.DataFrame:
    """Validated rows -> the DataFrame that :func:`msmt.data.io.read_table` would have produced."""
    data: dict[str, Any] = {}
    for c in cols:
        values = [getattr(r, c.field) for r in rows]
        if c.kind in ("dense", "metric"):
            data[c.column] = pd.array([float("nan") if v is None else float(v) for v in values], dtype="float64")
        elif c.kind == "multi":
            data[c.column] = [c.separator.join(v) if isinstance(v, list) else v for v in values]
        elif c.kind == "time":
            data[c.column] = pd.Series([int(v) if isinstance(v, float) else v for v in values], dtype=object)
        else:
            data[c.column] = [None if v is None else str(v) for v in values]
    frame = pd.DataFrame(data, index=range(len(rows)))
    frame.attrs["source"] = "request"
    return frame


def check_values(rows: list[BaseModel], cols: list[Column], schema: FittedSchema, part: str) -> None:
    """The data pipeline's rules on typed rows, as :func:`msmt.data.validate.validate_frame` and
    :func:`~msmt.data.validate.check_scenarios` apply them to a file: every numeric column of
    :func:`~msmt.data.validate.numeric_rules` through
    :func:`~msmt.data.validate.number_problem` (float32 range, ``>= 0`` under ``log1p`` and for
    panel metrics) and, for rows to score (``part == "rows"``), the one scenario rule
    (:func:`~msmt.data.validate.scenario_problem`). A problem is a :class:`FieldError` naming
    the item and column (``rows[3].price``)."""
    kinds = {c.column: c for c in cols}
    for column, min_value, why in numeric_rules(schema.spec):
        col = kinds.get(column)
        if col is None or col.kind not in ("dense", "metric"):
            continue
        x = np.array([np.nan if v is None else float(v) for v in (getattr(r, col.field) for r in rows)], dtype=np.float64)
        problem = number_problem(x, min_value=min_value, why=why)
        if problem is not None:
            raise FieldError(f"{part}[{problem[0]}].{column}", problem[1])
    scenario = kinds.get(schema.spec.scenario.column)
    if part == "rows" and scenario is not None and scenario.kind == "scenario":
        problem = scenario_problem([getattr(r, scenario.field) for r in rows], schema)
        if problem is not None:
            raise FieldError(f"{part}[{problem[0]}].{scenario.column}", problem[1])


# ---------------------------------------------------------------------------- strict JSON


class _NonFinite:
    """A number JSON cannot hold (the literal ``NaN`` / ``Infinity`` / ``-Infinity``, or a
    float literal beyond float64 such as ``1e400``), kept so :func:`parse_body` can say where it is."""

    def __init__(self, text: str):
        self.text = text


class _Duplicated(dict):
    """An object that held ``key`` more than once (the last value kept, as ``json.loads`` would)."""

    def __init__(self, pairs: list, key: str):
        super().__init__(pairs)
        self.key = key


def parse_body(raw: bytes | str, top: str = "rows") -> Any:
    """``json.loads`` with the checks JSON parsers skip: a key given twice in one object
    (``object_pairs_hook``: the value would silently be the last one) and a number that is not
    finite (``NaN``, ``Infinity``: not JSON at all; ``1e400``: beyond float64) are a
    :class:`FieldError` naming where (``rows[3].price``; ``top`` names the items of a bare list).
    Malformed JSON raises ``json.JSONDecodeError`` as ``json.loads`` does."""
    flagged = []

    def pairs(items: list):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            first = next(k for k in keys if k in seen or seen.add(k))
            flagged.append(True)
            return _Duplicated(items, first)
        return dict(items)

    def constant(text: str):
        flagged.append(True)
        return _NonFinite(text)

    def number(text: str):
        value = float(text)
        if math.isfinite(value):
            return value
        flagged.append(True)
        return _NonFinite(text)

    tree = json.loads(raw, object_pairs_hook=pairs, parse_constant=constant, parse_float=number)
    if flagged:
        _raise_first(tree, top)
    return tree


def _raise_first(tree: Any, top: str) -> None:
    """The first flagged value of ``tree`` (document order, iteratively: no recursion limit)."""
    stack: list[tuple[Any, str]] = [(tree, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _NonFinite):
            raise FieldError(path or "body", f"{node.text} is not a finite number (JSON numbers are finite; send null for a missing value)")
        if isinstance(node, _Duplicated):
            raise FieldError(_join(path, node.key), "duplicate key: an object must hold each key once")
        if isinstance(node, dict):
            stack.extend((v, _join(path, str(k))) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((v, f"{path or top}[{i}]") for i, v in reversed(list(enumerate(node))))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
