"""Statistics of the cold-start protocol: per-seed means, paired differences and t-intervals.

The unit of replication is the seed (a seed draws the held-out groups, trains every run and
samples the episodes). Per (state, K, method, task, metric): the mean over groups within a seed,
then over seeds a Student-t interval. A paired difference ``method − reference`` is taken per
group on the same query rows first, averaged within a seed, then given its t-interval over seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CELL = ["state", "K", "task", "metric"]


def t_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite ``values``: mean ± t_{(1+level)/2, n−1} · s / √n
    (s with n − 1); the bounds are NaN below two values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def seed_means(records: pd.DataFrame) -> pd.DataFrame:
    """Per (state, seed, K, method, task, metric): the mean over groups and how many groups."""
    keys = ["state", "seed", "K", "method", "task", "metric"]
    return records.groupby(keys, sort=False).agg(value=("value", "mean"), groups=("group", "nunique")).reset_index()


def summary(means: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per (state, K, method, task, metric): the mean over seeds and its t-interval."""
    rows = []
    for key, part in means.groupby(["state", "K", "method", "task", "metric"], sort=False):
        mean, low, high, n = t_interval(part["value"], level)
        rows.append(dict(zip(["state", "K", "method", "task", "metric"], key), mean=mean, low=low, high=high, seeds=n,
                         groups=float(part["groups"].mean())))
    return pd.DataFrame(rows)


def paired_by_seed(records: pd.DataFrame, reference: str, absolute: bool = False) -> pd.DataFrame:
    """``method − reference`` per group (same state, seed, K, query rows), averaged per seed: one row
    per (state, K, task, metric, method, seed) with ``diff`` and ``groups``. ``absolute``: the mean of
    |method − reference| instead, how far a method moves a group's measure in either direction."""
    keys = ["state", "seed", "K", "group", "task", "metric"]
    ref = records[records["method"] == reference][[*keys, "value"]].rename(columns={"value": "ref"})
    both = records[records["method"] != reference].merge(ref, on=keys)
    both["diff"] = both["value"] - both["ref"]
    if absolute:
        both["diff"] = both["diff"].abs()
    return both.groupby([*CELL, "method", "seed"], sort=False).agg(diff=("diff", "mean"), groups=("group", "nunique")).reset_index()


def paired(records: pd.DataFrame, reference: str, level: float = 0.95, absolute: bool = False) -> pd.DataFrame:
    """:func:`paired_by_seed`'s per-seed means with their t-interval over seeds: one row per
    (state, K, task, metric, method)."""
    rows = []
    for key, part in paired_by_seed(records, reference, absolute).groupby([*CELL, "method"], sort=False):
        mean, low, high, n = t_interval(part["diff"], level)
        rows.append(dict(zip([*CELL, "method"], key), reference=reference, mean=mean, low=low, high=high, seeds=n,
                         groups=float(part["groups"].mean())))
    return pd.DataFrame(rows)


def k_gain(means: pd.DataFrame, state: str, method: str, task: str, metric: str, k_from: int, k_to: int, level: float = 0.95):
    """(mean, low, high, n) over seeds of a method's seed mean at ``k_to`` minus at ``k_from``."""
    part = means[(means["state"] == state) & (means["method"] == method) & (means["task"] == task) & (means["metric"] == metric)]
    wide = part.pivot_table(index="seed", columns="K", values="value")
    if k_from not in wide.columns or k_to not in wide.columns:
        return math.nan, math.nan, math.nan, 0
    return t_interval((wide[k_to] - wide[k_from]).to_numpy(), level)
