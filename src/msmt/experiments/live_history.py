"""What a practitioner would feed a logistic regression to forecast an advertiser's activity: the
unit's live and paused days over the panel window (``benchmarks/active_baseline.py``).

A day is *live* when the task's history metric is positive (the simulator's ``active`` reads
``cost``: the unit spent), *paused* when its row shows 0, and *unobserved* when the unit has no row.
Per row, from the ``window`` days before its own (never its own day):

* ``last``: the state of the last observed day (1 live, 0 paused, −1 none observed);
* ``since_live`` / ``since_paused``: days since the last live / paused day (window + 1 when none);
* ``transitions``, ``to_paused``, ``to_live``: changes of state between consecutive observed days;
* ``live_days``, ``observed_days``;
* ``day_1`` … ``day_<window>``: each day's state, oldest first (−1 unobserved).

Shapes: the frame's rows → a [rows, 7 + window] float array, in the frame's row order; a row's
features read only its own unit's rows (the ``history`` frame's), so they do not depend on its
batch-mates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY = ("last", "since_live", "since_paused", "transitions", "to_paused", "to_live", "live_days", "observed_days")


def feature_names(window: int) -> list[str]:
    return [*SUMMARY, *(f"day_{i + 1}" for i in range(window))]


def live_history_features(frame: pd.DataFrame, history: pd.DataFrame, keys: list[str], time: str, metric: str,
                          window: int) -> np.ndarray:
    """[len(frame), len(feature_names(window))] features of each row of ``frame`` from the rows of
    ``history`` (which may include ``frame``'s own) of the same unit (``keys``) on the ``window`` days
    before the row's ``time`` (integer days); see the module docstring."""
    units = pd.MultiIndex.from_frame(history[keys]).unique()
    day, seen = frame[time].to_numpy(np.int64), history[time].to_numpy(np.int64)  # integer days
    first = min(int(seen.min()), int(day.min()) - window)
    grid = np.full((len(units), max(int(seen.max()), int(day.max())) - first + 1), np.nan)  # unit × calendar day
    grid[units.get_indexer(pd.MultiIndex.from_frame(history[keys])), seen - first] = history[metric].to_numpy(float) > 0
    unit = units.get_indexer(pd.MultiIndex.from_frame(frame[keys]))  # −1: a unit without history
    steps = (day - window - first)[:, None] + np.arange(window)[None, :]  # the window days before the row's own
    w = np.where(unit[:, None] >= 0, grid[np.clip(unit, 0, None)[:, None], steps], np.nan)  # [B, window]
    observed = ~np.isnan(w)
    age = window - np.arange(window)  # days before the row: oldest first
    any_obs = observed.any(1)
    last_at = window - 1 - np.argmax(observed[:, ::-1], axis=1)
    last = np.where(any_obs, w[np.arange(len(w)), last_at], -1.0)

    def since(state: float) -> np.ndarray:
        hit = observed & (w == state)
        return np.where(hit.any(1), np.where(hit, age, window + 1).min(1), window + 1).astype(float)

    # changes between consecutive observed days: compare each observed day with the previous observed one
    prev = pd.DataFrame(np.where(observed, w, np.nan)).ffill(axis=1).shift(1, axis=1).to_numpy()
    pair = observed & ~np.isnan(prev)
    to_paused = (pair & (prev == 1) & (w == 0)).sum(1)
    to_live = (pair & (prev == 0) & (w == 1)).sum(1)
    summary = np.stack([last, since(1.0), since(0.0), to_paused + to_live, to_paused, to_live,
                        np.nansum(w, axis=1), observed.sum(1)], axis=1)
    return np.concatenate([summary, np.where(observed, w, -1.0)], axis=1)
