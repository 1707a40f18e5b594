"""LightGBM on msmt's own splits and encodings (``msmt.experiments.lightgbm_baseline``, the logic of
benchmarks/lightgbm_baseline.py), measured into the same metrics blocks as a run directory's
``metrics.json``."""

from __future__ import annotations

import json

import lightgbm  # noqa: F401  (a test dependency: msmt[test] installs it; no skip)
import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import REPO
from msmt.data.loading import load_splits
from msmt.experiments.lightgbm_baseline import TreeSettings, lightgbm_baseline
from msmt.spec.config import load_experiment
from msmt.spec.errors import ConfigError


def shape(block: dict) -> dict:
    """The keys of a metrics block: scenarios -> tasks -> measures."""
    return {
        "overall": {t: sorted(m) for t, m in block["overall"].items()},
        "scenarios": {s: {t: sorted(m) for t, m in tasks.items()} for s, tasks in block["scenarios"].items()},
    }


def test_same_splits_and_metrics_blocks_as_msmt_train(trained_run, tmp_path):
    run_dir = trained_run("logistic_regression")  # 400 simulated rows: train / validation / test files
    config = trained_run.data_dir / "experiment.yaml"
    lightgbm_baseline(load_experiment(config), TreeSettings(n_estimators=60, early_stopping_rounds=5), tmp_path)
    trees = json.loads((tmp_path / "metrics.json").read_text())
    ours = json.loads((run_dir / "metrics.json").read_text())
    splits = load_splits(load_experiment(config).dataset)
    for split, name in (("val", "validation"), ("test", "test")):
        assert trees[split]["rows"] == ours[split]["rows"] == len(splits[name])
        assert shape(trees[split]) == shape(ours[split])
        assert ("oracle" in trees[split]) == ("oracle" in ours[split])
    assert set(trees["trees"]) == {"click", "purchase", "dwell"} and all(1 <= n <= 60 for n in trees["trees"].values())


def test_trees_read_the_encoded_features(tmp_path):
    """A planted signal in a categorical, a dense and a multi-valued feature: the trees find it
    (AUC near 1), so every kind of column reaches them with the training split's encoding."""
    rng = np.random.default_rng(0)
    for name, rows in (("train", 1500), ("validation", 400), ("test", 400)):
        colour = rng.choice(["red", "blue", "green"], rows)
        x = rng.normal(size=rows)
        tags = rng.choice(["a b", "b", "c", "a c"], rows)
        score = 2.0 * (colour == "red") + 2.0 * (x > 0.5) + 2.0 * np.array(["c" in t.split() for t in tags])
        pd.DataFrame(
            {"scenario": rng.choice(["s1", "s2"], rows), "colour": colour, "x": x, "tags": tags,
             "y": (score + rng.normal(0, 0.3, rows) > 3).astype(int), "n": rng.poisson(np.exp(0.3 * score))}
        ).to_csv(tmp_path / f"{name}.csv", index=False)
    dataset = {
        "files": {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
        "scenario": {"column": "scenario"},
        "features": {"sparse": ["colour"], "dense": ["x"], "multi_sparse": [{"name": "tags", "separator": " ", "max_length": 2}]},
        "tasks": [{"name": "y", "label": "y", "kind": "binary"}, {"name": "n", "label": "n", "kind": "count"}],
    }
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump({"dataset": "dataset.yaml", "model": {"name": "logistic_regression"}}))
    out = tmp_path / "out"
    lightgbm_baseline(load_experiment(tmp_path / "experiment.yaml"), out=out)
    result = json.loads((out / "metrics.json").read_text())
    assert result["test"]["overall"]["y"]["auc"] > 0.95
    assert set(result["test"]["scenarios"]) == {"s1", "s2"} and result["left_out"] == []


def test_a_missing_lightgbm_is_a_config_error_naming_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_lightgbm(name, *args, **kwargs):
        if name == "lightgbm":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lightgbm)
    with pytest.raises(ConfigError, match=r"^the LightGBM baseline needs lightgbm: pip install 'msmt\[bench\]'$"):
        lightgbm_baseline(load_experiment(REPO / "configs" / "census.yaml"))  # before any data is read
