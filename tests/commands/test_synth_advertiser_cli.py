"""End to end: synth advertiser -> train -> evaluate/predict with --context, oracle block, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from msmt.cli import main
from msmt.data.fit import fit_schema
from msmt.data.loading import load_splits, read_data
from msmt.data.tensorize import encode_frame
from msmt.spec.config import load_dataset_spec
from msmt.spec.errors import DataError
from msmt.spec.fitted import FittedSchema


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("adv")
    assert _run(["synth", "advertiser", "--out", str(out / "data"), "--advertisers", "40", "--days", "24", "--seed", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(sim):
    run = sim / "run"
    argv = ["train", str(sim / "data" / "experiment.yaml"), "--out", str(run), "--quiet",
            "--set", "train.epochs=1", "--set", "train.num_threads=1"]
    assert _run(argv) == 0
    return run


def test_synth_writes_config_that_declares_the_contract(sim):
    d = sim / "data"
    for name in ("train.csv", "validation.csv", "test.csv", "new_scenario.csv", "dataset.yaml", "experiment.yaml", "plots/scenario_correlation.png"):
        assert (d / name).is_file(), name
    spec = load_dataset_spec(d / "dataset.yaml")
    assert spec.group == "advertiser_id"
    assert {"industry", "size_tier", "region", "account_age", "budget_level"} <= set(spec.features.names)
    assert {"traffic_volume", "ad_format", "auction_type"} <= set(spec.scenario.attributes.names)
    assert [(t.name, t.kind.value) for t in spec.tasks] == [("impressions", "count"), ("clicks", "count"), ("cost", "count"), ("active", "binary")]
    cols = set(spec.features.columns + spec.scenario.attributes.columns)
    assert not any(c.startswith("true_") for c in cols) and "event" not in cols
    assert spec.panel is not None and spec.panel.event == "event"


def test_schema_json_holds_panel_encoders(run_dir):
    panel = json.loads((run_dir / "schema.json").read_text())["extra"]["panel"]
    assert panel["window"] == 14
    assert panel["metrics"] == ["impressions", "clicks", "cost"]
    assert set(panel["events"]) >= {"none", "pause", "bid_up"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"}
    assert set(metrics["test"]["oracle"]["overall"]) == {"impressions", "clicks", "cost", "active"}


def test_training_splits_take_history_from_earlier_splits(sim, run_dir):
    spec = load_dataset_spec(sim / "data" / "dataset.yaml")
    schema = FittedSchema.load(run_dir / "schema.json")
    splits = load_splits(spec)
    whole = pd.concat(list(splits.values()), ignore_index=True)
    ref = encode_frame(whole, schema)
    n_tr, n_va = len(splits["train"]), len(splits["validation"])
    test = encode_frame(splits["test"], schema, context=pd.concat([splits["train"], splits["validation"]], ignore_index=True))
    for key in ("seq.behaviour", "seq.performance", "seq.mask"):
        assert torch.equal(test[key], ref[key][n_tr + n_va :])
    assert test["seq.mask"].all(dim=1).float().mean() > 0.5  # 14-day windows are mostly filled


def test_evaluate_with_context_reports_model_and_oracle(sim, run_dir, capsys):
    d = sim / "data"
    out = sim / "eval.json"
    assert _run(["evaluate", str(run_dir), "--data", str(d / "test.csv"), "--context", str(d / "validation.csv"), "--out", str(out)]) == 0
    M = json.loads(out.read_text())
    assert M["rows"] == len(pd.read_csv(d / "test.csv"))
    oracle = M["oracle"]
    assert set(oracle["scenarios"]) == set(M["scenarios"])
    # the oracle is scored from true_<task> exactly as the metrics module would score them
    frame = pd.read_csv(d / "test.csv")
    y, p = frame["impressions"].to_numpy(float), frame["true_impressions"].to_numpy(float)
    assert oracle["overall"]["impressions"]["nmae"] == pytest.approx(np.abs(y - p).sum() / np.abs(y).sum())
    assert "(" in capsys.readouterr().out  # the table prints `model (oracle)`
    # the new scenario can be scored (unknown scenario index, known attributes)
    new_out = sim / "new.json"
    assert _run(["evaluate", str(run_dir), "--data", str(d / "new_scenario.csv"), "--out", str(new_out)]) == 0
    assert set(json.loads(new_out.read_text())["scenarios"]) == {"mini_program"}


def test_predict_with_context_and_unlabelled_rows(sim, run_dir):
    d = sim / "data"
    test = pd.read_csv(d / "test.csv")
    unlabelled = test.drop(columns=["impressions", "clicks", "cost", "active", "event"] + [c for c in test if c.startswith("true_")])
    path = sim / "unlabelled.csv"
    unlabelled.to_csv(path, index=False)
    out = sim / "pred.csv"
    assert _run(["predict", str(run_dir), "--data", str(path), "--context", str(d / "validation.csv"), "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == len(test) and {"pred_impressions", "pred_active"} <= set(pred.columns)
    # history of an unlabelled file comes only from the context: its own rows have no metrics
    spec = load_dataset_spec(d / "dataset.yaml")
    schema = FittedSchema.load(run_dir / "schema.json")
    enc = encode_frame(read_data(path, spec), schema, with_labels=False, context=read_data(d / "validation.csv", spec))
    assert enc["seq.mask"][:, -1].all()  # day t-1 exists in the file itself (observed, metrics unknown)


def test_missing_context_file_is_a_one_line_error(sim, run_dir, capsys):
    code = _run(["evaluate", str(run_dir), "--data", str(sim / "data" / "test.csv"), "--context", str(sim / "nope.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv" in err[0] and "no such file" in err[0]


def test_missing_panel_key_column_names_it(sim, run_dir, capsys):
    frame = pd.read_csv(sim / "data" / "test.csv").drop(columns=["day"])
    bad = sim / "noday.csv"
    frame.to_csv(bad, index=False)
    assert _run(["evaluate", str(run_dir), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "noday.csv" in err and "'day'" in err and "missing column" in err


def test_fit_schema_rejects_missing_metric_column(sim):
    spec = load_dataset_spec(sim / "data" / "dataset.yaml")
    train = read_data(sim / "data" / "train.csv", spec).drop(columns=["event"])
    with pytest.raises(DataError, match="column .event.: missing column"):
        fit_schema(train, spec)
