"""Serving panel models: history from the store or the request, equal to `msmt predict --context`;
observations recorded idempotently; rows of training files accepted; bad history requests get 4xx."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from serve_helpers import json_records, msmt_predict

from helpers import run_main
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.rundir.layout import load_run
from msmt.serving.app import create_app
from msmt.serving.encode import PanelEncoder
from msmt.serving.history import SqliteHistory, last_of_duplicates, observations_from_frame, open_history
from msmt.serving.request import build_request_models, history_columns
from msmt.spec.errors import ConfigError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def panel_run(trained_panel_run) -> Path:
    return trained_panel_run("mmoe")


@pytest.fixture(scope="module")
def sim(panel_run, trained_panel_run, tmp_path_factory):
    """The simulator's files: history = train + validation (one file), rows to score = test."""
    data = trained_panel_run.data_dir
    spec = load_run(panel_run).schema.spec
    out = tmp_path_factory.mktemp("sim_files")
    history = pd.concat([pd.read_csv(data / "train.csv"), pd.read_csv(data / "validation.csv")], ignore_index=True)
    history.to_csv(out / "history.csv", index=False)
    return {"history": out / "history.csv", "test": data / "test.csv", "spec": spec, "dir": out}


@pytest.fixture(scope="module")
def sim_store(panel_run, sim, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("store") / "history.db"
    assert run_main("history", "load", panel_run, "--data", sim["history"], "--db", db) == 0
    return db


def _answer(client, body, status=200) -> dict:
    resp = client.post("/v1/predict", json=body)
    assert resp.status_code == status, resp.text
    return resp.json()


def _assert_matches(answer: dict, expected: pd.DataFrame, tasks, atol=1e-6) -> None:
    for task in tasks:
        got = np.array([p[task] for p in answer["predictions"]])
        np.testing.assert_allclose(got, expected[f"pred_{task}"].to_numpy(), atol=atol, rtol=0, err_msg=task)


# ---------------------------------------------------------------------------- parity with msmt predict


def test_window_from_the_store_is_the_one_predict_context_builds(panel_run, sim, sim_store):
    """The seq.* tensors the service encodes from the store equal `encode_frame(rows, context=file)`."""
    run = load_run(panel_run)
    spec = run.schema.spec
    rows = read_data(sim["test"], spec)
    context = read_data(sim["history"], spec)
    row_model, _, cols = build_request_models(run.schema, 10_000)
    validated = [row_model.model_validate(r) for r in json_records(rows)]
    store = SqliteHistory(sim_store, spec.panel)
    batch, info, _ = PanelEncoder(run.schema, cols, history_columns(run.schema), store)(validated)
    reference = encode_frame(rows, run.schema, with_labels=False, context=context)
    assert batch.keys() == reference.keys()
    for key in reference:
        assert batch[key].dtype == reference[key].dtype and torch.equal(batch[key], reference[key]), key
    assert info["observed"] == reference["seq.mask"].sum(1).tolist()
    assert max(info["observed"]) == spec.panel.window and min(info["observed"]) > 0
    store.close()


def test_served_forecasts_equal_msmt_predict_with_context(panel_run, sim, sim_store, tmp_path):
    """Store, explicit context and both together all give `msmt predict --data test --context history`."""
    run = load_run(panel_run)
    spec = run.schema.spec
    tasks = spec.task_names
    expected = msmt_predict(panel_run, sim["test"], tmp_path / "pred.csv", context=sim["history"])
    rows = json_records(read_data(sim["test"], spec))  # every column of the file: labels, true_* too

    with_store = TestClient(create_app(run, max_rows=5000, history=sim_store))
    answer = _answer(with_store, {"rows": rows})
    _assert_matches(answer, expected, tasks)
    assert answer["ignored"] == ["active", "true_active", "true_clicks", "true_cost", "true_impressions"]
    assert answer["history"]["window"] == 14 and answer["notes"] == []

    # explicit context: each unit's history rows (the whole history file would do as well)
    history = read_data(sim["history"], spec)
    units = {(r["advertiser_id"], r["scenario"]) for r in rows}
    mine = history[[(a, s) in units for a, s in zip(history["advertiser_id"], history["scenario"])]]
    stateless = TestClient(create_app(run, max_rows=5000))
    answer = _answer(stateless, {"rows": rows, "context": json_records(mine)})
    _assert_matches(answer, expected, tasks)
    # both: the context wins over the store for the same unit and day (here they agree)
    _assert_matches(_answer(with_store, {"rows": rows, "context": json_records(mine.iloc[::3])}), expected, tasks)
    # without any history the rows are scored as `msmt predict` scores them without --context
    alone = msmt_predict(panel_run, sim["test"], tmp_path / "alone.csv")
    answer = _answer(stateless, {"rows": rows})
    _assert_matches(answer, alone, tasks)
    assert answer["notes"] and "scored without history" in answer["notes"][0]


def test_day_by_day_observe_then_predict_equals_predict_on_the_file(panel_run, sim, tmp_path):
    """Forecast day t from the store, record day t's outcomes, forecast day t+1...: the forecasts of
    `msmt predict --data test --context history` (whose test rows are each other's history)."""
    run = load_run(panel_run)
    spec = run.schema.spec
    expected = msmt_predict(panel_run, sim["test"], tmp_path / "pred.csv", context=sim["history"])
    test = read_data(sim["test"], spec)
    db = tmp_path / "h.db"
    assert run_main("history", "load", panel_run, "--data", sim["history"], "--db", db) == 0
    client = TestClient(create_app(run, max_rows=5000, history=db))
    for day in sorted(test["day"].unique()):
        today = test[test["day"] == day]
        features = today.drop(columns=[*spec.panel.metrics, spec.panel.event])  # outcomes unknown when forecasting
        answer = _answer(client, {"rows": json_records(features)})
        _assert_matches(answer, expected[(test["day"] == day).to_numpy()], spec.task_names)
        observed = client.post("/v1/observe", json={"observations": json_records(today)})
        assert observed.status_code == 200 and observed.json()["inserted"] == len(today)


def test_online_ads_store_window_equals_predict_context(shared_data, tmp_path):
    """Online ads (dates as the time column, 4 key columns, 5 metrics): the store's window is the
    one `encode_frame(..., context=)` builds from the file, including every unit's gaps."""
    from msmt.data.fit import fit_schema
    from msmt.data.loading import load_splits
    from msmt.spec.config import load_experiment

    cfg = load_experiment(Path(__file__).resolve().parents[2] / "configs" / "online_ads.yaml")
    spec = cfg.dataset
    splits = load_splits(spec)
    schema = fit_schema(splits["train"], spec)
    history = pd.concat([splits["train"], splits["validation"]], ignore_index=True)
    rows = splits["test"].iloc[::7]
    store = open_history(tmp_path / "h.db", spec.panel)
    counts = store.upsert(last_of_duplicates(observations_from_frame(history, spec.panel)))
    assert counts["inserted"] == len(history.drop_duplicates([*spec.panel.keys, spec.panel.time]))
    row_model, _, cols = build_request_models(schema, 10_000)
    validated = [row_model.model_validate(r) for r in json_records(rows)]
    batch, info, _ = PanelEncoder(schema, cols, history_columns(schema), store)(validated)
    reference = encode_frame(rows, schema, with_labels=False, context=history)
    for key in reference:
        assert torch.equal(batch[key], reference[key]), key
    observed = np.array(info["observed"])
    assert observed.max() == 14 and (observed < 14).any()  # full windows and gappy ones both occur


# ---------------------------------------------------------------------------- the store


def test_observe_is_an_idempotent_upsert(panel_run, sim, tmp_path):
    run = load_run(panel_run)
    spec = run.schema.spec
    client = TestClient(create_app(run, history=tmp_path / "h.db"))
    rows = json_records(read_data(sim["test"], spec).iloc[:6])
    first = client.post("/v1/observe", json={"observations": rows}).json()
    assert {k: first[k] for k in ("observed", "inserted", "updated", "unchanged")} == {"observed": 6, "inserted": 6, "updated": 0, "unchanged": 0}
    assert "industry" in first["ignored"]  # a full data row: the profile columns are not history
    again = client.post("/v1/observe", json=rows).json()  # a retry (bare list)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 6)
    corrected = [dict(rows[0], clicks=rows[0]["clicks"] + 1), rows[0 + 1]]
    fixed = client.post("/v1/observe", json={"observations": corrected}).json()
    assert (fixed["inserted"], fixed["updated"], fixed["unchanged"]) == (0, 1, 1)
    same_twice = client.post("/v1/observe", json={"observations": [rows[2], rows[2]]})
    assert same_twice.status_code == 200 and same_twice.json()["unchanged"] == 1  # counts are per distinct (unit, day)
    store = client.app.state.history
    assert store.summary()["rows"] == 6
    window = store.window([json.dumps([rows[0]["advertiser_id"], rows[0]["scenario"]], separators=(",", ":"))], [0], [10_000])
    assert window.metrics[window.steps == rows[0]["day"]][0].tolist() == [rows[0]["impressions"], rows[0]["clicks"] + 1, rows[0]["cost"]]


def test_history_load_refuses_another_panel_and_a_run_without_one(panel_run, trained_run, sim, tmp_path):
    db = tmp_path / "h.db"
    assert run_main("history", "load", panel_run, "--data", sim["history"], "--db", db) == 0
    spec = load_run(panel_run).schema.spec
    other = spec.panel.model_copy(update={"metrics": ("impressions", "clicks")})
    with pytest.raises(ConfigError, match="history store of another panel .*metrics"):
        SqliteHistory(db, other)
    assert run_main("history", "load", trained_run("mmoe"), "--data", sim["history"], "--db", tmp_path / "x.db") == 2
    with pytest.raises(ConfigError, match="no panel section"):
        create_app(load_run(trained_run("mmoe")), history=tmp_path / "y.db")
    bad = pd.read_csv(sim["history"]).iloc[:5]
    bad.loc[3, "cost"] = -2
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert run_main("history", "load", panel_run, "--data", tmp_path / "bad.csv", "--db", db) == 2  # like training data
    assert SqliteHistory(db, spec.panel).summary()["rows"] == len(pd.read_csv(sim["history"]))  # nothing of it written


# ---------------------------------------------------------------------------- rows of data files


def test_rows_of_a_training_file_are_accepted_and_extra_columns_listed(trained_run):
    """A row as `msmt predict` reads it from a file (labels, true_*, the time column) scores;
    a misspelt required column still fails, naming both spellings."""
    run_dir = trained_run("mmoe")
    frame = pd.read_csv(trained_run.data_dir / "train.csv", dtype={"user_id": str, "item_id": str}).iloc[:3]
    client = TestClient(create_app(load_run(run_dir)))
    answer = _answer(client, {"rows": json_records(frame)})
    assert answer["ignored"] == ["click", "dwell", "purchase", "timestamp", "true_click", "true_dwell", "true_purchase"]
    lean = _answer(client, {"rows": json_records(frame.drop(columns=answer["ignored"]))})
    assert lean["predictions"] == answer["predictions"] and lean["ignored"] == []
    misspelt = json_records(frame.rename(columns={"item_category": "item_categroy"}))
    resp = client.post("/v1/predict", json={"rows": misspelt})
    assert resp.status_code == 422
    assert "rows[0].item_category: missing field" in resp.json()["detail"] and "rows[0].item_categroy" in resp.json()["detail"]
