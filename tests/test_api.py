"""The Python API as a user calls it (``import msmt``), checked against the command line: the same
run directory, the same predictions, the same metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

import msmt
from helpers import run_main
from msmt.spec.errors import MsmtError
from msmt.synth.simple import write_simple

SETS = {"train.epochs": 2, "train.batch_size": 128, "train.num_threads": 1, "model.hidden_dims": [16], "dataset.group": "user_id"}
CLI_SETS = [a for key, value in SETS.items() for a in ("--set", f"{key}={json.dumps(value)}")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small synthetic world, and the same run trained by ``msmt.train`` and by ``msmt train``."""
    root = tmp_path_factory.mktemp("api")
    data = write_simple(root / "data", rows=1200, seed=2)
    run = msmt.train(data / "experiment.yaml", out=root / "api_run", overrides=SETS)
    assert run_main("train", data / "experiment.yaml", "--out", root / "cli_run", "--quiet", *CLI_SETS) == 0
    return data, run, root / "cli_run"


def test_import_msmt_is_cheap():
    """``import msmt`` loads neither torch nor pandas (the API is loaded on first use: the other
    tests call ``msmt.train``, ``msmt.load``)."""
    code = "import sys, msmt; assert 'torch' not in sys.modules and 'pandas' not in sys.modules; assert 'train' in dir(msmt)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_writes_the_run_directory_the_cli_writes(world):
    data, run, cli_run = world
    assert isinstance(run, msmt.Run)
    for name in ("config.yaml", "schema.json", "metrics.json", "history.csv"):
        assert (run.path / name).read_text() == (cli_run / name).read_text(), name
    assert (run.path / "model.safetensors").read_bytes() == (cli_run / "model.safetensors").read_bytes()
    assert run.metrics == json.loads((cli_run / "metrics.json").read_text())
    assert list(run.history["epoch"]) == [1, 2]
    assert run.tasks == ["click", "purchase", "dwell"]


def test_predict_and_evaluate_equal_the_commands(world, tmp_path):
    data, run, cli_run = world
    test = pd.read_csv(data / "test.csv")
    scored = run.predict(test)
    assert list(scored.columns) == [*test.columns, "pred_click", "pred_purchase", "pred_dwell"]
    assert scored.index.equals(test.index)
    assert run_main("predict", cli_run, "--data", data / "test.csv", "--out", tmp_path / "p.csv") == 0
    cli = pd.read_csv(tmp_path / "p.csv")
    for task in run.tasks:
        assert scored[f"pred_{task}"].to_numpy() == pytest.approx(cli[f"pred_{task}"].to_numpy(), rel=1e-6)

    M = run.evaluate(data / "test.csv", out=tmp_path / "api.json")
    assert run_main("evaluate", cli_run, "--data", data / "test.csv", "--out", tmp_path / "cli.json") == 0
    assert M == json.loads((tmp_path / "cli.json").read_text()) == json.loads((tmp_path / "api.json").read_text())
    assert M == run.metrics["test"]  # the test split's metrics of training, again


def test_load_and_a_directory_that_is_not_a_run(world, tmp_path):
    data, run, _ = world
    again = msmt.load(run.path)
    test = pd.read_csv(data / "test.csv").head(50)
    assert again.predict(test).equals(run.predict(test))
    with pytest.raises(MsmtError, match="not a run directory"):
        msmt.load(tmp_path)


def test_train_on_dataframes_with_a_config_mapping(world, tmp_path, monkeypatch):
    """A config given as a dict (paths relative to the working directory) and data as DataFrames:
    the frames are written into the run directory, so its config.yaml reproduces the run."""
    data, _, _ = world
    monkeypatch.chdir(data)
    config = yaml.safe_load((data / "experiment.yaml").read_text())
    config["dataset"] = "dataset.yaml"
    frames = {"train": pd.read_csv(data / "train.csv"), "validation": pd.read_csv(data / "validation.csv")}
    run = msmt.train(config, data=frames, out=tmp_path / "run", overrides=["train.epochs=1", "train.num_threads=1"])
    files = run.config.dataset.files
    assert files.train == str(tmp_path / "run" / "data" / "train.csv") and files.test is None
    assert set(run.metrics) == {"val"} and run.metrics["val"]["rows"] == len(frames["validation"])
    assert run_main("train", tmp_path / "run" / "config.yaml", "--out", tmp_path / "again", "--quiet") == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == run.metrics


def test_adapt_then_predict_uses_the_blocks_like_the_commands(world, tmp_path):
    data, run, cli_run = world
    test = pd.read_csv(data / "test.csv")
    personal = run.adapt(test, out=tmp_path / "personal", steps=2)
    assert isinstance(personal, msmt.Run) and (tmp_path / "personal" / "blocks" / "index.json").exists()
    assert run_main("adapt", cli_run, "--data", data / "test.csv", "--out", tmp_path / "cli_personal", "--steps", 2) == 0
    assert run_main("predict", tmp_path / "cli_personal", "--data", data / "test.csv", "--out", tmp_path / "p.csv") == 0
    cli = pd.read_csv(tmp_path / "p.csv")
    ours = personal.predict(test)
    assert ours["pred_click"].to_numpy() == pytest.approx(cli["pred_click"].to_numpy(), rel=1e-5)
    assert not ours["pred_click"].equals(run.predict(test)["pred_click"])  # the blocks changed something


def test_export_is_parity_checked(world, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (pip install 'msmt[export]') is not installed")
    _, run, _ = world
    result = run.export("onnx", tmp_path / "model.onnx", rows=40)
    assert result.path.exists() and result.max_abs_diff <= 1e-5 and result.rows_checked > 0
