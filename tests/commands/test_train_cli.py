"""The trainer (determinism, early stopping) and the CLI end to end on tiny data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from helpers import run_cli, run_main
from msmt.cli import main
from msmt.experiments.run import run_experiment
from msmt.spec.config import load_experiment

FAST = ["train.epochs=2", "train.batch_size=128", "train.progress=false", "train.num_threads=1"]


def test_same_seed_gives_identical_metrics(tiny_dir, tmp_path):
    cfg = load_experiment(tiny_dir / "experiment.yaml", FAST)
    a = run_experiment(cfg, tmp_path / "a")
    b = run_experiment(load_experiment(tiny_dir / "experiment.yaml", FAST), tmp_path / "b")
    assert a == b
    c = run_experiment(load_experiment(tiny_dir / "experiment.yaml", [*FAST, "train.seed=1"]), tmp_path / "c")
    assert c != a


def test_early_stopping_restores_best_epoch(tiny_dir, tmp_path):
    cfg = load_experiment(
        tiny_dir / "experiment.yaml",
        ["train.epochs=6", "train.patience=1", "train.lr=0.05", "train.monitor=click.auc", "train.progress=false"],
    )
    metrics = run_experiment(cfg, tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    best = history["val_click_auc"].idxmax()
    assert metrics["val"]["overall"]["click"]["auc"] == pytest.approx(history.loc[best, "val_click_auc"])
    # it stopped one epoch after the best (patience 1) unless the best was the last epoch
    assert len(history) in (best + 2, 6)
    kept = int(history.loc[best, "epoch"])
    assert f"The weights are those of epoch {kept}, the best by `click.auc`." in (tmp_path / "run" / "report.md").read_text()


ARTIFACTS = ("config.yaml", "schema.json", "model.safetensors", "metrics.json", "history.csv", "report.md", "plots/training_curves.png")


def test_cli_end_to_end(tmp_path):
    """synth -> train -> evaluate -> predict in this process (the CLI code without interpreter
    starts), then the resolved config trained again from a user's shell (a fresh process)."""
    data, run = tmp_path / "data", tmp_path / "run"
    assert run_main("synth", "simple", "--out", data, "--rows", 1500, "--seed", 1) == 0
    assert run_main("train", data / "experiment.yaml", "--out", run, "--quiet", *sum((["--set", s] for s in FAST), [])) == 0
    for name in ARTIFACTS:
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"}
    assert metrics["test"]["oracle"]["overall"]["click"]["rows"] == metrics["test"]["rows"]

    assert run_main("evaluate", run, "--data", data / "test.csv", "--out", tmp_path / "m.json") == 0
    assert json.loads((tmp_path / "m.json").read_text()) == metrics["test"]

    assert run_main("predict", run, "--data", data / "test.csv", "--out", tmp_path / "p.csv") == 0
    preds = pd.read_csv(tmp_path / "p.csv")
    assert {"pred_click", "pred_purchase", "pred_dwell"} <= set(preds.columns)
    assert preds["pred_click"].between(0, 1).all() and (preds["pred_dwell"] > 0).all()

    # the resolved config reproduces the run, in a fresh process
    again = tmp_path / "again"
    res = run_cli("train", run / "config.yaml", "--out", again, "--quiet")
    assert res.returncode == 0, res.stderr
    for name in ARTIFACTS:
        assert (again / name).exists(), name
    assert json.loads((again / "metrics.json").read_text()) == metrics


@pytest.mark.slow
def test_cli_bad_input_exit_code_and_one_line(tmp_path, tiny_dir, capsys):
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(tiny_dir / "test.csv")
    frame.loc[0, "click"] = 5
    frame.to_csv(bad, index=False)
    cfg = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    cfg["dataset"] = str(tiny_dir / "dataset.yaml")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path / "exp.yaml"), "--set", "train.epocs=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'train.epocs'" in err

    run = tmp_path / "run"
    assert run_main("train", tmp_path / "exp.yaml", "--out", run, "--quiet", "--set", "train.epochs=1") == 0
    res = run_cli("evaluate", run, "--data", bad, "--out", tmp_path / "never.json")
    assert res.returncode == 2
    assert res.stderr.strip() == f"msmt: error: {bad}: column 'click': binary label must be 0 or 1, got 5 in data row 1"
    assert not (tmp_path / "never.json").exists()
