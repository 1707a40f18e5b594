"""The forecasting page's verdicts: hand-built numbers whose ✓ / ✗ is known, the best naive
forecast per column (direction by metric), bold-best cells and the single-seed cell."""

from __future__ import annotations

from msmt.experiments.forecasting_page import (
    best_naive,
    cell,
    naive_checks,
    offset_wins,
    online_targets,
    table,
    with_offset_chosen,
    world_targets,
)


def _v(rows: dict) -> dict:
    """{(variant, split, scenario, task, metric): mean} -> the page's value dict (std 0.01, 3 seeds)."""
    return {k: (m, 0.01, 3) for k, m in rows.items()}


def _checks(lines: list[str]) -> dict[str, tuple[str, str]]:
    """{target label: (mark, detail)} of a target table's rows (the two header lines dropped)."""
    out = {}
    for line in lines:
        parts = [p.strip() for p in line.strip("|").split("|")]
        if parts[0] in ("✓", "✗", "–"):
            out[parts[1]] = (parts[0], parts[2])
    return out


def test_best_naive_is_the_smallest_nmae_and_the_largest_auc_among_the_naive_forecasts_only():
    v = _v({("naive_last", "test", "overall", "clicks", "nmae"): 0.50, ("naive_mean", "test", "overall", "clicks", "nmae"): 0.40,
            ("naive_weekday", "test", "overall", "clicks", "nmae"): 0.45, ("m2m", "test", "overall", "clicks", "nmae"): 0.10,
            ("naive_last", "test", "overall", "active", "auc"): 0.60, ("naive_mean", "test", "overall", "active", "auc"): 0.70,
            ("m2m", "test", "overall", "active", "auc"): 0.99})
    assert best_naive(v, "test", "overall", "clicks", "nmae") == ("naive_mean", 0.40)
    assert best_naive(v, "test", "overall", "active", "auc") == ("naive_mean", 0.70)
    assert best_naive(v, "test", "splash", "clicks", "nmae") is None


def _world() -> dict:
    t = ("test", "overall")
    rows = {
        # impressions: 0.90 / 1.00 = 0.90 ≤ 0.95 ✓; 0.90 / 0.85 = 1.059 ≤ 1.10 ✓
        ("m2m", *t, "impressions", "nmae"): 0.90, ("naive_mean", *t, "impressions", "nmae"): 1.00,
        ("naive_last", *t, "impressions", "nmae"): 1.20, ("oracle", *t, "impressions", "nmae"): 0.85,
        # clicks: 0.97 / 1.00 = 0.97 > 0.95 ✗ (the worse naive, 1.10, would pass it); 0.97 / 0.80 = 1.21 > 1.10 ✗
        ("m2m", *t, "clicks", "nmae"): 0.97, ("naive_mean", *t, "clicks", "nmae"): 1.00,
        ("naive_last", *t, "clicks", "nmae"): 1.10, ("oracle", *t, "clicks", "nmae"): 0.80,
        # active AUC 0.925 < 0.93 ✗; the +history rivals: mmoe 0.92 (the best of them), ple 0.90; dnn (no +history) 0.95
        ("m2m", *t, "active", "auc"): 0.925, ("mmoe+history", *t, "active", "auc"): 0.92,
        ("ple+history", *t, "active", "auc"): 0.90, ("dnn", *t, "active", "auc"): 0.95,
        ("mmoe+history", *t, "clicks", "nmae"): 1.05, ("ple+history", *t, "clicks", "nmae"): 0.99, ("dnn", *t, "clicks", "nmae"): 0.50,
        # minor scenario: impressions 0.50 ≤ 0.60 ✓, cost 0.70 > 0.60 ✗
        ("m2m", "test", "splash", "impressions", "nmae"): 0.50, ("naive_mean", "test", "splash", "impressions", "nmae"): 0.60,
        ("m2m", "test", "splash", "cost", "nmae"): 0.70, ("naive_last", "test", "splash", "cost", "nmae"): 0.60,
        # new scenario, K = 3: clicks 0.80 ≤ 0.90 ✓; K = 0: clicks 1.40 / 1.00 > 1.3 ✗, cost 1.20 / 1.00 ≤ 1.3 ✓
        ("m2m", "new K=3", "overall", "clicks", "nmae"): 0.80, ("naive_weekday", "new K=3", "overall", "clicks", "nmae"): 0.90,
        ("m2m", "new K=0", "overall", "clicks", "nmae"): 1.40, ("oracle", "new K=0", "overall", "clicks", "nmae"): 1.00,
        ("m2m", "new K=0", "overall", "cost", "nmae"): 1.20, ("oracle", "new K=0", "overall", "cost", "nmae"): 1.00,
    }
    return _v(rows)


def test_world_targets_verdicts_follow_the_thresholds_and_directions():
    got = _checks(world_targets(_world(), ["mmoe+history", "ple+history", "dnn"]))
    expected = {
        "impressions: M2M NMAE ≤ 0.95 × best naive": "✓", "clicks: M2M NMAE ≤ 0.95 × best naive": "✗",
        "impressions: M2M NMAE ≤ 1.10 × oracle": "✓", "clicks: M2M NMAE ≤ 1.10 × oracle": "✗",
        "active: M2M AUC ≥ 0.93": "✗",
        "minor scenario `splash`, impressions: M2M ≤ best naive": "✓", "minor scenario `splash`, cost: M2M ≤ best naive": "✗",
        "new scenario, K = 3, clicks: M2M ≤ best naive": "✓",
        "new scenario zero-shot, clicks: M2M ≤ 1.3 × oracle": "✗", "new scenario zero-shot, cost: M2M ≤ 1.3 × oracle": "✓",
        "overall, active AUC: M2M ahead of every +history model": "✓",
        "overall, clicks NMAE: M2M ahead of every +history model": "✓",
    }
    assert {k: got[k][0] for k in expected if k in got} == expected
    # the ratios printed are M2M over the reference
    assert got["clicks: M2M NMAE ≤ 0.95 × best naive"][1].endswith("(naive_mean) = 0.970")
    # the rival named is the best +history model by the metric's direction, never a model without history
    assert got["overall, active AUC: M2M ahead of every +history model"][1] == "0.9250 vs 0.9200 (mmoe+history)"
    assert got["overall, clicks NMAE: M2M ahead of every +history model"][1] == "0.9700 vs 0.9900 (ple+history)"


def test_oracle_targets_name_nmae_own_bound_where_the_page_has_it():
    """The ✓ / ✗ stays against the issue's oracle (the expected value); the median oracle, NMAE's
    bound, is named beside it with M2M's ratio to it (0.90 / 0.80 = 1.125)."""
    v = _world()
    v[("oracle (median)", "test", "overall", "impressions", "nmae")] = (0.80, 0.0, 1)
    got = _checks(world_targets(v, []))
    mark, detail = got["impressions: M2M NMAE ≤ 1.10 × oracle"]
    assert mark == "✓" and detail == "0.9000 / 0.8500 = 1.059; NMAE's bound, the oracle (median): 0.8000, M2M at 1.125 × it"
    assert "median" not in got["clicks: M2M NMAE ≤ 1.10 × oracle"][1]  # no bound row for clicks: nothing named


def test_world_auc_target_is_met_at_the_threshold_and_not_below():
    at = _v({("m2m", "test", "overall", "active", "auc"): 0.93})
    below = _v({("m2m", "test", "overall", "active", "auc"): 0.929})
    assert _checks(world_targets(at, []))["active: M2M AUC ≥ 0.93"][0] == "✓"
    assert _checks(world_targets(below, []))["active: M2M AUC ≥ 0.93"][0] == "✗"


def test_online_and_naive_checks_compare_with_the_best_history_model_and_the_best_naive():
    t = ("test", "overall")
    v = _v({("m2m", *t, "clicks", "nmae"): 0.50, ("naive_mean", *t, "clicks", "nmae"): 0.60, ("naive_last", *t, "clicks", "nmae"): 0.40,
            ("a+history", *t, "clicks", "nmae"): 0.45, ("b+history", *t, "clicks", "nmae"): 0.70, ("c", *t, "clicks", "nmae"): 0.10})
    online = _checks(online_targets(v, ["a+history", "b+history", "c"], ["clicks"]))
    assert online["clicks: M2M NMAE ≤ trailing mean's"][0] == "✓"  # 0.50 ≤ naive_mean's 0.60
    assert online["clicks: M2M NMAE ≤ every +history model's"] == ("✗", "0.5000 vs 0.4500 (a+history)")
    naive = _checks(naive_checks(v, ["clicks"]))
    assert naive["clicks: M2M NMAE ≤ the best naive forecast's"] == ("✗", "0.5000 vs 0.4000 (naive_last)")


OFFSETS = {"auto": "", "blend": " offset=blend", "backtest": " offset=backtest"}


def _offset_runs() -> dict:
    """Two models × two tasks × the three offsets; on validation each pair's lowest offset is planted
    (a: clicks blend, displays backtest; b: clicks backtest, displays a tie of auto and backtest, which
    auto — listed first — takes) and the test split prefers another; the naive row has no offsets."""
    val = {("a", "clicks"): (0.50, 0.40, 0.45), ("a", "displays"): (0.50, 0.49, 0.30),
           ("b", "clicks"): (0.60, 0.61, 0.59), ("b", "displays"): (0.20, 0.25, 0.20)}
    rows = {}
    for (model, task), by_offset in val.items():
        for suffix, x in zip(OFFSETS.values(), by_offset):
            rows[(model + suffix, "val", "overall", task, "nmae")] = x
            rows[(model + suffix, "test", "overall", task, "nmae")] = 1.0 if suffix == " offset=blend" else 2.0
    rows[("naive_last", "val", "overall", "clicks", "nmae")] = 0.1
    return _v(rows)


def test_offset_wins_count_the_lowest_offset_per_model_and_task_on_the_asked_split_only():
    v = _offset_runs()
    assert offset_wins(v, ["a", "b"], ["clicks", "displays"], OFFSETS, "val") == {"auto": 1, "blend": 1, "backtest": 2}
    assert offset_wins(v, ["a", "b"], ["clicks", "displays"], OFFSETS, "test") == {"auto": 0, "blend": 4, "backtest": 0}
    del v[("b offset=blend", "val", "overall", "clicks", "nmae")]  # a pair without every offset does not count
    assert offset_wins(v, ["a", "b"], ["clicks", "displays"], OFFSETS, "val") == {"auto": 1, "blend": 1, "backtest": 1}


def test_with_offset_chosen_gives_the_chosen_runs_the_models_names_and_marks_the_others():
    v = with_offset_chosen(_offset_runs(), ["a", "b"], OFFSETS, "backtest")
    assert v[("a", "val", "overall", "displays", "nmae")][0] == 0.30  # the backtest run under the model's name
    assert v[("a offset=auto", "val", "overall", "displays", "nmae")][0] == 0.50
    assert v[("a offset=blend", "val", "overall", "displays", "nmae")][0] == 0.49
    assert v[("naive_last", "val", "overall", "clicks", "nmae")][0] == 0.1  # other variants unchanged
    assert not any(name.endswith("offset=backtest") for name, *_ in v)
    assert len(v) == len(_offset_runs())


def test_table_bolds_the_best_variant_per_column_by_direction_never_a_bound():
    t = ("test", "overall")
    v = {("a", *t, "clicks", "nmae"): (0.5, 0.01, 3), ("a", *t, "active", "auc"): (0.7, 0.02, 3),
         ("b", *t, "clicks", "nmae"): (0.6, 0.01, 3), ("b", *t, "active", "auc"): (0.8, 0.02, 3),
         ("oracle", *t, "clicks", "nmae"): (0.1, 0.0, 3), ("oracle", *t, "active", "auc"): (0.99, 0.0, 3)}
    lines = table(v, ["a", "b", "c"], "test", "overall", [("clicks", "nmae"), ("active", "auc")])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines[2:]}
    assert set(rows) == {"a", "b", "oracle"}  # c has no number: no row
    assert rows["a"] == ["**0.5000 ± 0.0100**", "0.7000 ± 0.0200"]
    assert rows["b"] == ["0.6000 ± 0.0100", "**0.8000 ± 0.0200**"]
    assert rows["oracle"] == ["0.1000 ± 0.0000", "0.9900 ± 0.0000"]


def test_cell_shows_mean_alone_for_one_seed_and_dash_when_missing():
    v = {("a", "test", "overall", "clicks", "nmae"): (0.5, 0.0, 1), ("b", "test", "overall", "clicks", "nmae"): (0.5, 0.25, 2)}
    assert cell(v, ("a", "test", "overall", "clicks", "nmae")) == "0.5000"
    assert cell(v, ("b", "test", "overall", "clicks", "nmae")) == "0.5000 ± 0.2500"
    assert cell(v, ("c", "test", "overall", "clicks", "nmae")) == "–"


def test_paired_differences_pair_by_seed_on_the_asked_split():
    """One variant − another per training seed on ``split`` (here a new-scenario split), the mean and
    95% t-interval of the differences, * only where the interval excludes 0; other splits are ignored."""
    import pandas as pd
    from scipy import stats

    from msmt.experiments.forecasting_page import paired_differences

    ours, theirs = [0.50, 0.52, 0.55], [0.56, 0.57, 0.58]  # differences -0.06, -0.05, -0.03
    rows = [dict(variant=v, seed=s, split="new K=3", scenario="overall", task="clicks", metric="nmae", value=x)
            for v, values in (("a", ours), ("b", theirs)) for s, x in enumerate(values)]
    rows += [dict(variant="a", seed=s, split="test", scenario="overall", task="clicks", metric="nmae", value=9.0) for s in range(3)]
    lines = paired_differences(pd.DataFrame(rows), "overall", [("a − b", "a", "b")], [("clicks", "nmae")], "K = 3", split="new K=3")
    diffs = [o - t for o, t in zip(ours, theirs)]
    mean = sum(diffs) / 3
    half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / 3**0.5
    assert lines[0] == "| K = 3 | clicks NMAE |"
    assert lines[2] == f"| a − b | {mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}] * |"
    same = paired_differences(pd.DataFrame(rows), "overall", [("a − a", "a", "a")], [("clicks", "nmae")], split="new K=3")
    assert same[2].endswith("+0.0000 [+0.0000, +0.0000] |")  # no difference: no star
