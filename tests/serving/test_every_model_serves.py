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
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from serve_helpers import json_records, msmt_predict

from msmt.data.loading import read_data
from msmt.models.registry import model_class, model_names
from msmt.rundir.layout import load_run
from msmt.serving.app import create_app
from msmt.serving.history import last_of_duplicates, observations_from_frame, open_history
from msmt.spec.config import load_experiment
from msmt.spec.dataset import DatasetSpec
from msmt.synth import advertiser, funnel, simple

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SIMULATORS = {"sim_advertiser": advertiser, "sim_funnel": funnel, "sim_simple": simple}
TINY = ["train.epochs=1", "train.batch_size=64", "model.embedding_dim=4", "model.hidden_dims=[8]", "model.tower_dims=[4]",
        "train.num_threads=1", "train.patience=1"]
SAMPLE_ROWS = 400  # rows of a config's data file a tiny run trains on (panel data: whole units)
SCORED_ROWS = 40


def dataset_specs() -> dict[str, DatasetSpec]:
    """Each dataset's spec, known at collection (no data read)."""
    specs = {p.stem: load_experiment(p).dataset for p in CONFIGS}
    specs.update({name: DatasetSpec.model_validate(sim.dataset_config()) for name, sim in SIMULATORS.items()})
    return specs


SPECS = dataset_specs()
PAIRS = [(d, m) for d in SPECS for m in model_names()]
CASES = [(d, m) for d, m in PAIRS if model_class(m).not_applicable(SPECS[d]) is None]


def test_left_out_pairs_are_the_models_own_not_applicable():
    left_out = {(d, m) for d, m in PAIRS} - set(CASES)
    for d, m in left_out:
        assert model_class(m).not_applicable(SPECS[d])  # a one-line reason, from the model itself
    assert len(SPECS) == len(CONFIGS) + 3 and len(CASES) >= len(SPECS) * 6
    assert {m for _, m in CASES} == set(model_names())  # every model serves somewhere
    assert {d for d, _ in CASES} == set(SPECS)


def _sample(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A few hundred rows; panel data: whole units (every time step of each), so histories exist."""
    if spec.panel is None:
        return frame.sample(n=min(SAMPLE_ROWS, len(frame)), random_state=0).sort_index()
    units = frame.groupby(list(spec.panel.keys), sort=True).size().sort_values(ascending=False, kind="stable")
    keep, total = [], 0
    for key, n in units.items():
        if total >= SAMPLE_ROWS:
            break
        keep.append(key if isinstance(key, tuple) else (key,))
        total += n
    mask = pd.MultiIndex.from_frame(frame[list(spec.panel.keys)]).isin(keep)
    return frame[mask]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Factory: dataset name -> {"config": experiment YAML, "overrides", "rows": file to score,
    "history": earlier rows (panel data) or None}; each dataset prepared once."""
    cache: dict[str, dict] = {}

    def make(name: str) -> dict:
        if name in cache:
            return cache[name]
        out = tmp_path_factory.mktemp(f"tiny_{name}")
        spec = SPECS[name]
        if name in SIMULATORS:
            if name == "sim_advertiser":
                data = advertiser.write_advertiser(out, advertisers=10, days=22, seed=0)
            else:
                data = SIMULATORS[name].__dict__[f"write_{name.removeprefix('sim_')}"](out, rows=SAMPLE_ROWS, seed=0)
            config, overrides = data / "experiment.yaml", []
            frames = [pd.read_csv(data / f"{s}.csv") for s in ("train", "validation", "test")]
            whole = pd.concat(frames, ignore_index=True)
        else:
            config = REPO / "configs" / f"{name}.yaml"
            if not Path(spec.files.train).exists():
                pytest.skip(f"data of {config.name} not found at {spec.files.train} (shared data folder absent)")
            whole = _sample(pd.read_csv(spec.files.train, dtype=str), spec)  # as text: the file's values unchanged
            whole.to_csv(out / "sample.csv", index=False)
            overrides = [f"dataset.files.train={out / 'sample.csv'}"]
        if spec.panel is None:
            rows, history = whole.sample(n=SCORED_ROWS, random_state=1), None
        else:  # score each unit's last two steps from the store holding everything before them
            steps = pd.to_numeric(whole[spec.panel.time], errors="coerce")
            if steps.isna().any():
                steps = pd.to_datetime(whole[spec.panel.time])
            cut = sorted(steps.unique())[-2]
            rows, history = whole[steps >= cut], whole[steps < cut]
            history.to_csv(out / "history.csv", index=False)
        rows.to_csv(out / "rows.csv", index=False)
        cache[name] = {"config": config, "overrides": overrides, "rows": out / "rows.csv",
                       "history": out / "history.csv" if history is not None else None, "dir": out}
        return cache[name]

    return make


@pytest.fixture(scope="session")
def tiny_model_run(tiny_dataset, tmp_path_factory):
    """Factory: (dataset, model) -> run directory, trained once (no report: plots cost seconds)."""
    from msmt.experiments.run import run_experiment

    cache: dict[tuple[str, str], Path] = {}

    def make(dataset: str, model: str) -> Path:
        if (dataset, model) not in cache:
            ds = tiny_dataset(dataset)
            cfg = load_experiment(ds["config"], [*ds["overrides"], f"model.name={model}", *TINY])
            cfg.train.progress = False
            out = tmp_path_factory.mktemp(f"run_{dataset}_{model}")
            with mock.patch("msmt.experiments.run.write_report"):
                run_experiment(cfg, out)
            cache[(dataset, model)] = out
        return cache[(dataset, model)]

    return make


@pytest.fixture(scope="session")
def history_store(tiny_dataset):
    """Factory: dataset -> its SQLite history store (shared by the dataset's models)."""
    cache: dict[str, Path] = {}

    def make(dataset: str, spec: DatasetSpec) -> Path:
        if dataset not in cache:
            ds = tiny_dataset(dataset)
            db = ds["dir"] / "history.db"
            store = open_history(db, spec.panel)
            store.upsert(last_of_duplicates(observations_from_frame(read_data(ds["history"], spec), spec.panel)))
            store.close()
            cache[dataset] = db
        return cache[dataset]

    return make


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
