"""The advertiser simulator: determinism, documented ranges, truth, task-dependent correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from msmt.evaluation.correlation import cross_scenario_correlation, mean_off_diagonal
from msmt.evaluation.metrics import compute_metrics
from msmt.spec.dataset import Task
from msmt.synth.advertiser import (
    MEDIAN_PREFIX,
    MINOR_SCENARIO,
    NEW_SCENARIO,
    SCENARIOS,
    TASKS,
    ZERO_SHOT_PREFIX,
    _simulate_units,
    _World,
    bayes_active,
    history_oracle_active,
    make_advertiser,
    median_oracle,
    write_advertiser,
    zero_shot_oracle,
)


@pytest.fixture(scope="module")
def world() -> pd.DataFrame:
    """Default sizes (300 advertisers x 60 days); the documented ranges refer to these."""
    return make_advertiser(advertisers=300, days=60, seed=11)


@pytest.fixture(scope="module")
def known(world) -> pd.DataFrame:
    return world[world["scenario"] != NEW_SCENARIO]


def test_same_seed_identical_files_and_other_seed_differs(tmp_path):
    names = ["train.csv", "validation.csv", "test.csv", "new_scenario.csv", "dataset.yaml", "experiment.yaml"]
    a = write_advertiser(tmp_path / "a", advertisers=40, days=24, seed=5)
    b = write_advertiser(tmp_path / "b", advertisers=40, days=24, seed=5)
    c = write_advertiser(tmp_path / "c", advertisers=40, days=24, seed=6)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "train.csv").read_bytes() != (c / "train.csv").read_bytes()
    # time split: every validation day is after every training day, test after validation
    tr, va, te = (pd.read_csv(a / f) for f in ("train.csv", "validation.csv", "test.csv"))
    assert tr["day"].max() < va["day"].min() and va["day"].max() < te["day"].min()
    new = pd.read_csv(a / "new_scenario.csv")
    assert set(new["scenario"]) == {NEW_SCENARIO} and new["day"].min() == te["day"].min()
    assert NEW_SCENARIO not in set(tr["scenario"]) | set(va["scenario"]) | set(te["scenario"])


def test_scenarios_and_documented_ranges(known, world):
    shares = known["scenario"].value_counts(normalize=True)
    assert len(shares) >= 6
    assert 0.005 <= shares[MINOR_SCENARIO] <= 0.02  # the minor scenario
    assert shares.drop(MINOR_SCENARIO).min() > 0.05
    zero_imp = (known["impressions"] == 0).mean()
    assert 0.03 <= zero_imp <= 0.20
    g = known.groupby("scenario")
    ctr = g["clicks"].sum() / g["impressions"].sum()
    assert ctr.between(0.003, 0.06).all(), ctr.to_dict()
    assert 0.85 <= known["active"].mean() <= 0.99
    # each advertiser runs in a strict subset of the scenarios on average, and in at least one
    per_adv = known.groupby("advertiser_id")["scenario"].nunique()
    assert per_adv.min() >= 1 and per_adv.mean() < len(SCENARIOS) - 2
    # new scenario's attributes were all seen in training scenarios (so it can be scored)
    new_attrs = SCENARIOS[NEW_SCENARIO][2:5]
    for j, col in enumerate(["ad_format", "auction_type", "billing"]):
        assert new_attrs[j] in set(known[col])
    # events: all kinds happen, "none" dominates
    ev = known["event"].value_counts(normalize=True)
    assert {"none", "bid_up", "bid_down", "budget_change", "new_creative", "pause", "resume"} <= set(ev.index)
    assert ev["none"] > 0.7
    # consistency of the counts: clicks <= impressions, paused days spend nothing
    assert (known["clicks"] <= known["impressions"]).all()
    dark = known["cost"] == 0
    assert (known.loc[dark, ["impressions", "clicks"]] == 0).all().all()
    assert dark[known["event"] == "pause"].all() and not dark[known["event"] == "resume"].any()


def test_truth_is_the_expected_value(known):
    """Sum of labels / sum of true values ~ 1 per scenario and per truth quintile."""
    for task in TASKS:
        g = known.groupby("scenario")
        ratio = g[task].sum() / g[f"true_{task}"].sum()
        big = ratio.drop(MINOR_SCENARIO)
        assert np.abs(big - 1).max() < 0.05, (task, ratio.to_dict())
        assert abs(ratio[MINOR_SCENARIO] - 1) < 0.12, (task, ratio.to_dict())
        bins = pd.qcut(known[f"true_{task}"].rank(method="first"), 5, labels=False)
        by_bin = known.groupby(bins)[task].sum() / known.groupby(bins)[f"true_{task}"].sum()
        assert np.abs(by_bin - 1).max() < 0.1, (task, by_bin.to_dict())


def test_true_active_is_calibrated_on_units_live_and_paused_the_day_before(known):
    """P(spend in t..t+6) has two branches: a unit live at the end of t-1 stays dark only if it
    pauses and then never resumes; a paused one must fail to resume on all 7 days. Each branch is
    calibrated on its own rows (yesterday's cost is 0 exactly when the unit was paused)."""
    rows = known.sort_values(["advertiser_id", "scenario", "day"])
    yesterday = rows.groupby(["advertiser_id", "scenario"])["cost"].shift(1)
    for name, part in (("paused", rows[yesterday == 0]), ("live", rows[yesterday > 0])):
        assert len(part) > 3000, name
        ratio = part["active"].sum() / part["true_active"].sum()
        assert abs(ratio - 1) < 0.03, (name, ratio)


def test_oracle_beats_per_scenario_means(known):
    tasks = [Task(name=t, label=t, kind="binary" if t == "active" else "count") for t in TASKS]
    labels = {t: known[t].to_numpy(float) for t in TASKS}
    truth = {t: known[f"true_{t}"].to_numpy(float) for t in TASKS}
    means = {t: known.groupby("scenario")[t].transform("mean").to_numpy(float) for t in TASKS}
    M = compute_metrics(tasks, labels, means, known["scenario"].to_numpy(object), truth)
    for t in TASKS[:3]:
        assert M["oracle"]["overall"][t]["poisson_deviance"] < 0.7 * M["overall"][t]["poisson_deviance"]
        assert M["oracle"]["overall"][t]["nmae"] < M["overall"][t]["nmae"]
    assert M["oracle"]["overall"]["active"]["auc"] > 0.85
    assert M["oracle"]["overall"]["active"]["logloss"] < M["overall"]["active"]["logloss"]


def test_cross_scenario_correlation_differs_by_task(known):
    off = {t: mean_off_diagonal(cross_scenario_correlation(known, "advertiser_id", "scenario", f"true_{t}")) for t in TASKS}
    assert off["impressions"] > 0.6
    assert off["impressions"] - off["clicks"] > 0.2
    assert off["impressions"] - off["cost"] > 0.2
    assert off["active"] < 0.25
    # the pattern is visible in the observed labels too, not only in the truth
    obs = {t: mean_off_diagonal(cross_scenario_correlation(known, "advertiser_id", "scenario", t)) for t in TASKS}
    assert obs["impressions"] - obs["clicks"] > 0.15 and obs["impressions"] - obs["active"] > 0.4


def test_correlation_against_numpy():
    frame = pd.DataFrame(
        {"u": ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f"], "s": list("xyxyxyxyxyx"), "v": [1, 3, 2, 2, 5, 9, 0, 1, 7, 4, 3]}
    )
    corr = cross_scenario_correlation(frame, "u", "s", "v")
    x = np.log1p([1, 2, 5, 0, 7])
    y = np.log1p([3, 2, 9, 1, 4])
    assert corr.loc["x", "y"] == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_zero_shot_oracle_knows_the_world_but_not_the_units_state(world):
    """A bound between the oracle (which knows the unit's state) and what ignores the world: its
    rows are the new scenario's, its NMAE lies well above the oracle's (it must not see the unit's
    state) and far below a scenario-wide median's (it must know each advertiser), and its
    P(active) is calibrated on the realised rate."""
    zs = zero_shot_oracle(advertisers=300, days=60, seed=11, replicas=32)
    new = world[world["scenario"] == NEW_SCENARIO].merge(zs, on=["advertiser_id", "scenario", "day"], validate="1:1")
    assert len(new) == len(zs) == (world["scenario"] == NEW_SCENARIO).sum()
    rows = new[new["day"] >= 7]  # past the initial state's draw

    def nmae(y, p):
        return float(np.abs(y - p).sum() / np.abs(y).sum())

    for t in TASKS[:3]:
        y = rows[t].to_numpy(float)
        oracle, zero_shot = nmae(y, rows[f"true_{t}"]), nmae(y, rows[f"{ZERO_SHOT_PREFIX}{t}"])
        blind = nmae(y, np.full_like(y, np.median(y)))
        assert 1.15 * oracle < zero_shot < 0.9 * blind, (t, oracle, zero_shot, blind)
    p_active = rows[f"{ZERO_SHOT_PREFIX}active"]
    assert abs(p_active.mean() - rows["active"].mean()) < 0.02
    assert zs.equals(zero_shot_oracle(advertisers=300, days=60, seed=11, replicas=32))


def test_median_oracle_replays_the_world_and_draws_each_day_from_the_oracles_state():
    """The replicas use their own stream (the world's rows are the same with or without them) and
    start from the state ``true_<task>`` conditions on: their per-row mean tracks ``true_<task>``
    row by row, not only in total."""
    def run(replicas):
        rng = np.random.default_rng(4)
        return _simulate_units(_World(60, rng), 30, rng, replicas, np.random.default_rng([4, 0]))

    plain, replayed = run(0), run(127)
    for key in ("impressions", "clicks", "cost", "event", "true_cost", "active"):
        assert np.array_equal(plain[key], replayed[key]), key
    for t in TASKS[:3]:
        truth, mean = replayed[f"true_{t}"], replayed[f"replica_mean_{t}"]
        assert abs(mean.sum() / truth.sum() - 1) < 0.01, t
        big = truth > 20  # rows whose 127-replica mean is precise to a few percent
        assert np.median(np.abs(mean[big] / truth[big] - 1)) < 0.05, t
        assert (replayed[f"{MEDIAN_PREFIX}{t}"] <= np.ceil(mean * 1.2)).mean() > 0.99, t  # right skew: median below the mean


def test_median_oracle_is_nmae_bound_not_the_expected_value(world):
    """Absolute error is minimised by the median: on every count task the median oracle's NMAE is
    below the expected value's and below that of any rescaled expected value."""
    bound = median_oracle(advertisers=300, days=60, seed=11, replicas=63)
    rows = world.merge(bound, on=["advertiser_id", "scenario", "day"], validate="1:1")
    assert len(rows) == len(world)

    def nmae(y, p):
        return float(np.abs(y - p).sum() / np.abs(y).sum())

    for t in TASKS[:3]:
        y, truth = rows[t].to_numpy(float), rows[f"true_{t}"].to_numpy(float)
        median = nmae(y, rows[f"{MEDIAN_PREFIX}{t}"])
        assert median < 0.99 * nmae(y, truth), t
        assert median < min(nmae(y, c * truth) for c in np.linspace(0.8, 1.0, 11)), t


def test_bayes_active_integrates_the_units_propensities_out():
    """Against scipy's quadrature of the same posterior: a unit seen live, paused twice and
    resumed once, with and without a window, after a live day and after a paused one."""
    from scipy.integrate import quad
    from scipy.special import expit
    from scipy.stats import norm

    live = np.array([[1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0]], dtype=float).T  # [D, 1]
    logit0 = np.array([-2.5])
    got = {w: bayes_active(live, logit0, w) for w in (None, 5)}

    def expect(f, logit, events, non_events):
        def w(x):
            p = expit(logit(x))
            return p**events * (1 - p) ** non_events * norm.pdf(x)
        return quad(lambda x: f(expit(logit(x))) * w(x), -8, 8)[0] / quad(w, -8, 8)[0]

    for w, values in got.items():
        assert np.isnan(values[0]).all()
        for t in range(1, len(live)):
            seen = live[max(0, t - w) if w else 0 : t, 0]
            prev, cur = seen[:-1], seen[1:]
            n = dict(pause=np.sum(prev * (1 - cur)), stay=np.sum(prev * cur), resume=np.sum((1 - prev) * cur), dark=np.sum((1 - prev) * (1 - cur)))
            pause = expect(lambda p: p, lambda x: -2.5 + 0.9 * x, n["pause"], n["stay"])
            dark = lambda k: expect(lambda q: (1 - q) ** k, lambda x: -1.4 + 0.5 * x, n["resume"], n["dark"])  # noqa: E731
            want = 1 - (pause * dark(6) if live[t - 1, 0] else dark(7))
            assert values[t, 0] == pytest.approx(want, abs=2e-4), (w, t)


def test_the_history_oracle_of_active_sits_between_yesterday_and_the_oracle(world):
    """Knowing more of the unit's past ranks better, and never as well as knowing its
    propensities; the forecast is calibrated (a posterior predictive)."""
    from sklearn.metrics import roc_auc_score

    rows = world[(world["day"] >= 40) & (world["scenario"] != NEW_SCENARIO)]
    keys = ["advertiser_id", "scenario", "day"]
    auc = {}
    for w in (1, 14, None):
        got = rows[keys + ["active", "true_active"]].merge(history_oracle_active(300, 60, 11, w), on=keys, validate="1:1")
        assert len(got) == len(rows)
        auc[w] = roc_auc_score(got["active"], got["history_active"])
        assert abs(got["history_active"].mean() - got["active"].mean()) < 0.01, w
    oracle = roc_auc_score(rows["active"], rows["true_active"])
    assert auc[1] + 0.01 < auc[14] < auc[None] < oracle - 0.01, (auc, oracle)
