"""The forecasting study's two bound rows line each simulator forecast up with its own row."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from msmt.experiments.forecasting import (
    MEDIAN_ORACLE,
    NEW_SCENARIO_K,
    ZERO_SHOT,
    history_oracle_name,
    history_oracle_records,
    median_oracle_records,
    new_scenario_context,
    new_scenario_rows,
    zero_shot_records,
)
from msmt.spec.config import load_dataset_spec
from msmt.synth.advertiser import (
    HISTORY_ACTIVE,
    MEDIAN_PREFIX,
    NEW_SCENARIO,
    ZERO_SHOT_PREFIX,
    history_oracle_active,
    median_oracle,
    write_advertiser,
    zero_shot_oracle,
)

WORLD = (16, 50, 3)  # advertisers, days (a test period longer than the 7 unscored launch days), seed


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = write_advertiser(tmp_path_factory.mktemp("world"), *WORLD)
    return out, load_dataset_spec(out / "dataset.yaml")


def _overall(records: pd.DataFrame, task: str, metric: str) -> float:
    row = records[(records["scenario"] == "overall") & (records["task"] == task) & (records["metric"] == metric)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


def test_zero_shot_records_score_each_row_by_its_own_bound(world):
    out, spec = world
    records = zero_shot_records(spec, out / "new_scenario.csv", *WORLD)
    assert set(records["variant"]) == {ZERO_SHOT} and set(records["split"]) == {"new K=0"}
    scored = pd.read_csv(out / "new_scenario.csv")
    scored = scored[scored["day"] >= scored["day"].min() + 7]
    bound = scored.merge(zero_shot_oracle(*WORLD), on=["advertiser_id", "scenario", "day"], how="left")
    truth, pred = bound["impressions"].to_numpy(float), bound[f"{ZERO_SHOT_PREFIX}impressions"].to_numpy(float)
    assert _overall(records, "impressions", "nmae") == pytest.approx(np.abs(pred - truth).sum() / np.abs(truth).sum())


def test_history_oracle_records_score_each_row_by_its_own_bound(world):
    _, spec = world
    records = history_oracle_records(spec, *WORLD, windows=(14, None))
    assert set(records["variant"]) == {history_oracle_name(14), history_oracle_name(None)}
    test = pd.read_csv(spec.files.test)
    for window in (14, None):
        bound = test.merge(history_oracle_active(*WORLD, window), on=["advertiser_id", "scenario", "day"], how="left")
        auc = roc_auc_score(bound["active"], bound[HISTORY_ACTIVE])
        assert _overall(records[records["variant"] == history_oracle_name(window)], "active", "auc") == pytest.approx(auc)


def test_median_oracle_records_score_each_row_by_its_own_bound(world):
    out, spec = world
    records = median_oracle_records(spec, *WORLD, out / "new_scenario.csv")
    assert set(records["variant"]) == {MEDIAN_ORACLE}
    assert set(records["split"]) == {"test", *(f"new K={k}" for k in NEW_SCENARIO_K)}
    assert set(records["task"]) == {"impressions", "clicks", "cost"}  # counts only: `active` has no median bound
    bound = median_oracle(*WORLD)
    test = pd.read_csv(spec.files.test).merge(bound, on=["advertiser_id", "scenario", "day"], how="left")
    scored = pd.read_csv(out / "new_scenario.csv")
    scored = scored[scored["day"] >= scored["day"].min() + 7].merge(bound, on=["advertiser_id", "scenario", "day"], how="left")
    for split, rows in (("test", test), ("new K=3", scored)):
        truth, pred = rows["cost"].to_numpy(float), rows[f"{MEDIAN_PREFIX}cost"].to_numpy(float)
        got = _overall(records[records["split"] == split], "cost", "nmae")
        assert got == pytest.approx(np.abs(pred - truth).sum() / np.abs(truth).sum())


def test_new_scenario_context_holds_its_first_k_days_and_the_other_scenarios(world):
    """With K = k the scored rows may read the new scenario's first k days (K = 0: none, zero-shot) and,
    through ``panel.group_keys``, every row of the validation and test files; never a scored day."""
    out, spec = world
    frame, scored, others = new_scenario_rows(spec, out / "new_scenario.csv")
    launch = frame["day"].min()
    assert scored["day"].min() == launch + 7 and len(others) == 2
    for k in NEW_SCENARIO_K:
        context = new_scenario_context(spec, frame, others, k)
        own = context[context["scenario"] == NEW_SCENARIO]
        assert sorted(own["day"].unique()) == list(range(launch, launch + k)), k
        assert len(own) == int((frame["day"] < launch + k).sum())
        assert len(context) - len(own) == sum(len(o) for o in others)


def test_bounds_from_another_world_are_refused(world):
    out, spec = world
    with pytest.raises(ValueError, match="does not hold"):
        zero_shot_records(spec, out / "new_scenario.csv", 12, 50, 3)
    with pytest.raises(ValueError, match="does not hold"):
        history_oracle_records(spec, 12, 50, 3)
    with pytest.raises(ValueError, match="does not hold"):
        median_oracle_records(spec, 12, 50, 3)
