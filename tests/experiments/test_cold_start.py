"""The cold-start protocol: its split, its statistics, and the whole study in smoke mode."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import REPO
from msmt.data.loading import read_data
from msmt.experiments.cold_start import World, hold_out, pick_groups
from msmt.experiments.cold_start_score import splits_at
from msmt.experiments.cold_start_stats import paired, paired_by_seed, t_interval
from msmt.spec.config import load_experiment


def test_t_interval_matches_scipy_paired_t_test():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.70, 0.02, 5), rng.normal(0.69, 0.02, 5)
    mean, low, high, n = t_interval(a - b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert n == 5 and mean == pytest.approx(float(np.mean(a - b)))
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert math.isnan(t_interval([0.3])[1]) and t_interval([np.nan, 1.0, 3.0])[3] == 2


def test_paired_differences_average_per_group_within_a_seed_then_interval_over_seeds():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for g in range(6 + seed):  # a different number of groups per seed: a seed is one unit, whatever its size
            base = rng.uniform(0.5, 0.8)
            for method, shift in (("finetune", 0.0), ("maml", rng.normal(0.01, 0.02))):
                rows.append(dict(state="new users", seed=seed, K=10, method=method, group=f"u{g}", task="click", metric="auc", value=base + shift))
    records = pd.DataFrame(rows)
    got = paired(records, "finetune").iloc[0]
    wide = records.pivot_table(index=["seed", "group"], columns="method", values="value")
    per_seed = (wide["maml"] - wide["finetune"]).groupby(level="seed").mean().to_numpy()
    half = stats.t.ppf(0.975, 3) * per_seed.std(ddof=1) / 2
    assert got["method"] == "maml" and got["seeds"] == 4
    assert (got["mean"], got["low"], got["high"]) == pytest.approx((per_seed.mean(), per_seed.mean() - half, per_seed.mean() + half))
    # absolute movement: |maml − finetune| per group, averaged per seed, then over seeds
    moved = paired(records, "finetune", absolute=True).iloc[0]
    per_seed_abs = (wide["maml"] - wide["finetune"]).abs().groupby(level="seed").mean().to_numpy()
    assert moved["mean"] == pytest.approx(per_seed_abs.mean()) and moved["mean"] > abs(got["mean"])
    by_seed = paired_by_seed(records, "finetune").set_index("seed")["diff"]
    assert by_seed.to_numpy() == pytest.approx(per_seed)


def test_support_rows_precede_query_rows_per_group():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"user_id": rng.choice(["a", "b", "c", "d"], 60), "timestamp": rng.permutation(60)})
    frame = pd.concat([frame, pd.DataFrame({"user_id": ["z", "z"], "timestamp": [5, 1]})], ignore_index=True)  # 2 rows: counts only for K < 2
    for k in (0, 1, 3):
        support, query = splits_at(frame, "user_id", "timestamp", k)
        assert len(np.intersect1d(support, query)) == 0
        for g, rows in frame.groupby("user_id").groups.items():
            s, q = np.intersect1d(support, rows), np.intersect1d(query, rows)
            if len(rows) <= k:
                assert len(s) == len(q) == 0
                continue
            assert len(s) == k and len(q) == len(rows) - k
            if k:
                assert frame.loc[s, "timestamp"].max() < frame.loc[q, "timestamp"].min()


def test_pick_groups_prefers_groups_with_enough_rows():
    groups = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 2 + ["d"])
    picked = pick_groups(groups, 2, 4, np.random.default_rng(0))
    assert picked == ["a", "b"]
    assert pick_groups(groups, 3, 4, np.random.default_rng(0)) == ["a", "b", "c"]


@pytest.mark.slow
def test_smoke_study_writes_page_csv_and_plots(tmp_path, shared_data):
    """End to end: tiny MovieLens (40 users) and a tiny simulator world, one seed (the intervals
    over seeds are checked above), MAML only: 6 runs."""
    cfg = load_experiment(REPO / "configs" / "movielens.yaml")
    frame = read_data(shared_data / "movielens100k_msmt" / "ml100k_msmt_train.csv", cfg.dataset)
    users = frame["user_id"].value_counts().index[100:140]
    tiny = tmp_path / "ml_tiny.csv"
    frame[frame["user_id"].isin(users)].to_csv(tiny, index=False)
    out = tmp_path / "page" / "cold_start.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "cold_start.py"), "--smoke", "--seeds", "0", "--worlds", "movielens_users", "advertisers",
           "--meta", "maml", "--movielens", str(tiny), "--work", str(tmp_path / "work"), "--out", str(out), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    page = out.read_text()
    assert "SMOKE SCALE, not the targets' scale" in page and "## Targets" in page
    for state in ("warm users", "new users", "new advertisers"):
        assert f"## {state}" in page
        assert (out.parent / "img" / f"cold_start_{state.replace(' ', '_')}.png").stat().st_size > 1000
    means = pd.read_csv(out.parent / "cold_start" / "seed_means.csv")
    assert set(means["seed"]) == {0} and {"base", "finetune", "maml", "idwarmup", "naive_mean", "naive", "oracle"} <= set(means["method"])
    assert set(means.loc[means["method"] == "oracle", "state"]) == {"new advertisers", "new scenario"}  # the simulator's states only
    assert {"auc", "auc_pooled", "nmae", "nmae_pooled", "displacement"} <= set(means["metric"])
    diffs = pd.read_csv(out.parent / "cold_start" / "paired.csv")
    assert set(diffs["reference"]) == {"finetune", "base"}
    k0 = diffs[(diffs["K"] == 0) & (diffs["method"] == "finetune") & (diffs["reference"] == "base")]
    assert len(k0) and (k0["mean"] == 0).all()  # K = 0: fine-tuning has nothing to adapt on
    curves = pd.read_csv(out.parent / "cold_start" / "meta_curves.csv")
    assert set(curves["method"]) == {"maml"} and set(curves["world"]) == {"movielens_users", "advertisers"}
    assert "## Meta-training curves" in page and (out.parent / "img" / "cold_start_meta_curves.png").stat().st_size > 1000
    _score_state_takes_a_split_and_personal_blocks(tmp_path / "work")
    _a_study_in_parts_merges_to_the_whole_studys_page(cmd, env, tmp_path)


def _a_study_in_parts_merges_to_the_whole_studys_page(cmd, env, tmp_path):
    """Seed 0 (the run above) and seed 1 as two parts, merged from their tables alone (seed 0 first merged
    on its own, whose page then takes in seed 1), give the page and tables of the whole study run at once
    (which reuses every run); its paired intervals are the package's :func:`paired` over the study's cached
    per-group records; overlapping parts are refused in one line."""
    def run(*changes):
        args = list(cmd)
        for flag, value in changes:
            i = args.index(flag)
            args[i + 1:i + 2] = value
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        return done

    parts = [tmp_path / "page", tmp_path / "part1"]
    assert run(("--seeds", ["1"]), ("--out", [str(parts[1] / "cold_start.md")])).returncode == 0
    whole = run(("--seeds", ["0", "1"]), ("--out", [str(tmp_path / "whole" / "cold_start.md")]))
    assert whole.returncode == 0, whole.stderr[-3000:]
    script, first, merged = cmd[:2], tmp_path / "first" / "cold_start.md", tmp_path / "merged" / "cold_start.md"
    for sources, out in (([parts[0] / "cold_start"], first), ([parts[1] / "cold_start", first.parent / "cold_start"], merged)):
        done = subprocess.run([*script, "--merge", *map(str, sources), "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("summary.csv", "paired.csv", "seed_means.csv", "paired_by_seed.csv", "meta_curves.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(merged.parent / "cold_start" / name), pd.read_csv(tmp_path / "whole" / "cold_start" / name))
    body = merged.read_text().split("## Targets")[1]
    assert body == (tmp_path / "whole" / "cold_start.md").read_text().split("## Targets")[1]
    assert "from 2 parts of one study" in merged.read_text()
    work = tmp_path / "work" / "runs"
    records = pd.concat([pd.read_csv(f, dtype={"group": str}) for seed in (0, 1) for world in ("movielens_users", "advertisers")
                         for f in sorted((work / world / f"seed{seed}").glob("records-*.csv"))], ignore_index=True)
    want = pd.concat([paired(records, "finetune"), paired(records, "base")], ignore_index=True)
    got = pd.read_csv(merged.parent / "cold_start" / "paired.csv")
    keys = ["state", "K", "task", "metric", "method", "reference"]
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got.sort_values(keys, ignore_index=True), want[got.columns].sort_values(keys, ignore_index=True),
                                  check_dtype=False)
    again = subprocess.run([*script, "--merge", str(parts[0] / "cold_start"), str(parts[0] / "cold_start"), "--out", str(tmp_path / "x.md")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "seed 0 is also in" in again.stderr and "Traceback" not in again.stderr
    assert not (tmp_path / "x.md").exists()


def test_held_out_users_are_never_training_rows_and_warm_users_always_are(tmp_path, shared_data):
    """MovieLens users: the held users' rows leave the training table whole and are the new-users state;
    the warm users are training users scored on the test period of that table."""
    config = REPO / "configs" / "movielens.yaml"
    cfg = load_experiment(config)
    frame = read_data(shared_data / "movielens100k_msmt" / "ml100k_msmt_train.csv", cfg.dataset)
    tiny = tmp_path / "ml_tiny.csv"
    frame[frame["user_id"].isin(frame["user_id"].value_counts().index[100:130])].to_csv(tiny, index=False)
    held = hold_out(World("movielens_users", config, "user_id", id_warmup=False), 0, 6, 3, tmp_path / "data", movielens=tiny)
    rows = read_data(tiny, cfg.dataset)
    train = read_data(held.files["train"], cfg.dataset)
    held_users = set(held.held)
    assert len(held_users) == 6 and not held_users & set(train["user_id"])
    assert len(train) + len(held.states["new users"]) == len(rows)
    assert set(held.states["new users"]["user_id"]) == held_users
    warm = set(held.states["warm users"]["user_id"])
    assert warm and warm <= set(train["user_id"]) and not warm & held_users


def _score_state_takes_a_split_and_personal_blocks(work):
    """``score_state`` on the smoke study's new advertisers (its world and runs rebuilt through the package)
    with a split of its own, every advertiser's last 2 rows as query, and two personal blocks: exactly
    those rows are scored, each block is a method of its own, and the oracle's pooled NMAE is
    Σ|y − true| / Σ y of the raw columns."""
    from msmt.experiments.cold_start import World, hold_out
    from msmt.experiments.cold_start_score import score_state
    from msmt.experiments.results_page import simulator_config
    from msmt.rundir.layout import load_run

    config = simulator_config("advertiser", {"advertisers": 24, "days": 20, "seed": 2026}, work, "advertiser_world", log=lambda m: None)
    world = World("advertisers", config, "advertiser_id", id_warmup=False, naive=True)
    held = hold_out(world, 0, 4, 3, work / "data" / world.name)
    frame = held.states["new advertisers"]
    runs = {m: load_run(work / "runs" / world.name / "seed0" / m) for m in ("base", "maml", "naive_mean")}

    def last_two(f, k):
        order = np.lexsort((f["day"].to_numpy(), f["advertiser_id"].to_numpy()))
        last = f.iloc[order].groupby("advertiser_id").tail(2).index.to_numpy()
        rest = f.iloc[np.setdiff1d(order, last)].sort_values(["advertiser_id", "day"], kind="stable")
        return np.sort(rest.groupby("advertiser_id").head(k).index.to_numpy()), np.sort(last)

    blocks = {"finetune": ["auto"], "bias only": ["towers.*.net.2.bias"]}
    rec = score_state(runs, frame, "advertiser_id", [1], split=last_two, personal=blocks)
    query = last_two(frame, 1)[1]
    assert len(query) == 2 * frame["advertiser_id"].nunique()
    pooled = rec[(rec["metric"] == "nmae_pooled") & (rec["task"] == "clicks")].set_index("method")
    assert set(pooled.index) == {"finetune", "bias only", "base", "maml", "naive_mean", "naive", "oracle"}
    assert (pooled["rows"] == frame.iloc[query]["clicks"].notna().sum()).all()
    observed = frame.iloc[query].dropna(subset=["clicks"])
    want = float(np.abs(observed["clicks"] - observed["true_clicks"]).sum() / observed["clicks"].sum())
    assert pooled.loc["oracle", "value"] == pytest.approx(want, rel=1e-9)
    assert pooled.loc["finetune", "value"] != pooled.loc["bias only", "value"]  # each block adapted on its own
    support = frame.iloc[last_two(frame, 1)[0]].dropna(subset=["clicks"])  # the naive forecast: support means only
    naive = [support.loc[(support["advertiser_id"] == r.advertiser_id) & (support["scenario"] == r.scenario), "clicks"].mean()
             for r in observed.itertuples()]
    naive = np.where(np.isnan(naive), observed["advertiser_id"].map(support.groupby("advertiser_id")["clicks"].mean()), naive)
    assert pooled.loc["naive", "value"] == pytest.approx(float(np.abs(observed["clicks"] - naive).sum() / observed["clicks"].sum()), rel=1e-6)


def test_per_group_naive_forecast_is_the_support_mean_in_the_query_rows_scenario():
    """Against a loop over query rows: the observed support labels of the same group and
    scenario, else of the same group; masked labels never count; no support -> NaN."""
    from msmt.experiments.cold_start_score import label_table, support_means
    from msmt.spec.dataset import Task

    clicks = Task(name="clicks", kind="count", label="clicks")

    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 6 + ["b"] * 4 + ["c"] * 2)
    scenarios = rng.integers(0, 3, len(groups))
    labels = rng.poisson(5.0, (len(groups), 1)).astype(np.float32) * (1 + 10 * scenarios[:, None])
    mask = (rng.random((len(groups), 1)) > 0.2).astype(np.float32)
    table = label_table(groups, scenarios, labels, mask)
    s_rows, q_rows = np.array([0, 1, 2, 3, 6, 7]), np.array([4, 5, 8, 9, 10, 11])
    got = support_means(table.iloc[s_rows], table.iloc[q_rows], [clicks])["clicks"]
    for value, q in zip(got, q_rows):
        same_group = [s for s in s_rows if groups[s] == groups[q] and mask[s, 0] > 0]
        same_scenario = [s for s in same_group if scenarios[s] == scenarios[q]]
        rows = same_scenario or same_group
        expected = float(np.mean(labels[rows, 0])) if rows else math.nan
        assert value == pytest.approx(expected, nan_ok=True), (q, value, expected)
    assert math.isnan(got[-1]) and math.isnan(got[-2])  # group c has no support rows


def test_the_scale_note_names_the_worlds_run_at_the_targets_scale():
    from msmt.experiments.cold_start import KS, WORLDS
    from msmt.experiments.cold_start_page import scale_note

    full = scale_note(5, 100, KS, WORLDS, smoke=False)
    assert full.startswith("Scale:") and "the targets' scale." in full
    part = scale_note(5, 100, KS, WORLDS[:2], smoke=False)
    assert "for the worlds run" in part and f"not run: {list(WORLDS[2:])}" in part and "REDUCED" not in part
    assert "REDUCED SCALE" in scale_note(3, 100, KS, WORLDS[:2], smoke=False)
    assert "REDUCED SCALE" in scale_note(5, 50, KS, WORLDS, smoke=False)
    assert "SMOKE SCALE" in scale_note(5, 100, KS, WORLDS, smoke=True)


def test_targets_read_each_measure_per_group_and_pooled_separately():
    """The targets table checks the issue's per-group measure and, in rows labelled as pooled, the same
    targets over all query rows; each row's best method, numbers and verdict come from its own measure."""
    from msmt.experiments.cold_start_page import targets

    summ = pd.DataFrame([
        # per user, MAML is the best meta method; pooled over the rows, first-order MAML
        dict(state="new users", K=10, method="maml", task="click", metric="auc", mean=0.70),
        dict(state="new users", K=10, method="fomaml", task="click", metric="auc", mean=0.69),
        dict(state="new users", K=10, method="maml", task="click", metric="auc_pooled", mean=0.71),
        dict(state="new users", K=10, method="fomaml", task="click", metric="auc_pooled", mean=0.72),
    ] + [dict(state="new advertisers", K=k, method=m, task="clicks", metric=metric, mean=v * (1 if metric == "nmae" else 0.8))
         for k in (5, 10) for metric in ("nmae", "nmae_pooled")
         for m, v in (("metasgd", 0.60), ("finetune", 0.70), ("naive_mean", 0.65), ("base", 0.66))]
      # per advertiser Meta-SGD is the best meta method; pooled over the rows, MAML
      + [dict(state="new advertisers", K=k, method="maml", task="clicks", metric=metric, mean=v)
         for k in (5, 10) for metric, v in (("nmae", 0.62), ("nmae_pooled", 0.40))])
    diff = dict(state="new users", K=10, task="click", seeds=5, groups=100)
    diffs = pd.DataFrame([
        {**diff, "metric": "auc", "method": "maml", "reference": "finetune", "mean": 0.003, "low": -0.006, "high": 0.012},
        {**diff, "metric": "auc", "method": "maml", "reference": "base", "mean": 0.020, "low": 0.010, "high": 0.030},
        {**diff, "metric": "auc_pooled", "method": "fomaml", "reference": "finetune", "mean": 0.010, "low": 0.002, "high": 0.018},
        {**diff, "metric": "auc_pooled", "method": "fomaml", "reference": "base", "mean": 0.004, "low": -0.001, "high": 0.009},
    ])
    rows = targets(summ, diffs, pd.DataFrame(columns=["state", "method", "task", "metric", "K", "seed", "value"]))
    users = [r for r in rows if r["target"].startswith("MovieLens new users")]
    assert [("pooled" in r["target"], r["verdict"]) for r in users] == [
        (False, "**missed**"), (False, "**met**"), (True, "**met**"), (True, "**missed**")]
    assert users[0]["numbers"].startswith("maml − finetune = 0.0030") and users[2]["numbers"].startswith("fomaml − finetune = 0.0100")
    advertisers = [r for r in rows if r["target"].startswith("new advertisers")]
    assert [("pooled" in r["target"], r["verdict"]) for r in advertisers] == [(False, "**met**")] * 2 + [(True, "**met**")] * 2
    assert advertisers[0]["numbers"].startswith("metasgd 0.6000") and advertisers[2]["numbers"].startswith("maml 0.4000")


def test_seed_means_average_groups_then_summary_takes_the_t_interval_over_seeds():
    from msmt.experiments.cold_start_stats import seed_means, summary

    values = {0: [0.1, 0.2, 0.9], 1: [0.4, 0.5], 2: [0.3, 0.3, 0.3, 0.7]}  # skewed groups: mean ≠ median
    records = pd.DataFrame([dict(state="new users", seed=s, K=5, method="maml", group=f"u{i}", task="click", metric="auc", value=x)
                            for s, xs in values.items() for i, x in enumerate(xs)])
    means = seed_means(records)
    per_seed = {s: sum(xs) / len(xs) for s, xs in values.items()}
    assert dict(zip(means["seed"], means["value"])) == pytest.approx(per_seed)
    assert dict(zip(means["seed"], means["groups"])) == {0: 3, 1: 2, 2: 4}
    got = summary(means).iloc[0]
    x = np.array(list(per_seed.values()))
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert (got["mean"], got["low"], got["high"], got["seeds"]) == pytest.approx((x.mean(), x.mean() - half, x.mean() + half, 3))
    assert got["groups"] == pytest.approx(3.0)


def test_k_gain_is_the_paired_interval_of_the_later_k_minus_the_earlier_over_seeds():
    from msmt.experiments.cold_start_stats import k_gain

    at0, at10 = np.array([0.60, 0.62, 0.58, 0.61]), np.array([0.66, 0.65, 0.66, 0.70])
    means = pd.DataFrame([dict(state="new scenario", seed=s, K=k, method="maml", task="active", metric="auc_pooled", value=v)
                          for k, arr in ((0, at0), (10, at10)) for s, v in enumerate(arr)])
    mean, low, high, n = k_gain(means, "new scenario", "maml", "active", "auc_pooled", 0, 10)
    ci = stats.ttest_rel(at10, at0).confidence_interval(0.95)
    assert n == 4 and mean == pytest.approx(float((at10 - at0).mean()))
    assert (low, high) == pytest.approx((ci.low, ci.high))
    assert math.isnan(k_gain(means, "new scenario", "maml", "active", "auc_pooled", 0, 20)[0])


def test_group_measures_score_each_group_on_its_observed_rows():
    """AUC by counting ordered pairs, NMAE = Σ|y − ŷ| / Σ y, masked rows never count, one-class or
    all-zero groups left out."""
    from msmt.experiments.cold_start_score import group_measures
    from msmt.spec.dataset import Task

    tasks = [Task(name="click", kind="binary", label="click"), Task(name="clicks", kind="count", label="clicks")]
    groups = np.array(["a"] * 5 + ["b"] * 3)
    click = np.array([1, 0, 1, 0, 1, 1, 1, 0], dtype=np.float32)
    clicks = np.array([3, 0, 2, 1, 4, 0, 0, 0], dtype=np.float32)
    labels = np.stack([click, clicks], 1)
    mask = np.ones_like(labels, dtype=bool)
    mask[4, :] = False  # row 4 masked for both tasks
    mask[7, 0] = False  # group b: the only negative click masked -> one class
    p_click = np.array([0.9, 0.8, 0.3, 0.1, 0.0, 0.5, 0.5, 0.5])
    p_clicks = np.array([2.0, 1.0, 2.5, 1.0, 100.0, 1.0, 0.0, 0.0])
    got = {(r["group"], r["task"]): r for r in group_measures(groups, labels, mask, {"click": p_click, "clicks": p_clicks}, tasks)}
    assert set(got) == {("a", "click"), ("a", "clicks")}  # b: one class left, zero clicks
    # group a, rows 0-3: positives 0 (0.9), 2 (0.3); negatives 1 (0.8), 3 (0.1): 3 of 4 pairs ordered
    assert got[("a", "click")]["value"] == pytest.approx(0.75) and got[("a", "click")]["rows"] == 4
    assert got[("a", "clicks")]["value"] == pytest.approx((1 + 1 + 0.5 + 0) / 6)


def test_new_scenario_and_id_warmup_targets_read_the_interval_of_the_best_method():
    """New scenario: the meta method best at the largest K (fomaml leads at K = 0, maml at K = 10),
    its gain K=10 − K=0 over seeds; met only when the interval's low end is above 0. ID warm-up:
    met only when the paired interval excludes 0 from below."""
    from msmt.experiments.cold_start_page import targets

    gains = {"maml": [0.05, 0.06, 0.04, 0.05], "fomaml": [0.05, -0.04, 0.06, -0.03]}  # maml: interval > 0; fomaml: mean > 0, interval ∋ 0
    means = pd.DataFrame([dict(state="new scenario", seed=s, K=k, method=m, task="active", metric="auc_pooled", value=0.6 + (g if k else 0.0))
                          for m, gs in gains.items() for s, g in enumerate(gs) for k in (0, 10)])
    summ = pd.DataFrame([dict(state="new scenario", K=0, method="maml", task="active", metric="auc_pooled", mean=0.60),
                         dict(state="new scenario", K=0, method="fomaml", task="active", metric="auc_pooled", mean=0.61),
                         dict(state="new scenario", K=10, method="maml", task="active", metric="auc_pooled", mean=0.65),
                         dict(state="new scenario", K=10, method="fomaml", task="active", metric="auc_pooled", mean=0.62)])
    warm = dict(K=0, task="click", metric="auc", method="idwarmup", reference="base", seeds=5, groups=100)
    diffs = pd.DataFrame([{**warm, "state": "new users", "mean": 0.010, "low": -0.002, "high": 0.022},
                          {**warm, "state": "new items", "mean": 0.010, "low": 0.001, "high": 0.019}])
    rows = {r["target"]: r for r in targets(summ, diffs, means)}
    rise = rows["new scenario, `active` AUC rises with K (best meta method)"]
    g = np.array(gains["maml"])
    half = stats.t.ppf(0.975, 3) * g.std(ddof=1) / 2
    assert rise["verdict"] == "**met**" and rise["numbers"].startswith("maml: K=0: 0.6000, K=10: 0.6500")
    assert f"[{g.mean() - half:.4f}, {g.mean() + half:.4f}] over 4 seeds" in rise["numbers"]
    assert rows["ID warm-up, MovieLens new users: click AUC at K = 0 above the OOV-row baseline"]["verdict"] == "**missed**"
    assert rows["ID warm-up, MovieLens new items: click AUC at K = 0 above the OOV-row baseline"]["verdict"] == "**met**"
    # the same gain with fomaml best at K = 10: mean > 0 but the interval holds 0 -> missed
    summ.loc[3, "mean"] = 0.70
    rise = {r["target"]: r for r in targets(summ, diffs, means)}["new scenario, `active` AUC rises with K (best meta method)"]
    assert rise["verdict"] == "**missed**" and rise["numbers"].startswith("fomaml:")


def test_advertiser_target_needs_the_ratio_and_the_best_naive_forecast():
    """Met only when best meta ≤ 0.95 × fine-tuning AND ≤ the smaller of the two naive forecasts."""
    from msmt.experiments.cold_start_page import targets

    def rows(naive, naive_mean):  # the oracle (0.40, a bound) is neither a naive forecast nor a method to beat
        summ = pd.DataFrame([dict(state="new advertisers", K=k, method=m, task="clicks", metric="nmae", mean=v)
                             for k in (5, 10) for m, v in (("maml", 0.60), ("fomaml", 0.64), ("finetune", 0.70), ("naive", naive),
                                                           ("naive_mean", naive_mean), ("oracle", 0.40))])
        out = targets(summ, pd.DataFrame(columns=["state", "K", "task", "metric", "method", "reference"]), pd.DataFrame(columns=["state", "method", "task", "metric", "K", "seed", "value"]))
        return [r for r in out if r["target"].startswith("new advertisers, clicks NMAE at K = 5")][0]

    met = rows(0.61, 0.65)
    assert met["verdict"] == "**met**"  # 0.60 / 0.70 = 0.857; 0.60 ≤ min(0.61, 0.65)
    assert "best naive forecast 0.6100" in met["numbers"] and met["numbers"].endswith("oracle 0.4000")
    missed = rows(0.59, 0.65)  # the per-advertiser naive forecast beats it; the trailing mean does not
    assert missed["verdict"] == "**missed**" and "best naive forecast 0.5900" in missed["numbers"]
    assert rows(0.65, 0.59)["verdict"] == "**missed**"


@pytest.mark.parametrize("mean, low, verdict", [(0.020, 0.004, "**met**"), (0.020, -0.001, "**missed**"), (0.008, 0.002, "**missed**")])
def test_new_users_target_needs_both_the_margin_and_an_interval_above_zero(mean, low, verdict):
    """best meta − base ≥ 0.01 with the interval's low end > 0: either alone is a miss."""
    from msmt.experiments.cold_start_page import targets

    summ = pd.DataFrame([dict(state="new users", K=10, method="reptile", task="click", metric="auc", mean=0.7)])
    diffs = pd.DataFrame([dict(state="new users", K=10, task="click", metric="auc", method="reptile", reference="base", seeds=5, groups=100,
                               mean=mean, low=low, high=2 * mean - low)])
    rows = targets(summ, diffs, pd.DataFrame(columns=["state", "method", "task", "metric", "K", "seed", "value"]))
    row = [r for r in rows if r["target"] == "MovieLens new users, click AUC at K = 10: best meta ≥ base + 0.01, interval > 0"][0]
    assert row["verdict"] == verdict


def test_a_group_with_exactly_k_rows_has_no_query_and_is_left_out():
    frame = pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 4, "timestamp": [3, 1, 2, 7, 5, 6, 4]})
    support, query = splits_at(frame, "user_id", "timestamp", 3)
    # a (3 rows) does not count at K = 3; b: its 3 earliest rows (t = 4, 5, 6), then t = 7
    assert sorted(support.tolist()) == [4, 5, 6] and query.tolist() == [3]


def test_cached_scores_are_stale_once_any_of_their_runs_is_retrained(tmp_path):
    from msmt.experiments.cold_start_score import newer_than_runs

    runs = [tmp_path / "base", tmp_path / "maml"]
    for i, run in enumerate(runs):
        run.mkdir()
        (run / "metrics.json").write_text("{}")
        os.utime(run / "metrics.json", (100 + i, 100 + i))
    scores = tmp_path / "records.csv"
    assert not newer_than_runs(scores, runs)  # nothing scored yet
    scores.write_text("K\n")
    os.utime(scores, (101, 101))
    assert newer_than_runs(scores, runs)
    os.utime(runs[0] / "metrics.json", (102, 102))  # base retrained after the scores
    assert not newer_than_runs(scores, runs)
