"""The model zoo through the scoring service: each new model, trained by ``msmt train`` (the
shared ``trained_run`` fixture), answers ``POST /v1/predict`` with what ``msmt predict``'s scoring
path gives. The ONNX backend is not repeated per zoo model here: it scores whatever ONNX file it is
given (tests/serving/test_serve.py serves one against the torch backend), and each zoo model's ONNX
file is checked against ``msmt predict`` on test rows by tests/scoring/test_export.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.rundir.layout import load_run
from msmt.scoring.predict import predict_batches
from msmt.serving.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient

ZOO = ["pepnet", "apg", "hmoe", "m3oe", "aitm", "escm2"]
FEATURES = ["scenario", "user_id", "item_id", "item_category", "user_age", "price", "tags"]


@pytest.mark.parametrize("model", ZOO)
def test_zoo_model_serves_what_predict_scores(trained_run, model):
    run = load_run(trained_run(model))
    frame = read_data(trained_run.data_dir / "test.csv", run.schema.spec).iloc[:25].reset_index(drop=True)
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()} for rec in frame[FEATURES].to_dict("records")]
    client = TestClient(create_app(run, max_rows=50))
    resp = client.post("/v1/predict", json={"rows": rows})
    assert resp.status_code == 200, resp.text
    served = resp.json()["predictions"]
    expected = predict_batches(run.model, encode_frame(frame, run.schema, with_labels=False))
    for task in run.model.task_names:
        np.testing.assert_allclose([p[task] for p in served], expected[task], atol=1e-6, rtol=0)
