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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import json_records, msmt_predict

from helpers import run_main
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.rundir.layout import load_run
from msmt.serving.app import create_app
from msmt.serving.encode import PanelEncoder, RowEncoder
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
    reference = encode_frame(rows, run.schema, with_labels=False, context=context)
    direct = RowEncoder(run.schema, cols, row_model)
    assert direct.direct  # the served path: direct encoding of the row keys + encode_panel
    for rows_encoder in (direct, None):
        batch, info, _ = PanelEncoder(run.schema, cols, history_columns(run.schema), store, rows_encoder)(validated)
        assert batch.keys() == reference.keys()
        for key in reference:
            assert batch[key].dtype == reference[key].dtype and torch.equal(batch[key], reference[key]), key
    assert info["observed"] == reference["seq.mask"].sum(1).tolist()
    assert max(info["observed"]) == spec.panel.window and min(info["observed"]) > 0
    store.close()


def test_a_duplicated_observation_keeps_its_last_row_as_predict_context_does(panel_run, sim, tmp_path):
    """A history file that repeats some (unit, day) with other outcomes: `msmt history load` keeps
    the later row, as `encode_frame(rows, context=file)` does, so the store's window equals predict's."""
    run = load_run(panel_run)
    spec = run.schema.spec
    history = read_data(sim["history"], spec)
    rows = read_data(sim["test"], spec)
    latest = history[history["day"] == history["day"].max()].head(6)
    revised = latest.assign(**{m: latest[m] * 3 + 1 for m in spec.panel.metrics})  # same units and day, other outcomes
    doubled = pd.concat([history, revised], ignore_index=True)
    doubled.to_csv(tmp_path / "doubled.csv", index=False)
    db = tmp_path / "h.db"
    assert run_main("history", "load", panel_run, "--data", tmp_path / "doubled.csv", "--db", db) == 0
    reference = encode_frame(rows, run.schema, with_labels=False, context=doubled)
    first = encode_frame(rows, run.schema, with_labels=False, context=history)
    assert not torch.equal(reference["seq.raw"], first["seq.raw"])  # the revision reaches some window
    row_model, _, cols = build_request_models(run.schema, 10_000)
    validated = [row_model.model_validate(r) for r in json_records(rows)]
    store = SqliteHistory(db, spec.panel)
    batch, _, _ = PanelEncoder(run.schema, cols, history_columns(run.schema), store, RowEncoder(run.schema, cols, row_model))(validated)
    for key in reference:
        assert torch.equal(batch[key], reference[key]), key
    store.close()


def test_request_context_wins_over_the_store_for_the_same_unit_and_day(panel_run, sim, sim_store):
    """Context rows that revise days the store holds (other outcomes): the window is the one
    `encode_frame` builds from the store's history with those days replaced by the context's rows."""
    run = load_run(panel_run)
    spec = run.schema.spec
    history = read_data(sim["history"], spec)
    rows = read_data(sim["test"], spec)
    rows = rows[rows["day"] == rows["day"].min()].reset_index(drop=True)
    stored = history[history["day"] == history["day"].max()].head(8)
    revised = stored.assign(**{m: stored[m] * 3 + 1 for m in spec.panel.metrics})
    reference = encode_frame(rows, run.schema, with_labels=False, context=pd.concat([history, revised], ignore_index=True))
    assert not torch.equal(reference["seq.raw"], encode_frame(rows, run.schema, with_labels=False, context=history)["seq.raw"])
    row_model, request_model, cols = build_request_models(run.schema, 10_000)
    request = request_model.model_validate({"rows": json_records(rows), "context": json_records(revised)})
    store = SqliteHistory(sim_store, spec.panel)
    batch, _, _ = PanelEncoder(run.schema, cols, history_columns(run.schema), store, RowEncoder(run.schema, cols, row_model))(
        request.rows, request.context
    )
    for key in reference:
        assert torch.equal(batch[key], reference[key]), key
    store.close()


def test_the_group_channel_comes_from_the_store_for_units_not_in_the_request(panel_run, sim, sim_store):
    """Rows of one scenario only: their advertiser's other scenarios (``panel.group_keys``) are read
    from the store (``group_window``), as ``encode_frame(rows, context=file)`` reads them."""
    run = load_run(panel_run)
    spec = run.schema.spec
    assert spec.panel.group_keys == ("advertiser_id",)
    rows = read_data(sim["test"], spec)
    rows = rows[rows["scenario"] == "search"].reset_index(drop=True)
    reference = encode_frame(rows, run.schema, with_labels=False, context=read_data(sim["history"], spec))
    assert reference["seq.group_count"].sum() > 0  # the other scenarios have a past
    row_model, _, cols = build_request_models(run.schema, 10_000)
    store = SqliteHistory(sim_store, spec.panel)
    validated = [row_model.model_validate(r) for r in json_records(rows)]
    batch, _, _ = PanelEncoder(run.schema, cols, history_columns(run.schema), store, RowEncoder(run.schema, cols, row_model))(validated)
    assert (reference["seq.group_active"] < reference["seq.group_count"]).any()  # some of them were paused
    for key in ("seq.group_raw", "seq.group_count", "seq.group_active", "seq.raw", "seq.mask"):
        assert torch.equal(batch[key], reference[key]), key
    store.close()


def test_the_cross_section_comes_from_the_store_as_from_a_file(panel_run, sim, tmp_path):
    """``panel.cross_section_keys: [scenario]``: a request's rows read their scenario's other
    advertisers (``group_window(by=("scenario",))``) and their advertiser's other scenarios from the
    store; every ``seq.*`` key equals ``encode_frame(rows, context=file)``'s."""
    from msmt.data.fit import fit_schema

    spec = load_run(panel_run).schema.spec
    spec = spec.model_copy(update={"panel": spec.panel.model_copy(update={"cross_section_keys": ("scenario",)})})
    history = read_data(sim["history"], spec)
    schema = fit_schema(history, spec)
    store = SqliteHistory(tmp_path / "cross.db", spec.panel)
    store.upsert(last_of_duplicates(observations_from_frame(history, spec.panel)))
    rows = read_data(sim["test"], spec)
    few = rows["advertiser_id"].drop_duplicates().head(4)  # the scenario's other advertisers are in no row's group
    rows = rows[rows["scenario"].isin(["search", "splash"]) & rows["advertiser_id"].isin(few)].reset_index(drop=True)
    reference = encode_frame(rows, schema, with_labels=False, context=history)
    assert reference["seq.cross_count"].sum() > reference["seq.group_count"].sum() > 0
    row_model, _, cols = build_request_models(schema, 10_000)
    validated = [row_model.model_validate(r) for r in json_records(rows)]
    batch, _, _ = PanelEncoder(schema, cols, history_columns(schema), store, RowEncoder(schema, cols, row_model))(validated)
    for key in [k for k in reference if k.startswith("seq.")]:
        assert torch.equal(batch[key], reference[key]), key
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
    direct = RowEncoder(schema, cols, row_model)
    assert direct.direct
    batch, info, _ = PanelEncoder(schema, cols, history_columns(schema), store, direct)(validated)
    reference = encode_frame(rows, schema, with_labels=False, context=history)
    assert batch.keys() == reference.keys()
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
    pd.read_csv(sim["history"]).to_parquet(tmp_path / "history.parquet")  # Parquet: the same store
    assert run_main("history", "load", panel_run, "--data", tmp_path / "history.parquet", "--db", tmp_path / "p.db") == 0
    a, b = SqliteHistory(db, spec.panel), SqliteHistory(tmp_path / "p.db", spec.panel)
    assert a.summary() == b.summary()
    everyone = sorted(set(observations_from_frame(read_data(sim["history"], spec), spec.panel).units))
    lo, hi = [-100] * len(everyone), [100] * len(everyone)
    wa, wb = a.window(everyone, lo, hi), b.window(everyone, lo, hi)
    assert wa.units == wb.units and np.array_equal(wa.steps, wb.steps) and wa.events == wb.events
    np.testing.assert_array_equal(wa.metrics, wb.metrics)
    assert len(wa) == a.summary()["rows"]
    a.close()
    b.close()
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


# ---------------------------------------------------------------------------- bad history requests


@pytest.fixture(scope="module")
def store_client(panel_run, sim, sim_store, tmp_path_factory):
    """A service with a store holding days 0..19 (test days 20..23 are not in it); its own copy of the store."""
    db = tmp_path_factory.mktemp("bad") / "h.db"
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(sim_store) + suffix)
        if src.exists():
            Path(str(db) + suffix).write_bytes(src.read_bytes())
    return TestClient(create_app(load_run(panel_run), history=db))


@pytest.fixture(scope="module")
def unit_rows(sim):
    """One unit's test row of day 20 and its history rows (days 6..19) as JSON."""
    spec = sim["spec"]
    test, history = read_data(sim["test"], spec), read_data(sim["history"], spec)
    row = test[test["day"] == 20].iloc[0]
    mine = history[(history["advertiser_id"] == row["advertiser_id"]) & (history["scenario"] == row["scenario"])]
    assert sorted(mine["day"])[-14:] == list(range(6, 20))  # a unit observed every day
    return json_records(test.loc[[row.name]])[0], json_records(mine[mine["day"] >= 6].sort_values("day"))


def test_history_fallbacks_are_stated_in_the_answer(store_client, unit_rows, panel_run):
    row, context = unit_rows
    stateless = TestClient(create_app(load_run(panel_run)))
    full = _answer(stateless, {"rows": [row], "context": context})
    assert full["history"]["observed"] == [14] and full["notes"] == []
    assert _answer(store_client, {"rows": [row]})["predictions"] == full["predictions"]  # the store holds the same days

    # out-of-order days: the history is keyed by day, the order of the context rows does not matter
    assert _answer(stateless, {"rows": [row], "context": context[::-1]})["predictions"] == full["predictions"]
    # gaps: the missing days are masked (as msmt predict masks a day without a row), and counted
    gappy = _answer(stateless, {"rows": [row], "context": context[:4] + context[7:]})
    assert gappy["history"]["observed"] == [11] and gappy["notes"] == []
    # a window longer than the store holds: the days it lacks are missing days; none at all -> cold start
    later = _answer(store_client, {"rows": [dict(row, day=25), dict(row, day=60)]})
    assert later["history"]["observed"] == [9, 0]  # day 25's window is days 11..24; the store ends at 19
    assert later["notes"] == ["rows [1]: no day observed in the 14 before the row's own: scored without history, as msmt predict scores a row whose unit has none (cold start)"]
    # an unknown unit: scored without history, said so
    unknown = _answer(store_client, {"rows": [row, dict(row, advertiser_id="adv_new")]})
    assert unknown["history"]["observed"] == [14, 0] and "rows [1]: unit unknown to the history store" in unknown["notes"][0]
    # an unseen scenario: the simulator has scenario attributes, so it is scored from them
    assert _answer(store_client, {"rows": [dict(row, scenario="radio")]})["history"]["observed"] == [0]


def _bad_history_cases(row: dict, context: list[dict]) -> list[tuple[str, str, object, int, str]]:
    obs = context[-1]
    return [
        ("duplicate context day", "/v1/predict", {"rows": [row], "context": [*context, context[3]]}, 422, "context[14]: same unit and day as context[3]"),
        ("context on the row's day", "/v1/predict", {"rows": [row], "context": [dict(obs, day=20)]}, 422, "context[0].day"),
        ("context after the row", "/v1/predict", {"rows": [row], "context": [dict(obs, day=21)]}, 422, "context[0].day: 21 is after"),
        ("negative count in context", "/v1/predict", {"rows": [row], "context": [dict(obs, clicks=-1)]}, 422, "context[0].clicks"),
        ("context without a metric", "/v1/predict", {"rows": [row], "context": [{k: v for k, v in obs.items() if k != "cost"}]}, 422, "context[0].cost: missing field"),
        ("time not a step", "/v1/predict", {"rows": [dict(row, day="yesterday")]}, 422, "rows[0].day"),
        ("fractional step", "/v1/predict", {"rows": [dict(row, day=20.5)]}, 422, "rows[0].day"),
        ("step out of range", "/v1/predict", {"rows": [dict(row, day=10**15)]}, 422, "rows[0].day"),
        ("steps and dates mixed", "/v1/predict", {"rows": [row, dict(row, day="2020-04-01")]}, 422, "rows[1].day"),
        ("missing time", "/v1/predict", {"rows": [{k: v for k, v in row.items() if k != "day"}]}, 422, "rows[0].day: missing field"),
        ("missing unit key", "/v1/predict", {"rows": [{k: v for k, v in row.items() if k != "advertiser_id"}]}, 422, "rows[0].advertiser_id: missing field"),
        ("negative count", "/v1/observe", {"observations": [dict(obs, clicks=-3)]}, 422, "observations[0].clicks"),
        ("null unit key", "/v1/observe", {"observations": [dict(obs, advertiser_id=None)]}, 422, "observations[0].advertiser_id"),
        ("missing metric", "/v1/observe", {"observations": [{k: v for k, v in obs.items() if k != "impressions"}]}, 422, "observations[0].impressions: missing field"),
        ("conflicting duplicates", "/v1/observe", {"observations": [obs, dict(obs, clicks=obs["clicks"] + 1)]}, 422, "observations[1]: same unit and day"),
        ("no observations", "/v1/observe", {"observations": []}, 422, "observations: at least one row"),
        ("misspelt top level", "/v1/observe", {"observation": [obs]}, 422, "observation: unknown field"),
    ]


def test_bad_history_requests_get_4xx_naming_the_field(store_client, unit_rows):
    row, context = unit_rows
    before = store_client.app.state.history.summary()
    for name, path, body, status, text in _bad_history_cases(row, context):
        resp = store_client.post(path, json=body)
        assert resp.status_code == status, (name, resp.text)
        assert text in resp.json()["detail"], (name, resp.json()["detail"])
    for path, content, field in [
        ("/v1/predict", json.dumps({"rows": [row], "context": [dict(context[0], clicks=float("nan"))]}), "context[0].clicks"),
        ("/v1/observe", json.dumps({"observations": [dict(context[0], cost=float("inf"))]}), "observations[0].cost"),
    ]:
        resp = store_client.post(path, content=content, headers={"content-type": "application/json"})
        assert resp.status_code == 422 and field in resp.json()["detail"], resp.text
    assert store_client.app.state.history.summary() == before  # nothing refused was written


def test_context_is_bounded_by_max_rows_times_the_window(panel_run, unit_rows):
    """A predict request's ``context`` holds at most max_rows × (window + 1) history rows."""
    row, context = unit_rows
    run = load_run(panel_run)
    client = TestClient(create_app(run, max_rows=1))
    bound = run.schema.panel.window + 1
    first = min(c["day"] for c in context)
    earlier = [dict(context[0], day=first - 1 - i) for i in range(bound + 1 - len(context))]
    at_bound = {"rows": [row], "context": earlier[1:] + context}
    assert len(at_bound["context"]) == bound
    assert len(_answer(client, at_bound)["predictions"]) == 1
    resp = client.post("/v1/predict", json={"rows": [row], "context": earlier + context})
    assert resp.status_code == 422 and f"at most {bound}" in resp.json()["detail"], resp.text


def test_observe_needs_a_store_and_a_panel(panel_run, trained_run, unit_rows):
    row, context = unit_rows
    resp = TestClient(create_app(load_run(panel_run))).post("/v1/observe", json=[context[0]])
    assert resp.status_code == 404 and "--history" in resp.json()["detail"]
    flat = TestClient(create_app(load_run(trained_run("mmoe"))))
    assert flat.post("/v1/observe", json=[context[0]]).status_code == 404
    resp = flat.post("/v1/predict", json={"rows": [row], "context": context})
    assert resp.status_code == 422 and "context: this model reads no history" in resp.json()["detail"]


def test_dates_in_the_future_and_unknown_scenarios_without_attributes(tiny_dataset, tiny_model_run, tmp_path):
    """Online ads: dates as steps; a placement unseen in training cannot be described -> 422."""
    ds = tiny_dataset("online_ads")
    run = load_run(tiny_model_run("online_ads", "mmoe"))
    client = TestClient(create_app(run, history=tmp_path / "h.db"))
    row = json_records(read_data(ds["rows"], run.schema.spec).iloc[:1])[0]
    assert client.post("/v1/observe", json=[row]).status_code == 200  # a date of 2020
    for when in ("2999-01-01", "2100-05-06T00:00:00"):
        resp = client.post("/v1/observe", json=[dict(row, date=when)])
        assert resp.status_code == 422 and "observations[0].date" in resp.json()["detail"] and "future" in resp.json()["detail"]
    resp = client.post("/v1/predict", json=[dict(row, placement="radio")])
    assert resp.status_code == 422 and "rows[0].placement: scenario 'radio' was not seen in training" in resp.json()["detail"]
    resp = client.post("/v1/predict", json=[dict(row, date="2020-02-30")])
    assert resp.status_code == 422 and "rows[0].date" in resp.json()["detail"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_history_requests_never_5xx(store_client, unit_rows, data):
    row, context = unit_rows
    rows, ctx = [dict(row)], [dict(c) for c in context[: data.draw(st.integers(0, 4))]]
    for item in [*rows, *ctx]:
        key = data.draw(st.sampled_from(sorted(item)))
        action = data.draw(st.sampled_from(["keep", "drop", "replace"]))
        if action == "drop":
            del item[key]
        elif action == "replace":
            item[key] = data.draw(json_values)
    path = data.draw(st.sampled_from(["/v1/predict", "/v1/observe"]))
    body = {"rows": rows, "context": ctx} if path == "/v1/predict" else {"observations": ctx or rows}
    resp = store_client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert resp.status_code in (200, 400, 422), resp.text
    if resp.status_code == 200 and path == "/v1/predict":
        assert all(np.isfinite(v) for p in resp.json()["predictions"] for v in p.values())


def test_group_window_reads_every_unit_of_a_group_and_needs_group_keys(tmp_path):
    """``group_window``: all units of the asked groups in the asked steps, through each peer
    channel's expression index (the group by default, the cross-section with ``by``); a store
    whose panel declares no such channel refuses it with one line."""
    from msmt.spec.dataset import PanelSpec

    panel = PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp",), group_keys=("adv",), cross_section_keys=("scen",))
    frame = pd.DataFrame({"adv": ["a", "a", "b", "a"], "scen": ["x", "y", "x", "x"], "day": [1, 1, 1, 5], "imp": [1.0, 2.0, 3.0, 4.0]})
    store = SqliteHistory(tmp_path / "g.db", panel)
    store.upsert(observations_from_frame(frame, panel))
    got = store.group_window(["a"], [0], [3])
    assert sorted(zip(got.units, got.steps.tolist())) == [('["a","x"]', 1), ('["a","y"]', 1)]
    cross = store.group_window(["x"], [0], [3], by=("scen",))
    assert sorted(zip(cross.units, cross.steps.tolist())) == [('["a","x"]', 1), ('["b","x"]', 1)]
    for positions, index in (([0], "observation_group"), ([1], "observation_cross")):
        plan = " ".join(str(r) for r in store._conn().execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM observation WHERE {store._group_expr(positions)} = 'a' AND step BETWEEN 0 AND 3"))
        assert index in plan
    store.close()
    plain = SqliteHistory(tmp_path / "p.db", PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp",)))
    with pytest.raises(ConfigError, match="no group_keys"):
        plain.group_window(["a"], [0], [3])
    with pytest.raises(ConfigError, match=r"no peer channel keyed by \['scen'\]"):
        plain.group_window(["x"], [0], [3], by=("scen",))
    plain.close()


def test_store_rows_become_the_panel_rows_a_file_of_the_same_rows_gives(tmp_path):
    """The service encodes the store's rows without a DataFrame (``Observations.panel_rows``): entity
    and group texts, steps, metrics and event indices equal ``frame_rows`` of the same rows read as a
    file, for keys that are numbers, unicode or look like JSON, with missing metrics and unseen events."""
    from msmt.data.panel import frame_rows
    from msmt.spec.dataset import PanelSpec

    panel = PanelSpec(keys=("adv", "scen"), time="day", metrics=("imp", "cost"), event="ev", group_keys=("adv",),
                      cross_section_keys=("scen",))
    frame = pd.DataFrame({
        "adv": [7, 7, "é,\"x\"", "[1]", 7], "scen": ["x", "y", "x", "x", "x"], "day": [1, 1, 2, 2, 3],
        "imp": [1.0, np.nan, 3.0, 0.0, 5.0], "cost": [0.5, 2.0, np.nan, 0.0, 1.0], "ev": ["up", None, "down", "new", "up"],
    })
    events = ("down", "up")
    obs = observations_from_frame(frame, panel)
    got, want = obs.panel_rows(panel, events), frame_rows(frame, panel, events)
    assert list(got.entity) == list(want.entity) and len(set(got.entity)) == 4
    assert [list(g) for g in got.groups] == [list(g) for g in want.groups] and len(set(got.groups[1])) == 2
    np.testing.assert_array_equal(got.steps, want.steps)
    np.testing.assert_array_equal(got.values, want.values)  # NaN where missing, in both
    assert got.events.tolist() == want.events.tolist() == [3, 1, 2, 1, 3]  # 2.. known, 1 unseen or missing
