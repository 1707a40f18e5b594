"""Train / validation / test splits: given files, a time column, or a seeded random split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.data.validate import numeric_column, require_columns
from msmt.spec.dataset import SplitSpec
from msmt.spec.errors import DataError


def split_frame(frame: pd.DataFrame, split: SplitSpec) -> dict[str, pd.DataFrame]:
    """Split one table into ``train`` / ``validation`` (/ ``test``) parts.

    ``time``: rows are ordered by ``time_column``; the latest rows go to test, the ones before
    them to validation, so no validation row is earlier than a training row.
    ``random``: a permutation drawn from ``split.seed``.
    ``split.backtest_fold`` k > 0 (time splits): the latest k × (test size) rows are left out and the
    rest is split with the same validation and test sizes, so fold 1's test rows are the ones just
    before fold 0's test rows (a rolling-origin backtest; the left-out rows are in no split).
    """
    n = len(frame)
    n_test = int(round(n * split.test_fraction))
    n_val = int(round(n * split.validation_fraction))
    kept = n - split.backtest_fold * n_test  # the rows before the fold's origin
    if kept - n_test - n_val <= 0:
        raise DataError(source_of(frame), None, f"too few rows ({n}) for the requested split")
    if split.method == "time":
        require_columns(frame, [split.time_column])
        t = numeric_column(frame, split.time_column, allow_missing=False) if not _is_datetime(frame[split.time_column]) else pd.to_datetime(frame[split.time_column]).to_numpy().astype("int64")
        order = np.argsort(t, kind="stable")
    else:
        order = np.random.default_rng(split.seed).permutation(n)
    order = order[:kept]
    parts = {
        "train": order[: kept - n_test - n_val],
        "validation": order[kept - n_test - n_val : kept - n_test],
    }
    if n_test:
        parts["test"] = order[kept - n_test :]
    out = {}
    for name, idx in parts.items():
        part = frame.iloc[np.sort(idx)].reset_index(drop=True)
        part.attrs["source"] = f"{source_of(frame)} [{name} split]"
        out[name] = part
    return out


def _is_datetime(series: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(series):
        return True
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        try:
            pd.to_datetime(series.iloc[:5])
            return True
        except (ValueError, TypeError):
            return False
    return False
