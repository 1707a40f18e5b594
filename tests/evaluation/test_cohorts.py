"""Metrics per cohort of the declared group (``dataset.group``): the rows whose user (advertiser…)
has a row of its own in the training vocabulary (``∈ train``) and the rest (``∉ train``, the
cold-start rows), measured by the one evaluator and read into bench leaderboards."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.evaluation.evaluate import group_cohorts
from msmt.evaluation.metrics import cohort_labels, compute_metrics, is_cohort
from msmt.spec.config import load_dataset_spec
from msmt.spec.dataset import Task, TaskKind
from msmt.synth.simple import write_simple


def test_each_cohort_is_measured_on_its_own_rows():
    rng = np.random.default_rng(0)
    n = 500
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    seen = rng.random(n) < 0.6
    p[~seen] = rng.uniform(0, 1, (~seen).sum())  # new users: no signal
    tasks = [Task(name="click", label="click", kind=TaskKind.BINARY)]
    scenarios = rng.choice(["a", "b"], n).astype(object)
    plain = compute_metrics(tasks, {"click": y}, {"click": p}, scenarios)
    out = compute_metrics(tasks, {"click": y}, {"click": p}, scenarios, cohorts=cohort_labels("user_id", seen))
    assert {k: v for k, v in out.items() if k != "cohorts"} == plain  # the cohorts add a block, change nothing else
    assert set(out["cohorts"]) == {"user_id ∈ train", "user_id ∉ train"}
    for name, rows in (("user_id ∈ train", seen), ("user_id ∉ train", ~seen)):
        block = out["cohorts"][name]["click"]
        assert block["rows"] == rows.sum()
        assert block["auc"] == pytest.approx(roc_auc_score(y[rows], p[rows]))
    assert out["cohorts"]["user_id ∈ train"]["click"]["auc"] > 0.8 > out["cohorts"]["user_id ∉ train"]["click"]["auc"]
    assert is_cohort("user_id ∉ train") and is_cohort("user_id ∈ train")
    assert not is_cohort("overall") and not is_cohort("new scenario") and not is_cohort("search")


@pytest.fixture(scope="module")
def simple_world(tmp_path_factory):
    out = write_simple(tmp_path_factory.mktemp("cohorts"), rows=1500, seed=2)
    cfg = yaml.safe_load((out / "dataset.yaml").read_text())
    cfg["group"] = "user_id"
    (out / "dataset.yaml").write_text(yaml.safe_dump(cfg))
    return out


def test_a_row_is_new_exactly_when_its_group_value_never_occurs_in_training(simple_world):
    spec = load_dataset_spec(simple_world / "dataset.yaml")
    train, test = read_data(simple_world / "train.csv", spec), read_data(simple_world / "test.csv", spec)
    test = test.copy()
    test.loc[test.index[::3], "user_id"] = "user-never-seen"  # plant unseen users
    schema = fit_schema(train, spec)
    labels = group_cohorts(schema, encode_frame(test, schema, with_labels=False))
    expected_new = ~test["user_id"].astype(str).isin(set(train["user_id"].astype(str)))
    assert expected_new.sum() >= len(test) // 3
    np.testing.assert_array_equal(labels == "user_id ∉ train", expected_new.to_numpy())
    np.testing.assert_array_equal(labels == "user_id ∈ train", ~expected_new.to_numpy())


def test_no_group_or_a_hashed_group_has_no_cohorts(simple_world):
    spec = load_dataset_spec(simple_world / "dataset.yaml")
    train = read_data(simple_world / "train.csv", spec)
    assert group_cohorts(fit_schema(train, spec.model_copy(update={"group": None})), encode_frame(train, fit_schema(train, spec))) is None
    cfg = yaml.safe_load((simple_world / "dataset.yaml").read_text())
    cfg["features"]["sparse"] = [{"name": "user_id", "hash_buckets": 64}, "item_id", "item_category"]
    path = simple_world / "hashed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    hashed = load_dataset_spec(path)
    schema = fit_schema(read_data(simple_world / "train.csv", hashed), hashed)
    assert group_cohorts(schema, encode_frame(read_data(simple_world / "test.csv", hashed), schema, with_labels=False)) is None
