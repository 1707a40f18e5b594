"""Columns -> index / value arrays with a fitted schema (:mod:`msmt.spec.fitted`, conventions there).

``train``, ``evaluate``, ``predict`` and ``serve`` all encode through these functions and the
same :class:`~msmt.spec.fitted.FittedSchema`, so scoring can never encode differently from
training. Fitting is :mod:`msmt.data.fit`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.data.validate import numeric_column
from msmt.spec.dataset import DenseFeature, MultiSparseFeature, SparseFeature
from msmt.spec.errors import DataError
from msmt.spec.fitted import OOV, UNKNOWN_SCENARIO, FittedSchema


def text(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna("<NA>")


def split_multi(series: pd.Series, separator: str) -> pd.Series:
    return series.astype("string").fillna("").str.split(separator)


def encode_sparse(frame: pd.DataFrame, schema: FittedSchema, feats: tuple[SparseFeature, ...]) -> np.ndarray:
    """[N, len(feats)] int64 indices."""
    cols = [schema.vocabularies[f.name].encode(text(frame[f.column])) for f in feats]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0), dtype=np.int64)


def standardise(schema: FittedSchema, feat: DenseFeature, x: np.ndarray, source: str) -> np.ndarray:
    """[N] float32: one dense column (float64, checked by ``numeric_column`` or the service's
    ``check_numbers``) standardised; a value within float32 but so far from the training values
    that its standardised value is not is an error naming the row. Files and the service's
    direct path both encode through this."""
    z = schema.dense[feat.name].apply(x)
    overflow = ~np.isfinite(z)
    if overflow.any():
        row = int(np.flatnonzero(overflow)[0])
        raise DataError(source, feat.column, f"value {x[row]:g} is too far from the training values to encode in float32", row=row)
    return z


def encode_dense(frame: pd.DataFrame, schema: FittedSchema, feats: tuple[DenseFeature, ...]) -> np.ndarray:
    """[N, len(feats)] float32, standardised."""
    cols = [standardise(schema, f, numeric_column(frame, f.column), source_of(frame)) for f in feats]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0), dtype=np.float32)


def encode_multi(frame: pd.DataFrame, schema: FittedSchema, feat: MultiSparseFeature) -> np.ndarray:
    """[N, max_length] int64 indices, right-padded with 0."""
    vocab = schema.vocabularies[feat.name]
    out = np.zeros((len(frame), feat.max_length), dtype=np.int64)
    index = vocab._index
    for row, tokens in enumerate(split_multi(frame[feat.column], feat.separator)):
        ids = [index.get(t, OOV) for t in tokens if t][: feat.max_length]
        out[row, : len(ids)] = ids
    return out


def encode_scenarios(frame: pd.DataFrame, schema: FittedSchema) -> np.ndarray:
    """[N] int64 scenario indices, 0 for scenarios unseen in training."""
    lookup = {s: i + 1 for i, s in enumerate(schema.scenarios)}
    values = text(frame[schema.spec.scenario.column])
    return np.fromiter((lookup.get(v, UNKNOWN_SCENARIO) for v in values), dtype=np.int64, count=len(values))
