"""Panel history builder: hand-built example, naive reference, leakage, context, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from msmt.data.fit import fit_panel
from msmt.data.panel import encode_panel, history_index, trailing_mean
from msmt.spec.dataset import DatasetSpec, PanelSpec
from msmt.spec.errors import DataError

SPEC = PanelSpec(keys=("adv", "scen"), time="day", window=3, metrics=("imp", "cost"), event="ev")


def _hand_frame() -> pd.DataFrame:
    # entity (a, s1): days 0, 1, 3 (day 2 missing); entity (a, s2): day 2 only; entity (b, s1): day 3
    return pd.DataFrame(
        {
            "adv": ["a", "a", "a", "a", "b"],
            "scen": ["s1", "s1", "s2", "s1", "s1"],
            "day": [0, 1, 2, 3, 3],
            "imp": [np.e - 1, 0.0, 5.0, 9.0, 1.0],
            "cost": [1.0, 2.0, np.nan, 4.0, 0.0],
            "ev": ["none", "pause", "bid_up", "none", "new_creative"],
        }
    )


def test_fit_panel_records_contract_keys():
    fitted = fit_panel(_hand_frame(), SPEC)
    assert fitted.window == 3
    assert fitted.metrics == ("imp", "cost")
    assert fitted.events == ("bid_up", "new_creative", "none", "pause")
    logs = np.log1p(np.array([np.e - 1, 0.0, 5.0, 9.0, 1.0]))
    assert fitted.metric_stats["imp"]["mean"] == pytest.approx(logs.mean())
    assert fitted.metric_stats["imp"]["std"] == pytest.approx(logs.std())


def test_hand_built_example():
    frame = _hand_frame()
    fitted = fit_panel(frame, SPEC)
    seq = encode_panel(frame, SPEC, fitted)
    ev = {e: i + 2 for i, e in enumerate(fitted.events)}
    # row 3 = (a, s1, day 3): window = days 0, 1, 2 -> observed, observed, missing
    np.testing.assert_array_equal(seq["seq.mask"][3], [True, True, False])
    np.testing.assert_array_equal(seq["seq.behaviour"][3], [ev["none"], ev["pause"], 0])
    st = fitted.metric_stats
    expected_imp = [(1.0 - st["imp"]["mean"]) / st["imp"]["std"], (0.0 - st["imp"]["mean"]) / st["imp"]["std"], 0.0]
    np.testing.assert_allclose(seq["seq.performance"][3, :, 0], expected_imp, rtol=1e-5)
    expected_cost = [(np.log1p(1.0) - st["cost"]["mean"]) / st["cost"]["std"], (np.log1p(2.0) - st["cost"]["mean"]) / st["cost"]["std"], 0.0]
    np.testing.assert_allclose(seq["seq.performance"][3, :, 1], expected_cost, rtol=1e-5)
    # row 1 = (a, s1, day 1): only day 0, at the most recent position... day 0 is t-1 -> position W-1
    np.testing.assert_array_equal(seq["seq.mask"][1], [False, False, True])
    np.testing.assert_array_equal(seq["seq.behaviour"][1], [0, 0, ev["none"]])
    # first rows of an entity and other entities' rows never leak in
    assert not seq["seq.mask"][0].any() and not seq["seq.mask"][2].any() and not seq["seq.mask"][4].any()
    assert seq["seq.behaviour"].dtype == np.int64 and seq["seq.performance"].dtype == np.float32
    assert seq["seq.performance"].shape == (5, 3, 2) and seq["seq.mask"].dtype == bool


def test_unseen_event_is_oov_and_missing_value_is_zero():
    frame = _hand_frame()
    fitted = fit_panel(frame.iloc[:3], SPEC)  # "new_creative" unseen in "training"
    later = pd.DataFrame({"adv": ["b", "b"], "scen": ["s1", "s1"], "day": [3, 4], "imp": [1.0, 2.0], "cost": [np.nan, 1.0], "ev": ["new_creative", "none"]})
    seq = encode_panel(later, SPEC, fitted)
    assert seq["seq.behaviour"][1, -1] == 1  # OOV
    assert seq["seq.mask"][1, -1] and seq["seq.performance"][1, -1, 1] == 0.0  # observed step, missing cost
    # the naive forecasts read seq.present: the step is there for impressions, not for the missing cost
    np.testing.assert_array_equal(seq["seq.present"][1, -1], [True, False])
    assert seq["seq.raw"][1, -1].tolist() == [1.0, 0.0]


def _random_panel(rng, n_ent=6, days=25, p_obs=0.7) -> pd.DataFrame:
    rows = [(f"e{e % 3}", f"s{e // 3}", d) for e in range(n_ent) for d in range(days) if rng.random() < p_obs]
    frame = pd.DataFrame(rows, columns=["adv", "scen", "day"])
    frame = frame.sample(frac=1.0, random_state=int(rng.integers(1000))).reset_index(drop=True)  # any row order
    frame["imp"] = rng.poisson(20, len(frame)).astype(float)
    frame["cost"] = rng.gamma(2.0, 3.0, len(frame))
    frame["ev"] = rng.choice(["none", "bid_up", "pause"], len(frame))
    return frame


def _naive(frame: pd.DataFrame, row: int, spec: PanelSpec, fitted) -> tuple[list, list, list]:
    """Per-row loop reference: look up the entity's row for each earlier day."""
    r = frame.iloc[row]
    mask, beh, perf = [], [], []
    for lag in range(spec.window, 0, -1):
        hit = frame[(frame.adv == r.adv) & (frame.scen == r.scen) & (frame.day == r.day - lag)]
        if len(hit):
            h = hit.iloc[-1]
            mask.append(True)
            beh.append(fitted.events.index(h.ev) + 2)
            perf.append([(np.log1p(h[m]) - fitted.metric_stats[m]["mean"]) / fitted.metric_stats[m]["std"] for m in spec.metrics])
        else:
            mask.append(False)
            beh.append(0)
            perf.append([0.0] * len(spec.metrics))
    return mask, beh, perf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_reference(seed):
    rng = np.random.default_rng(seed)
    spec = PanelSpec(keys=("adv", "scen"), time="day", window=int(rng.integers(1, 9)), metrics=("imp", "cost"), event="ev")
    frame = _random_panel(rng)
    fitted = fit_panel(frame, spec)
    seq = encode_panel(frame, spec, fitted)
    for row in range(len(frame)):
        mask, beh, perf = _naive(frame, row, spec, fitted)
        np.testing.assert_array_equal(seq["seq.mask"][row], mask)
        np.testing.assert_array_equal(seq["seq.behaviour"][row], beh)
        np.testing.assert_allclose(seq["seq.performance"][row], np.array(perf, dtype=np.float32), rtol=1e-5, atol=1e-6)


def test_no_leakage_from_own_step_or_later():
    """Changing a row's own metrics/event and every later row never changes its history."""
    rng = np.random.default_rng(7)
    frame = _random_panel(rng, n_ent=4, days=30, p_obs=0.9)
    fitted = fit_panel(frame, SPEC)
    before = encode_panel(frame, SPEC, fitted)
    cut = 15
    changed = frame.copy()
    later = changed["day"] >= cut
    changed.loc[later, "imp"] = changed.loc[later, "imp"] * 100 + 7
    changed.loc[later, "cost"] = np.nan
    changed.loc[later, "ev"] = "pause"
    after = encode_panel(changed, SPEC, fitted)
    rows = (frame["day"] <= cut).to_numpy()  # a row at day `cut` sees only days < cut
    for key in ("seq.mask", "seq.behaviour", "seq.performance"):
        np.testing.assert_array_equal(before[key][rows], after[key][rows])
    # sanity: rows after the cut do see the change (the test can fail)
    assert not np.array_equal(before["seq.performance"][~rows], after["seq.performance"][~rows])
    # and deleting later rows entirely changes nothing for the earlier ones
    trimmed = frame[frame["day"] <= cut].reset_index(drop=True)
    trimmed_seq = encode_panel(trimmed, SPEC, fitted)
    np.testing.assert_array_equal(trimmed_seq["seq.performance"], before["seq.performance"][rows])


def test_context_gives_the_same_history_as_one_table():
    rng = np.random.default_rng(3)
    frame = _random_panel(rng, days=30)
    fitted = fit_panel(frame, SPEC)
    whole = encode_panel(frame, SPEC, fitted)
    late = (frame["day"] >= 20).to_numpy()
    split = encode_panel(frame[late].reset_index(drop=True), SPEC, fitted, context=frame[~late].reset_index(drop=True))
    for key in whole:
        np.testing.assert_array_equal(whole[key][late], split[key])
    alone = encode_panel(frame[late].reset_index(drop=True), SPEC, fitted)
    assert alone["seq.mask"].sum() < split["seq.mask"].sum()  # without context: less history


def test_dates_and_trailing_mean():
    frame = pd.DataFrame(
        {"adv": ["a"] * 4, "scen": ["x"] * 4, "day": ["2020-04-01", "2020-04-02", "2020-04-04", "2020-04-05"], "imp": [2.0, 4.0, 6.0, 8.0], "cost": [1.0] * 4, "ev": ["none"] * 4}
    )
    fitted = fit_panel(frame, SPEC)
    seq = encode_panel(frame, SPEC, fitted)
    np.testing.assert_array_equal(seq["seq.mask"][3], [True, False, True])  # 04-02, 04-03 (missing), 04-04
    np.testing.assert_allclose(trailing_mean(frame, SPEC, "imp"), [np.nan, 2.0, 3.0, 5.0])


def test_bad_time_value_names_file_and_column():
    frame = _hand_frame()
    frame["day"] = frame["day"].astype(object)
    frame.loc[2, "day"] = "soon"
    frame.attrs["source"] = "panel.csv"
    with pytest.raises(DataError, match=r"panel.csv: column 'day': not an integer step or a date: 'soon' in data row 3"):
        fit_panel(frame, SPEC)


def test_panel_spec_validation():
    with pytest.raises(ValueError, match="metrics"):
        PanelSpec(keys=("a",), time="t", window=3)
    with pytest.raises(ValueError, match="extra|unknown|Extra"):
        DatasetSpec.model_validate(
            {"files": {"train": "x.csv"}, "scenario": {"column": "s"}, "tasks": [{"name": "y", "label": "y", "kind": "count"}],
             "panel": {"keys": ["a"], "time": "t", "metrics": ["m"], "windw": 3}}
        )


def test_empty_frame_and_batch_independence():
    frame = _hand_frame()
    fitted = fit_panel(frame, SPEC)
    empty = encode_panel(frame.iloc[:0], SPEC, fitted)
    assert empty["seq.performance"].shape == (0, 3, 2)
    # a row's history depends on history rows, not on which other rows are scored with it
    ctx = frame.iloc[:3]
    alone = encode_panel(frame.iloc[[3]], SPEC, fitted, context=ctx)
    together = encode_panel(frame.iloc[3:], SPEC, fitted, context=ctx)
    for key in alone:
        np.testing.assert_array_equal(alone[key][0], together[key][0])


def test_raw_values_and_presence_match_the_history_rows():
    """``seq.raw`` holds the history's metric values as they are (0 and not present where missing)."""
    rng = np.random.default_rng(5)
    frame = _random_panel(rng, days=20)
    fitted = fit_panel(frame, SPEC)
    seq = encode_panel(frame, SPEC, fitted)
    index, source = history_index(frame, SPEC)
    for j, m in enumerate(SPEC.metrics):
        values = source[m].to_numpy(dtype=float)
        expected = np.where(index >= 0, values[np.maximum(index, 0)], np.nan)
        present = ~np.isnan(expected)
        np.testing.assert_array_equal(seq["seq.present"][..., j], present)
        np.testing.assert_allclose(seq["seq.raw"][..., j][present], expected[present].astype(np.float32), rtol=1e-6)
        assert (seq["seq.raw"][..., j][~present] == 0).all()


def test_without_own_history_only_the_context_is_history():
    """``own_history=False``: the frame's earlier rows are not history (a new scenario scored with
    exactly the days given as context, or none: zero-shot)."""
    rng = np.random.default_rng(4)
    frame = _random_panel(rng, days=24, p_obs=1.0)
    fitted = fit_panel(frame, SPEC)
    early, late = frame[frame["day"] < 10].reset_index(drop=True), frame[frame["day"] >= 10].reset_index(drop=True)
    alone = encode_panel(late, SPEC, fitted, own_history=False)
    assert not alone["seq.mask"].any()
    with_k = encode_panel(late, SPEC, fitted, context=early, own_history=False)
    full = encode_panel(frame, SPEC, fitted)
    rows = (frame["day"] >= 10).to_numpy()
    first_day = (late["day"] == 10).to_numpy()
    # the first scored day sees the same history either way; later days see no day >= 10
    np.testing.assert_array_equal(with_k["seq.mask"][first_day], full["seq.mask"][rows][first_day])
    day = late["day"].to_numpy()[:, None]
    steps = day - np.arange(SPEC.window, 0, -1)[None, :]
    assert not with_k["seq.mask"][steps >= 10].any()
    assert with_k["seq.mask"][steps < 10].sum() == full["seq.mask"][rows][steps < 10].sum()


GROUP_SPEC = SPEC.model_copy(update={"group_keys": ("adv",)})


def _naive_group(history: pd.DataFrame, row: pd.Series, spec: PanelSpec, by: str = "adv") -> tuple[list, list, list]:
    """Loop reference of a peer channel: the other units sharing the row's ``by`` (``adv``: its
    group, the advertiser's other scenarios; ``scen``: its cross-section, the scenario's other
    advertisers), per earlier day."""
    other = "scen" if by == "adv" else "adv"
    sums, counts, actives = [], [], []
    for lag in range(spec.window, 0, -1):
        hit = history[(history[by] == row[by]) & (history[other] != row[other]) & (history.day == row.day - lag)]
        hit = hit.drop_duplicates(["adv", "scen", "day"], keep="last")
        sums.append(hit[list(spec.metrics)].fillna(0.0).sum().to_numpy())
        counts.append(len(hit))
        actives.append(int((hit[list(spec.metrics)].fillna(0.0) > 0).any(axis=1).sum()))
    return sums, counts, actives


def _pause_some(frame: pd.DataFrame, rng) -> pd.DataFrame:
    """Paused days: every metric 0 (or 0 and missing), so a row is not always an active unit."""
    paused = rng.random(len(frame)) < 0.3
    frame.loc[paused, ["imp", "cost"]] = 0.0
    frame.loc[paused & (rng.random(len(frame)) < 0.3), "cost"] = np.nan
    return frame


@pytest.mark.parametrize("seed", [0, 1])
def test_group_channel_matches_naive_reference(seed):
    """``seq.group_raw`` / ``seq.group_count`` / ``seq.group_active``: the sums over the group's
    *other* units, how many have a row, and how many of those were active, per lag."""
    rng = np.random.default_rng(seed)
    spec = GROUP_SPEC.model_copy(update={"window": int(rng.integers(2, 7))})
    frame = _pause_some(_random_panel(rng, n_ent=9, days=20), rng)
    frame.loc[rng.random(len(frame)) < 0.1, "cost"] = np.nan  # a missing value adds nothing
    fitted = fit_panel(frame, spec)
    seq = encode_panel(frame, spec, fitted)
    assert seq["seq.group_raw"].shape == (len(frame), spec.window, 2) and seq["seq.group_count"].shape == (len(frame), spec.window)
    for i in range(len(frame)):
        sums, counts, actives = _naive_group(frame, frame.iloc[i], spec)
        np.testing.assert_array_equal(seq["seq.group_count"][i], counts)
        np.testing.assert_array_equal(seq["seq.group_active"][i], actives)
        np.testing.assert_allclose(seq["seq.group_raw"][i], np.array(sums, dtype=np.float32), rtol=1e-5)
    assert 0 < seq["seq.group_active"].sum() < seq["seq.group_count"].sum()  # paused units are in the count only
    assert "seq.group_raw" not in encode_panel(frame, SPEC, fit_panel(frame, SPEC))  # only when declared


def test_group_channel_zero_shot_reads_only_the_context():
    """A new scenario scored zero-shot (``own_history=False``): its own rows are no one's history,
    but its advertiser's other scenarios given as context fill the group channel."""
    rng = np.random.default_rng(3)
    frame = _pause_some(_random_panel(rng, n_ent=9, days=20, p_obs=1.0), rng)
    new = frame[frame["scen"] == "s2"].reset_index(drop=True)
    others = frame[frame["scen"] != "s2"].reset_index(drop=True)
    fitted = fit_panel(others, GROUP_SPEC)
    seq = encode_panel(new, GROUP_SPEC, fitted, context=others, own_history=False)
    assert not seq["seq.mask"].any()  # no history of its own
    for i in range(len(new)):
        sums, counts, actives = _naive_group(others, new.iloc[i], GROUP_SPEC)
        np.testing.assert_array_equal(seq["seq.group_count"][i], counts)
        np.testing.assert_array_equal(seq["seq.group_active"][i], actives)
        np.testing.assert_allclose(seq["seq.group_raw"][i], np.array(sums, dtype=np.float32), rtol=1e-5)
    assert seq["seq.group_count"].sum() > 0
    alone = encode_panel(new, GROUP_SPEC, fitted, own_history=False)  # without the context: nothing
    assert not alone["seq.group_count"].any() and not alone["seq.group_raw"].any() and not alone["seq.group_active"].any()


def test_cross_section_channel_matches_naive_reference():
    """``panel.cross_section_keys: [scen]``: ``seq.cross_*`` sums the scenario's *other* advertisers
    per lag, beside the group channel (``seq.group_*``, the advertiser's other scenarios) — each
    channel keyed by its own columns."""
    rng = np.random.default_rng(5)
    spec = GROUP_SPEC.model_copy(update={"window": 4, "cross_section_keys": ("scen",)})
    frame = _pause_some(_random_panel(rng, n_ent=9, days=16), rng)
    seq = encode_panel(frame, spec, fit_panel(frame, spec))
    assert seq["seq.cross_raw"].shape == (len(frame), 4, 2) and seq["seq.cross_count"].shape == (len(frame), 4)
    for i in range(len(frame)):
        for prefix, by in (("seq.group", "adv"), ("seq.cross", "scen")):
            sums, counts, actives = _naive_group(frame, frame.iloc[i], spec, by=by)
            np.testing.assert_array_equal(seq[f"{prefix}_count"][i], counts)
            np.testing.assert_array_equal(seq[f"{prefix}_active"][i], actives)
            np.testing.assert_allclose(seq[f"{prefix}_raw"][i], np.array(sums, dtype=np.float32), rtol=1e-5)
    assert not np.array_equal(seq["seq.cross_count"], seq["seq.group_count"])  # two different peer sets
    assert "seq.cross_raw" not in encode_panel(frame, GROUP_SPEC, fit_panel(frame, GROUP_SPEC))  # only when declared
    empty = encode_panel(frame.iloc[:0], spec, fit_panel(frame, spec))
    assert empty["seq.cross_raw"].shape == (0, 4, 2) and empty["seq.cross_active"].shape == (0, 4)


def test_cross_section_of_a_new_scenario_is_its_first_days():
    """A new scenario scored with K days of context (its first K days, ``own_history=False``, as
    the forecasting study does): the cross-section holds its other advertisers' rows of those K
    days and nothing later; zero-shot (no rows of it as context) it is empty."""
    rng = np.random.default_rng(4)
    frame = _random_panel(rng, n_ent=9, days=20, p_obs=1.0)
    spec = GROUP_SPEC.model_copy(update={"window": 6, "cross_section_keys": ("scen",)})
    new = frame[frame["scen"] == "s2"].reset_index(drop=True)
    others = frame[frame["scen"] != "s2"].reset_index(drop=True)
    scored = new[new["day"] >= 12].reset_index(drop=True)
    fitted = fit_panel(others, spec)
    k_days = new[new["day"] < 10]
    seq = encode_panel(scored, spec, fitted, context=pd.concat([others, k_days], ignore_index=True), own_history=False)
    for i in range(len(scored)):
        sums, counts, actives = _naive_group(k_days, scored.iloc[i], spec, by="scen")
        np.testing.assert_array_equal(seq["seq.cross_count"][i], counts)
        np.testing.assert_allclose(seq["seq.cross_raw"][i], np.array(sums, dtype=np.float32), rtol=1e-5)
    assert seq["seq.cross_count"].sum() > 0
    zero_shot = encode_panel(scored, spec, fitted, context=others, own_history=False)
    assert not zero_shot["seq.cross_count"].any() and zero_shot["seq.group_count"].any()


def test_group_keys_validation():
    with pytest.raises(ValueError, match="group_keys.*not in panel.keys"):
        PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp",), group_keys=("industry",))
    with pytest.raises(ValueError, match="strict subset"):
        PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp",), group_keys=("scen", "adv"))
    with pytest.raises(ValueError, match="cross_section_keys.*not in panel.keys"):
        PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp",), cross_section_keys=("region",))
    with pytest.raises(ValueError, match="cross_section_keys must be a strict subset"):
        PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp",), cross_section_keys=("adv", "scen"))


def test_the_panel_time_cannot_be_a_unit_key():
    """A unit is named by its keys and its rows ordered by the time: the time column cannot be one of the keys."""
    with pytest.raises(ValueError, match="must not also be a key"):
        PanelSpec(keys=("adv", "day"), time="day", metrics=("imp",))
