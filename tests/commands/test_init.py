"""``msmt init``: a dataset config inferred from one's own table that trains as is, and the
example configs shipped in the package."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import run_main
from msmt.data.infer import infer_column, infer_dataset, infer_task_kind, parse_task
from msmt.spec.config import load_dataset_spec, load_experiment
from msmt.spec.dataset import TaskKind
from msmt.spec.errors import ConfigError


def own_table(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "row_id": [f"r{i}" for i in range(n)],
        "date": pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M"),
        "placement": rng.choice(["search", "feed", "display"], n),
        "user_id": rng.integers(0, 400, n),
        "device": rng.choice(["ios", "android", "web"], n),
        "weekday": rng.integers(0, 7, n),
        "price": rng.lognormal(3, 1.5, n).round(2),
        "score": rng.normal(0, 1, n),
        "tags": ["|".join(rng.choice(list("abcde"), 2, replace=False)) for _ in range(n)],
        "country": "DE",
    })
    frame["clicked"] = (rng.random(n) < 0.3 + 0.2 * (frame["device"] == "ios")).astype(int)
    frame["orders"] = rng.poisson(0.5 + frame["clicked"])
    frame["revenue"] = frame["orders"] * 9.5  # derived from a label: must be dropped by the user
    frame["true_click"] = 0.3
    return frame


def kind(values, name: str = "x", **limits) -> tuple[str, dict]:
    choice = infer_column(pd.Series(values, name=name), **limits)
    return choice.kind, choice.options


def test_feature_kinds_follow_the_documented_rules():
    rng = np.random.default_rng(1)
    assert kind(rng.normal(size=500)) == ("dense", {})
    assert kind(rng.lognormal(2, 2, 500)) == ("dense", {"transform": "log1p"})
    assert kind(-rng.lognormal(2, 2, 500)) == ("dense", {})  # skewed but negative: no log1p
    assert kind(rng.lognormal(2, 2, 500) - 5) == ("dense", {})  # skewed to the right but with values below −1: no log1p
    assert kind(rng.integers(0, 7, 500)) == ("sparse", {})  # few integers: categories
    assert kind(rng.integers(0, 300, 500)) == ("dense", {})
    assert kind(rng.integers(0, 300, 500), name="item_id") == ("sparse", {})  # an identifier by its name
    assert kind(rng.integers(0, 300, 500), name="itemId", vocab_limit=100) == ("sparse", {"min_count": 2})
    assert kind(rng.integers(0, 3000, 5000), name="user_id", vocab_limit=100, hash_limit=1000) == ("sparse", {"hash_buckets": 4096})
    assert kind(rng.choice(["a", "b"], 500)) == ("sparse", {})
    assert kind([True, False] * 50) == ("sparse", {})
    assert kind(["a|b", "c", "b|c|d"] * 50) == ("multi_sparse", {"separator": "|", "max_length": 3})
    tags = [" ".join(rng.choice([f"t{i}" for i in range(20)], k, replace=False)) for k in rng.integers(1, 4, 500)]
    assert kind(tags) == ("multi_sparse", {"separator": " ", "max_length": 3})  # tags, not names
    assert kind([f"city{i} {s}" for i in range(60) for s in ("north", "")] * 3)[0] == "sparse"  # names, not lists
    assert kind(rng.integers(0, 10**9, 200), name="timestamp")[0] == "skip"
    assert kind([f"2024-01-{d:02d}" for d in range(1, 29)] * 5)[0] == "skip"  # dates
    assert kind([f"u{i}" for i in range(500)])[0] == "skip"  # a row identifier
    assert kind(["x"] * 50)[0] == "skip" and kind([np.nan] * 50)[0] == "skip"


def test_a_label_kind_follows_its_values():
    """0/1: binary; non-negative integers: count; negative integers or fractions: regression."""
    assert infer_task_kind(pd.Series([0, 1, 1, 0]), "y") == TaskKind.BINARY
    assert infer_task_kind(pd.Series([0, 3, 7, 2]), "y") == TaskKind.COUNT
    assert infer_task_kind(pd.Series([-2, 3, 7, 2]), "y") == TaskKind.REGRESSION
    assert infer_task_kind(pd.Series([0.5, 3, 7, 2]), "y") == TaskKind.REGRESSION


def test_labels_ground_truth_and_dropped_columns_are_never_features():
    frame = own_table(300)
    inferred = infer_dataset(frame, "placement", ["click:binary:clicked", "orders"], time="date", drop=("revenue",))
    columns = {f["column"] for kind in inferred.config["features"].values() for f in kind}
    assert not columns & {"clicked", "orders", "revenue", "true_click", "placement", "date", "row_id", "country"}
    assert inferred.config["tasks"] == [
        {"name": "click", "label": "clicked", "kind": "binary"}, {"name": "orders", "label": "orders", "kind": "count"},
    ]
    assert parse_task("dwell:regression") == ("dwell", "regression", "dwell")
    with pytest.raises(ConfigError, match="unknown kind"):
        parse_task("x:probability")
    with pytest.raises(ConfigError, match="no label column 'nope'"):
        infer_dataset(frame, "placement", ["nope"])


def test_init_writes_configs_that_train_as_they_are(tmp_path, capsys):
    own_table().to_csv(tmp_path / "mine.csv", index=False)
    out = tmp_path / "cfg"
    args = ["init", tmp_path / "mine.csv", "--scenario", "placement", "--task", "click:binary:clicked", "--task", "orders",
            "--time", "date", "--group", "user_id", "--drop", "revenue", "--out", out]
    assert run_main(*args) == 0
    assert "next: msmt train" in capsys.readouterr().out
    spec = load_dataset_spec(out / "dataset.yaml")
    assert spec.files.train == str(tmp_path / "mine.csv") and spec.split.method == "time" and spec.group == "user_id"
    assert {f.name: f.transform for f in spec.features.dense}["price"] == "log1p"
    assert [f.name for f in spec.features.multi_sparse] == ["tags"]
    assert run_main(*args) == 2  # an existing config is not overwritten without --force
    assert "--force" in capsys.readouterr().err

    run = tmp_path / "run"
    assert run_main("train", out / "experiment.yaml", "--out", run, "--quiet", "--set", "train.epochs=1", "--set", "train.num_threads=1") == 0
    assert run_main("predict", run, "--data", tmp_path / "mine.csv", "--out", tmp_path / "p.csv") == 0
    preds = pd.read_csv(tmp_path / "p.csv")
    assert preds["pred_click"].between(0, 1).all() and (preds["pred_orders"] >= 0).all()


def test_example_configs_come_from_the_package(tmp_path):
    from helpers import SHARED_DATA

    assert run_main("init", "--example", "movielens", "--out", tmp_path, "--data-dir", SHARED_DATA) == 0
    cfg = load_experiment(tmp_path / "movielens.yaml")
    assert cfg.model.name == "mmoe"
    expected = (SHARED_DATA / "movielens100k_msmt" / "ml100k_msmt_train.csv").resolve()
    assert cfg.dataset.files.train == str(expected)
    raw = yaml.safe_load((tmp_path / "datasets" / "movielens100k.yaml").read_text())
    assert raw["tasks"][0]["name"] == "click"
    assert run_main("init", "--example", "nope", "--out", tmp_path / "x") == 2
