"""Shared fixtures: tiny synthetic data, a fitted schema, and the shared-data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import SHARED_DATA
from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.spec.config import load_dataset_spec
from msmt.synth.simple import write_simple


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` first (stable order otherwise): with ``pytest -n auto --dist
    worksteal`` (``make test``) the workers then end on short tests and finish together, instead
    of one waiting for a long test that started last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets of ../shared/data (override with MSMT_SHARED_DATA)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set MSMT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A 2,000-row synthetic dataset with dataset.yaml and experiment.yaml."""
    return write_simple(tmp_path_factory.mktemp("tiny"), rows=2000, seed=0)


@pytest.fixture(scope="session")
def tiny_spec(tiny_dir):
    return load_dataset_spec(tiny_dir / "dataset.yaml")


@pytest.fixture(scope="session")
def tiny_train(tiny_dir, tiny_spec):
    return read_data(tiny_dir / "train.csv", tiny_spec)


@pytest.fixture(scope="session")
def tiny_schema(tiny_train, tiny_spec):
    return fit_schema(tiny_train, tiny_spec)


def _run_factory(tmp_path_factory, data: Path, base: list[str], prefix: str):
    """``make(model, *overrides)`` -> the run directory of ``data/experiment.yaml`` trained with
    ``model.name=model``, ``base`` and the overrides; each distinct call trains once per session."""
    from msmt.experiments.run import run_experiment
    from msmt.spec.config import load_experiment

    cache: dict[tuple, Path] = {}

    def make(model: str = "mmoe", *overrides: str) -> Path:
        key = (model, *overrides)
        if key not in cache:
            cfg = load_experiment(data / "experiment.yaml", [f"model.name={model}", *base, *overrides])
            cfg.train.progress = False
            out = tmp_path_factory.mktemp(f"{prefix}_{model}")
            run_experiment(cfg, out)
            cache[key] = out
        return cache[key]

    make.data_dir = data
    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Factory: ``trained_run(model, *overrides)`` -> run directory of a tiny trained model.

    400 synthetic rows (``msmt synth simple``), 1 epoch, small layers, ``dataset.group=user_id``;
    each distinct call trains once per session. Used by the serving and export tests.
    """
    data = write_simple(tmp_path_factory.mktemp("tiny_run_data"), rows=400, seed=0)
    base = ["train.epochs=1", "train.batch_size=64", "dataset.group=user_id"]
    return _run_factory(tmp_path_factory, data, base, "run")


@pytest.fixture(scope="session")
def trained_panel_run(tmp_path_factory):
    """Factory like ``trained_run`` on panel data: a small advertiser-simulator world (30
    advertisers × 24 days), 1 epoch, small layers. For the models that need each unit's history
    (the naive forecasters) and for tests of forecasting on panel data."""
    from msmt.synth.advertiser import write_advertiser

    data = write_advertiser(tmp_path_factory.mktemp("panel_run_data"), advertisers=30, days=24, seed=1)
    base = ["train.epochs=1", "train.batch_size=128", "model.hidden_dims=[16]", "model.tower_dims=[8]",
            "model.embedding_dim=4"]
    return _run_factory(tmp_path_factory, data, base, "panel_run")


@pytest.fixture(scope="session")
def advertiser_panel(tmp_path_factory):
    """A small advertiser-simulator world (40 advertisers × 24 days): (schema, encoded training rows).

    Panel data with a history for every task, so every registered model applies (the naive
    forecasters need one)."""
    from msmt.data.tensorize import encode_frame
    from msmt.synth.advertiser import write_advertiser

    out = write_advertiser(tmp_path_factory.mktemp("adv_panel"), advertisers=40, days=24, seed=3)
    spec = load_dataset_spec(out / "dataset.yaml")
    train = read_data(out / "train.csv", spec)
    schema = fit_schema(train, spec)
    return schema, encode_frame(train, schema)
