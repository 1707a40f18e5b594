"""Every registered model serves on every dataset config in configs/ and each simulator's, and the
service answers what `msmt predict` writes (<= 1e-6), panel datasets included (history from the store).

A pair (dataset, model) is a case unless the model declares itself not applicable to the dataset
(``model_class(name).not_applicable(spec)``, the reason ``msmt bench`` reports): those pairs are
left out of the parametrisation, and ``test_left_out_pairs_are_the_models_own_not_applicable``
checks that nothing else is. Each case trains a tiny run (a few hundred rows, 1 epoch, tiny layers)
once; rows are sent as they are in the data file (labels and other columns included).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from serve_helpers import CONFIGS, SPECS, json_records, msmt_predict

from msmt.data.loading import read_data
from msmt.models.registry import model_class, model_names
from msmt.rundir.layout import load_run
from msmt.serving.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient

PAIRS = [(d, m) for d in SPECS for m in model_names()]
CASES = [(d, m) for d, m in PAIRS if model_class(m).not_applicable(SPECS[d]) is None]


def test_left_out_pairs_are_the_models_own_not_applicable():
    left_out = {(d, m) for d, m in PAIRS} - set(CASES)
    for d, m in left_out:
        assert model_class(m).not_applicable(SPECS[d])  # a one-line reason, from the model itself
    assert len(SPECS) == len(CONFIGS) + 3 and len(CASES) >= len(SPECS) * 6
    assert {m for _, m in CASES} == set(model_names())  # every model serves somewhere
    assert {d for d, _ in CASES} == set(SPECS)


@pytest.mark.parametrize(("dataset", "model"), CASES)
def test_model_serves_what_msmt_predict_writes(dataset, model, tiny_dataset, tiny_model_run, history_store, tmp_path):
    ds = tiny_dataset(dataset)
    run_dir = tiny_model_run(dataset, model)
    run = load_run(run_dir)
    spec = run.schema.spec
    expected = msmt_predict(run_dir, ds["rows"], tmp_path / "pred.parquet", context=ds["history"])
    store = history_store(dataset, spec) if spec.panel is not None else None
    client = TestClient(create_app(run, history=store))
    rows = json_records(read_data(ds["rows"], spec))
    resp = client.post("/v1/predict", json={"rows": rows})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert len(answer["predictions"]) == len(expected)
    for task in spec.task_names:
        got = np.array([p[task] for p in answer["predictions"]])
        want = expected[f"pred_{task}"].to_numpy()
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6, err_msg=f"{dataset}/{model}/{task}")
    if spec.panel is not None:
        assert max(answer["history"]["observed"]) > 0  # the store's history was read
