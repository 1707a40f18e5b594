"""Fixtures of the serving tests: tiny runs of every dataset (configs/ and the simulators), a
history store per panel dataset."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from serve_helpers import REPO, SAMPLE_ROWS, SCORED_ROWS, SIMULATORS, SPECS, TINY

from msmt.data.loading import read_data
from msmt.serving.history import last_of_duplicates, observations_from_frame, open_history
from msmt.spec.config import load_experiment
from msmt.spec.dataset import DatasetSpec
from msmt.synth import advertiser


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
                data = getattr(SIMULATORS[name], f"write_{name.removeprefix('sim_')}")(out, rows=SAMPLE_ROWS, seed=0)
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
