"""The live-history features of ``benchmarks/active_baseline.py`` against a hand example and a
row-by-row reference."""

import numpy as np
import pandas as pd
import pytest

from msmt.experiments.live_history import feature_names, live_history_features

KEYS = ["advertiser_id", "scenario"]


def _reference(frame, history, window):
    """Row by row: the unit's observed states on the window days before the row, then each feature by its definition."""
    out = []
    for _, row in frame.iterrows():
        mine = history[(history["advertiser_id"] == row["advertiser_id"]) & (history["scenario"] == row["scenario"])]
        state = {int(d): float(c > 0) for d, c in zip(mine["day"], mine["cost"])}
        days = [row["day"] - window + i for i in range(window)]  # oldest first
        seq = [(row["day"] - d, state[d]) for d in days if d in state]  # (days before the row, state)
        live = [a for a, s in seq if s == 1]
        paused = [a for a, s in seq if s == 0]
        changes = [(a[1], b[1]) for a, b in zip(seq, seq[1:]) if a[1] != b[1]]
        to_paused = sum(1 for a, b in changes if (a, b) == (1, 0))
        out.append([seq[-1][1] if seq else -1, min(live) if live else window + 1, min(paused) if paused else window + 1,
                    len(changes), to_paused, len(changes) - to_paused, len(live), len(seq),
                    *(state.get(d, -1.0) for d in days)])
    return np.array(out, dtype=float)


def test_a_hand_example():
    #        day: 0  1  2  3  4  5  6  7  8  9   (day 6 has no row)
    cost = [5, 3, 0, 0, 2, 1, None, 0, 4, 4]
    history = pd.DataFrame([dict(advertiser_id="a", scenario="s", day=d, cost=c) for d, c in enumerate(cost) if c is not None])
    row = pd.DataFrame([dict(advertiser_id="a", scenario="s", day=10, cost=7)])
    got = dict(zip(feature_names(14), live_history_features(row, history, KEYS, "day", "cost", 14)[0]))
    assert got["last"] == 1 and got["since_live"] == 1 and got["since_paused"] == 3
    assert (got["transitions"], got["to_paused"], got["to_live"]) == (4, 2, 2)  # 1→0 (2), 0→1 (4), 1→0 (7, across day 6), 0→1 (8)
    assert (got["live_days"], got["observed_days"]) == (6, 9)
    assert [got[f"day_{i}"] for i in range(1, 15)] == [-1, -1, -1, -1, 1, 1, 0, 0, 1, 1, -1, 0, 1, 1]


@pytest.mark.parametrize("window", [3, 7])
def test_random_panels_match_the_row_by_row_reference(window):
    rng = np.random.default_rng(window)
    rows = [dict(advertiser_id=f"a{u}", scenario=s, day=d, cost=float(rng.integers(0, 3)) * (rng.random() < 0.7))
            for u in range(4) for s in ("x", "y") for d in range(12) if d != 6 and rng.random() < 0.85]  # day 6: no row at all
    history = pd.DataFrame(rows)
    frame = history.sample(frac=0.6, random_state=1).reset_index(drop=True)
    frame = pd.concat([frame, pd.DataFrame([dict(advertiser_id="new", scenario="x", day=5, cost=1.0)])], ignore_index=True)
    got = live_history_features(frame, history, KEYS, "day", "cost", window)
    np.testing.assert_array_equal(got, _reference(frame, history, window))
    alone = live_history_features(frame.iloc[[3]], history, KEYS, "day", "cost", window)  # no batch-mates
    np.testing.assert_array_equal(alone[0], got[3])
