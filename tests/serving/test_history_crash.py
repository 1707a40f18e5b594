"""Nothing acknowledged is lost: a real `msmt serve --history` process SIGKILLed during a stream of
observations keeps every acknowledged one and no part of the one in flight; concurrent observe +
predict from several clients answer what a sequential replay answers."""

from __future__ import annotations

import threading
import time
import warnings

import httpx
import pandas as pd
import pytest
from serve_helpers import json_records, start_server, stop_server

from helpers import run_main
from msmt.data.loading import read_data
from msmt.rundir.layout import load_run
from msmt.serving.app import create_app
from msmt.serving.history import SqliteHistory

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient

BATCH = 40  # observations per request: one transaction


def _batch(i: int) -> list[dict]:
    """Request i's observations: 40 (unit, day) pairs no other request writes."""
    return [
        {"advertiser_id": f"crash{i:04d}", "scenario": "feed", "day": day, "impressions": 100 + i, "clicks": day, "cost": 0.5 * j,
         "event": "none"}
        for j, day in enumerate(range(BATCH))
    ]


@pytest.fixture(scope="module")
def panel_run(trained_panel_run):
    return trained_panel_run("mmoe")


@pytest.mark.slow
def test_sigkill_during_observations_loses_nothing_acknowledged(panel_run, tmp_path):
    db = tmp_path / "history.db"
    proc, url = start_server(panel_run, "--history", str(db))
    acked: list[int] = []
    in_flight: list[int] = []
    stop = threading.Event()

    def stream():
        with httpx.Client(base_url=url, timeout=10.0) as http:
            for i in range(100_000):
                if stop.is_set():
                    return
                in_flight[:] = [i]
                try:
                    resp = http.post("/v1/observe", json={"observations": _batch(i)})
                except httpx.TransportError:
                    return  # the server died with request i in flight
                assert resp.status_code == 200, resp.text
                assert resp.json()["inserted"] == BATCH
                acked.append(i)
                in_flight.clear()

    client = threading.Thread(target=stream)
    try:
        client.start()
        deadline = time.monotonic() + 60
        while len(acked) < 25 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.kill()  # SIGKILL: no shutdown, no flush; whatever was not committed is gone
        proc.wait(timeout=10)
    finally:
        stop.set()
        client.join(timeout=30)
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 25, "the stream did not get going"
    assert acked == list(range(len(acked)))

    proc, url = start_server(panel_run, "--history", str(db))  # restart on the killed server's files
    try:
        with httpx.Client(base_url=url, timeout=10.0) as http:
            for i in acked:  # a client's retry after the crash: every acknowledged batch is there, unchanged
                again = http.post("/v1/observe", json={"observations": _batch(i)}).json()
                assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, BATCH), i
            for i in in_flight:  # the one in flight: all of it or none of it
                again = http.post("/v1/observe", json={"observations": _batch(i)}).json()
                assert again["unchanged"] in (0, BATCH) and again["inserted"] == BATCH - again["unchanged"], again
    finally:
        stop_server(proc)
    store = SqliteHistory(db, load_run(panel_run).schema.spec.panel)
    assert store.summary()["rows"] == BATCH * (len(acked) + len(in_flight))  # nothing else was written
    store.close()


def test_concurrent_observe_and_predict_equal_a_sequential_replay(panel_run, trained_panel_run, tmp_path):
    """Four clients, each forecasting its own units day by day and recording each day's outcomes
    after forecasting it, against one server; then the same requests one client after another
    in-process on a fresh copy of the starting store: the same answers."""
    data = trained_panel_run.data_dir
    spec = load_run(panel_run).schema.spec
    history = pd.concat([read_data(data / "train.csv", spec), read_data(data / "validation.csv", spec)], ignore_index=True)
    history.to_csv(tmp_path / "history.csv", index=False)
    test = read_data(data / "test.csv", spec)
    units = sorted(set(zip(test["advertiser_id"], test["scenario"])))
    clients = 4
    plans = []  # per client: [(predict body, observe body), ...] day by day
    for c in range(clients):
        mine = set(units[c::clients])
        rows = test[[u in mine for u in zip(test["advertiser_id"], test["scenario"])]]
        steps = []
        for day in sorted(rows["day"].unique()):
            today = rows[rows["day"] == day]
            steps.append(({"rows": json_records(today.drop(columns=["impressions", "clicks", "cost", "event"]))},
                          {"observations": json_records(today)}))
        plans.append(steps)
    for name in ("live.db", "replay.db"):
        assert run_main("history", "load", panel_run, "--data", tmp_path / "history.csv", "--db", tmp_path / name) == 0

    proc, url = start_server(panel_run, "--history", str(tmp_path / "live.db"), "--max-rows", "5000")
    answers: list[list[dict]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients)

    def run_client(c: int):
        with httpx.Client(base_url=url, timeout=30.0) as http:
            barrier.wait()
            for predict_body, observe_body in plans[c]:
                for path, body in (("/v1/predict", predict_body), ("/v1/observe", observe_body)):
                    resp = http.post(path, json=body)
                    if resp.status_code != 200:
                        errors.append(resp.text)
                    answers[c].append(resp.json())

    try:
        threads = [threading.Thread(target=run_client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        stop_server(proc)
    assert not errors

    replay = TestClient(create_app(load_run(panel_run), max_rows=5000, history=tmp_path / "replay.db"))
    for c in range(clients):
        expected = []
        for predict_body, observe_body in plans[c]:
            expected.append(replay.post("/v1/predict", json=predict_body).json())
            expected.append(replay.post("/v1/observe", json=observe_body).json())
        assert answers[c] == expected, f"client {c}"
    assert sum(len(p) for p in plans) >= 8 and all(a["history"]["observed"] for a in answers[0][::2])


@pytest.mark.slow
def test_workers_share_the_store(panel_run, tmp_path):
    """`msmt serve --workers 2`: two processes, one store; what one records, the other reads."""
    db = tmp_path / "history.db"
    proc, url = start_server(panel_run, "--history", str(db), "--workers", "2")
    try:
        observations = [dict(o, advertiser_id="shared", day=d) for d, o in enumerate(_batch(0)[:14])]
        row = {"advertiser_id": "shared", "scenario": "feed", "day": 14, "day_of_week": "mon", "industry": "retail",
               "size_tier": "small", "region": "west", "account_age": 100, "budget_level": 10.0, "traffic_volume": 100.0,
               "ad_format": "image", "auction_type": "gsp", "billing": "cpc"}
        pids, answers = set(), []
        with httpx.Client(base_url=url, timeout=10.0) as http:
            assert http.post("/v1/observe", json=observations).json()["inserted"] == 14
        for _ in range(40):  # a new connection each time: the kernel spreads them over the workers
            with httpx.Client(base_url=url, timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)) as http:
                pids.add(http.get("/healthz").json()["pid"])
                answers.append(http.post("/v1/predict", json=[row]).json())
            if len(pids) > 1 and len(answers) >= 10:
                break
        assert len(pids) == 2
        assert all(a["history"]["observed"] == [14] and a["predictions"] == answers[0]["predictions"] for a in answers)
    finally:
        stop_server(proc)
