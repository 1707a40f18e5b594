"""``msmt synth simple``: its ``true_<task>`` columns are the expected values of the draws, its scenario
shares and funnel are as documented, and its files are the time split 80 / 10 / 10."""

import numpy as np
import pandas as pd
import pytest

from msmt.synth.simple import SCENARIOS, make_simple, write_simple

ROWS = 60_000


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_simple(ROWS, seed=3)


def _binned_calibration(truth: np.ndarray, outcome: np.ndarray, var: np.ndarray, bins: int = 10) -> float:
    """The largest |mean outcome − mean truth| over quantile bins of the truth, in standard errors."""
    edges = np.quantile(truth, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, truth, side="right") - 1, 0, bins - 1)
    worst = 0.0
    for b in range(bins):
        rows = which == b
        se = np.sqrt(var[rows].sum()) / rows.sum()
        worst = max(worst, abs(outcome[rows].mean() - truth[rows].mean()) / se)
    return worst


def test_truth_is_the_expected_value_of_each_task_across_its_range(frame):
    """Binned by the true value, the realised mean matches it within 4.5 standard errors (Bernoulli /
    Poisson variances): a truth that drifted from the draws (another sign, a missing term) fails."""
    for task in ("click", "purchase"):
        p = frame[f"true_{task}"].to_numpy()
        assert _binned_calibration(p, frame[task].to_numpy(float), p * (1 - p)) < 4.5, task
    rate = frame["true_dwell"].to_numpy()
    assert _binned_calibration(rate, frame["dwell"].to_numpy(float), rate) < 4.5
    for name, rows in frame.groupby("scenario"):  # per scenario too: each has its own biases
        p = rows["true_click"].to_numpy()
        se = np.sqrt((p * (1 - p)).sum()) / len(p)
        assert abs(rows["click"].mean() - p.mean()) < 4.5 * se, name


def test_the_click_truth_moves_with_price_as_the_draws_do(frame):
    """Within a scenario, the realised click rate falls with price as the truth says (a price term of
    the wrong sign in either makes the two slopes disagree)."""
    rows = frame[frame["scenario"] == "feed"]
    cheap = rows["price"] <= rows["price"].quantile(0.25)
    dear = rows["price"] >= rows["price"].quantile(0.75)
    truth_gap = rows.loc[cheap, "true_click"].mean() - rows.loc[dear, "true_click"].mean()
    drawn_gap = rows.loc[cheap, "click"].mean() - rows.loc[dear, "click"].mean()
    assert truth_gap > 0.02 and abs(drawn_gap - truth_gap) < 0.03


def test_purchases_need_a_click_and_the_minor_scenario_is_minor(frame):
    assert (frame["purchase"] <= frame["click"]).all()
    assert (frame["true_purchase"] <= frame["true_click"]).all()
    shares = frame["scenario"].value_counts(normalize=True)
    for name, share in SCENARIOS.items():
        assert abs(shares[name] - share) < 4 * np.sqrt(share * (1 - share) / ROWS), name
    assert shares["minor"] < 0.03


def test_files_are_the_time_split_80_10_10(tmp_path):
    out = write_simple(tmp_path, rows=1000, seed=1)
    parts = [pd.read_csv(out / f"{split}.csv") for split in ("train", "validation", "test")]
    assert [len(p) for p in parts] == [800, 100, 100]
    assert parts[0]["timestamp"].max() <= parts[1]["timestamp"].min() <= parts[1]["timestamp"].max() <= parts[2]["timestamp"].min()
    whole, again = pd.concat(parts, ignore_index=True), make_simple(1000, seed=1)
    for column in ("timestamp", "user_id", "click", "dwell"):  # every row once, in time order, as generated
        assert whole[column].tolist() == again[column].tolist(), column
