"""Request validation generated from a run's ``schema.json``.

A row holds the raw values as they appear in the data files, keyed by column name:

* scenario column and sparse columns (features and scenario attributes): string or integer
  (``259`` and ``"259"`` are the same category, as in :mod:`msmt.data.io`), or ``null``;
* dense columns: a finite number or ``null`` (missing: encoded as the training mean);
* multi-valued columns: the separator-joined string (``"Comedy Romance"``), a list of strings,
  or ``null``;
* the group column (``dataset.group``), when it is not a feature already: optional.

Every feature column is required (``null`` is allowed, a missing key is not), unknown keys are
rejected (a misspelt column is named), and a scenario unseen in training is rejected unless the
dataset has scenario attributes to describe it. Columns become pydantic fields through aliases,
so a column named like a pydantic attribute (``schema``, ``copy``) is still safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model, field_validator, model_validator

from msmt.spec.fitted import FittedSchema

Category = Union[StrictStr, StrictInt, None]
Number = Union[Annotated[float, Field(strict=True, allow_inf_nan=False)], None]
Tokens = Union[StrictStr, list[StrictStr], None]


@dataclass(frozen=True)
class Column:
    """One request field: its column name, pydantic field name and kind."""

    column: str
    field: str
    kind: str  # "scenario" | "sparse" | "dense" | "multi" | "group"
    separator: str = " "


def request_columns(schema: FittedSchema) -> list[Column]:
    """The columns a row must (or, for the group, may) hold, in a stable order."""
    spec = schema.spec
    cols: list[Column] = []
    seen: set[str] = set()

    def add(column: str, kind: str, separator: str = " ") -> None:
        if column not in seen:
            seen.add(column)
            cols.append(Column(column, f"f{len(cols)}", kind, separator))

    add(spec.scenario.column, "scenario")
    for fs in (spec.scenario.attributes, spec.features):
        for f in fs.sparse:
            add(f.column, "sparse")
        for f in fs.dense:
            add(f.column, "dense")
        for f in fs.multi_sparse:
            add(f.column, "multi", f.separator)
    if spec.group:
        add(spec.group, "group")
    return cols


_TYPES = {"scenario": Category, "sparse": Category, "dense": Number, "multi": Tokens}


def build_request_models(schema: FittedSchema, max_rows: int) -> tuple[type[BaseModel], type[BaseModel], list[Column]]:
    """``(Row, PredictRequest, columns)`` for this schema; ``PredictRequest.rows`` holds 1..max_rows rows.

    The body is ``{"rows": [row, ...]}``; a bare JSON list of rows is accepted as well.
    """
    cols = request_columns(schema)
    fields: dict[str, Any] = {}
    for c in cols:
        if c.kind == "group":
            fields[c.field] = (Category, Field(default=None, alias=c.column, description="group id (personal block)"))
        else:
            fields[c.field] = (_TYPES[c.kind], Field(..., alias=c.column, description=f"{c.kind} column"))
    scenario_field = cols[0].field
    known = frozenset(schema.scenarios)
    allow_unseen = bool(schema.spec.scenario.attributes.columns)

    def check_scenario(cls, value):
        if value is not None and not allow_unseen and str(value) not in known:
            shown = ", ".join(sorted(known)[:20])
            raise ValueError(
                f"unknown scenario {value!r}: this model has no scenario attributes to score an unseen scenario "
                f"(known: {shown})"
            )
        return value

    row = create_model(
        "Row",
        __config__=ConfigDict(extra="forbid", populate_by_name=False, title="Row"),
        __validators__={"_scenario": field_validator(scenario_field)(check_scenario)},
        **fields,
    )

    def wrap_list(cls, data):
        return {"rows": data} if isinstance(data, list) else data

    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", title="PredictRequest"),
        __validators__={"_wrap": model_validator(mode="before")(wrap_list)},
        rows=(list[row], Field(..., min_length=1, max_length=max_rows, description="rows to score")),
    )
    return row, request, cols


def rows_to_frame(rows: list[BaseModel], cols: list[Column]) -> pd.DataFrame:
    """Validated rows -> the DataFrame that :func:`msmt.data.io.read_table` would have produced."""
    data: dict[str, list] = {}
    for c in cols:
        values = [getattr(r, c.field) for r in rows]
        if c.kind == "dense":
            data[c.column] = pd.array([float("nan") if v is None else float(v) for v in values], dtype="float64")
        elif c.kind == "multi":
            data[c.column] = [c.separator.join(v) if isinstance(v, list) else v for v in values]
        else:
            data[c.column] = [None if v is None else str(v) for v in values]
    frame = pd.DataFrame(data)
    frame.attrs["source"] = "request"
    return frame
