"""Run directories written by msmt 0.1.0 before the re-layout still load and score the same.

The fixtures (``tests/fixtures/legacy_runs``, README there) were trained by the code before the
package was re-laid into parts, and hold what ``msmt predict`` / ``msmt evaluate`` answered then.
Today's ``evaluate``, ``predict`` and ``serve`` must read them and give the same numbers.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msmt.cli import main
from msmt.rundir.layout import load_run
from msmt.serving.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_runs"
ADVERTISER_RUNS = ["run_m2m", "run_mmoe", "run_mmoe_personal"]


def _cli(*argv: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 0


def _pred_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("pred_")]


@pytest.mark.parametrize("run", ADVERTISER_RUNS)
def test_predict_reproduces_the_numbers_of_0_1_0(run, tmp_path):
    out = tmp_path / "pred.csv"
    _cli("predict", str(LEGACY / run), "--data", str(LEGACY / "adv_score.csv"),
         "--context", str(LEGACY / "adv_context.csv"), "--out", str(out))
    then, now = pd.read_csv(LEGACY / f"pred_{run}.csv"), pd.read_csv(out)
    assert _pred_columns(now) == _pred_columns(then) == ["pred_impressions", "pred_clicks", "pred_cost", "pred_active"]
    for col in _pred_columns(then):
        np.testing.assert_allclose(now[col], then[col], rtol=1e-5, atol=1e-7)


def test_evaluate_reproduces_the_metrics_of_0_1_0(tmp_path):
    out = tmp_path / "m.json"
    _cli("evaluate", str(LEGACY / "run_m2m"), "--data", str(LEGACY / "adv_new.csv"),
         "--context", str(LEGACY / "adv_context.csv"), "--out", str(out))
    then = json.loads((LEGACY / "eval_run_m2m_new.json").read_text())
    now = json.loads(out.read_text())
    # every block of 0.1.0 comes back; the one addition since is the per-cohort block (metrics.json's
    # `cohorts`: this run's group, advertiser_id, is a sparse feature)
    assert set(then) <= set(now) and set(now) - set(then) == {"cohorts"}
    for block in ("overall", "scenarios"):
        flat_then = pd.json_normalize(then[block]).iloc[0]
        flat_now = pd.json_normalize(now[block]).iloc[0]
        assert list(flat_now.index) == list(flat_then.index)
        np.testing.assert_allclose(flat_now.astype(float), flat_then.astype(float), rtol=1e-5, equal_nan=True)


def test_sbmm_weights_of_0_1_0_load_under_todays_names(tmp_path):
    """0.1's SBMM stored its output layer as one dense stacked layer; it now holds one row per
    (scenario, task) pair: the same function, so the same predictions."""
    out = tmp_path / "pred.csv"
    _cli("predict", str(LEGACY / "run_sbmm"), "--data", str(LEGACY / "simple_score.csv"), "--out", str(out))
    then, now = pd.read_csv(LEGACY / "pred_run_sbmm.csv"), pd.read_csv(out)
    assert _pred_columns(now) == _pred_columns(then) == ["pred_click", "pred_purchase", "pred_dwell"]
    for col in _pred_columns(then):
        np.testing.assert_allclose(now[col], then[col], rtol=1e-5, atol=1e-7)


def test_serve_answers_like_predict_of_0_1_0():
    run = load_run(LEGACY / "run_simple")
    client = TestClient(create_app(run))
    frame = pd.read_csv(LEGACY / "simple_score.csv")
    columns = ["scenario", "user_id", "item_id", "item_category", "user_age", "price", "tags"]
    rows = frame[columns].to_dict("records")
    resp = client.post("/v1/predict", json={"rows": rows})
    assert resp.status_code == 200, resp.text
    got = pd.DataFrame(resp.json()["predictions"])
    then = pd.read_csv(LEGACY / "pred_run_simple.csv")
    for task in got.columns:
        np.testing.assert_allclose(got[task], then[f"pred_{task}"], rtol=1e-5, atol=1e-7)
