"""Load a dataset's splits as DataFrames, reading categorical columns as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from msmt.data.io import _as_text, read_table
from msmt.data.split import split_frame
from msmt.spec.dataset import DatasetSpec


def string_columns(spec: DatasetSpec) -> list[str]:
    """Columns read as text: scenario, categoricals, multi-valued features, group."""
    cols = [spec.scenario.column]
    for fs in (spec.features, spec.scenario.attributes):
        cols += [f.column for f in (*fs.sparse, *fs.multi_sparse)]
    if spec.group:
        cols.append(spec.group)
    if spec.panel:
        cols += [*spec.panel.keys, *([spec.panel.event] if spec.panel.event else [])]
    if spec.behaviour:
        cols.append(spec.behaviour.key)
    return list(dict.fromkeys(cols))


def read_data(path: str | Path, spec: DatasetSpec) -> pd.DataFrame:
    return read_table(path, string_columns(spec))


def frame_as_read(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A table given in memory, typed as :func:`read_data` types a file (categoricals as text)."""
    out = frame.copy()
    for col in string_columns(spec):
        if col in out.columns:
            out[col] = _as_text(out[col])
    out.attrs.setdefault("source", "<DataFrame>")
    return out


def load_splits(spec: DatasetSpec) -> dict[str, pd.DataFrame]:
    """``{"train", "validation"[, "test"]}``: from the given files, else split by ``spec.split``."""
    train = read_data(spec.files.train, spec)
    if spec.files.validation:
        parts = {"train": train, "validation": read_data(spec.files.validation, spec)}
    else:
        parts = split_frame(train, spec.split)
    if spec.files.test:
        parts["test"] = read_data(spec.files.test, spec)
    return parts
