"""Compiled scoring (msmt.scoring.compiled): same predictions as eager scoring, one graph for all batches."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import run_cli, run_main
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.rundir.layout import load_run
from msmt.scoring.compiled import CompiledPredictor, pad_rows
from msmt.scoring.predict import predict_batches
from msmt.spec.errors import ConfigError

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None, reason="TorchInductor needs a C++ compiler")


def test_pad_rows_repeats_the_last_row():
    batch = {"scenario": torch.tensor([3, 4]), "sparse": torch.tensor([[1, 2], [5, 6]])}
    padded = pad_rows(batch, 4)
    assert padded["scenario"].tolist() == [3, 4, 4, 4]
    assert padded["sparse"].tolist() == [[1, 2], [5, 6], [5, 6], [5, 6]]
    assert pad_rows(batch, 2) is batch
    with pytest.raises(ValueError, match="3 rows"):
        pad_rows({"scenario": torch.zeros(3)}, 2)


def _loaded(trained_run, model: str, *overrides: str):
    run = load_run(trained_run(model, *overrides))
    frame = read_data(trained_run.data_dir / "test.csv", run.schema.spec)
    return run, encode_frame(frame, run.schema, with_labels=False)


@needs_compiler
# MMoE's bf16 compiled graph is checked from the shell in test_cli_predict_compiled_bf16
@pytest.mark.slow
@pytest.mark.parametrize("model, bf16", [("mmoe", False), ("m2m", True)])
def test_compiled_scoring_matches_eager_with_one_graph(trained_run, model, bf16):
    run, data = _loaded(trained_run, model)
    n = int(data["scenario"].shape[0])
    batch_size = 16
    assert n > batch_size and n % batch_size, "the test needs several batches, the last one partial"
    eager = predict_batches(run.model, data, batch_size)
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = predict_batches(run.model, data, batch_size, compiled=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1  # the padded last batch reused it
    for task, values in eager.items():
        np.testing.assert_allclose(compiled[task], values, rtol=1e-4, atol=1e-5, err_msg=task)
    if not bf16:
        return
    bf16_eager = predict_batches(run.model, data, batch_size, precision="bf16")
    bf16_compiled = predict_batches(run.model, data, batch_size, precision="bf16", compiled=True)
    for task, values in eager.items():
        # bfloat16 keeps 8 bits of mantissa: outputs move by a few percent at most, the ranking hardly
        np.testing.assert_allclose(bf16_compiled[task], values, rtol=0.03, atol=0.03, err_msg=task)
        np.testing.assert_allclose(bf16_compiled[task], bf16_eager[task], rtol=0.03, atol=0.03, err_msg=task)
        assert np.corrcoef(bf16_compiled[task], values)[0, 1] > 0.99, task


@needs_compiler
def test_predictor_rejects_a_batch_larger_than_its_shape(trained_run):
    run, data = _loaded(trained_run, "mmoe")
    predictor = CompiledPredictor(run.model, batch_size=8)
    with pytest.raises(ValueError, match="cannot be padded to 8"):
        predictor({k: v[:9] for k, v in data.items()})


def test_unknown_precision_is_a_config_error(trained_run):
    run, data = _loaded(trained_run, "mmoe")
    with pytest.raises(ConfigError, match="precision"):
        predict_batches(run.model, data, 64, precision="fp16")
    with pytest.raises(ConfigError, match="precision"):
        CompiledPredictor(run.model, 64, precision="fp16")


@pytest.mark.slow
@needs_compiler
def test_cli_predict_compiled_bf16(trained_run, tmp_path, capsys):
    """The compiled path from a user's shell (a fresh process); the eager reference and the
    refused precision run the same command line in this process (no interpreter start)."""
    run_dir, data = trained_run("mmoe"), trained_run.data_dir / "test.csv"
    assert run_main("predict", run_dir, "--data", data, "--out", tmp_path / "eager.csv") == 0
    args = ["predict", run_dir, "--data", data, "--out", tmp_path / "fast.csv", "--compile", "--precision", "bf16"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert "compiling the model with TorchInductor" in res.stderr and "compilation included" in res.stderr  # never silent
    eager, fast = pd.read_csv(tmp_path / "eager.csv"), pd.read_csv(tmp_path / "fast.csv")
    preds = [c for c in eager.columns if c.startswith("pred_")]
    assert preds
    for col in preds:
        assert np.abs(fast[col] - eager[col]).max() < 0.05, col
    capsys.readouterr()
    code = run_main("predict", run_dir, "--data", data, "--out", tmp_path / "x.csv", "--precision", "fp8")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--precision" in err[0] and "fp8" in err[0], err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
@needs_compiler
def test_autotuned_scoring_matches_eager(trained_run):
    """max-autotune may swap oneDNN for Inductor's own GEMM kernels: the predictions must not move.

    A small shared-bottom model (one hidden layer, one linear layer per task tower): every GEMM
    is benchmarked against its candidates at compile time (seconds each), so fewer GEMMs keep the
    check itself (a GEMM with a fused bias + ReLU, GEMMs with a bias only, fp32 and bf16) cheap.
    """
    run, data = _loaded(trained_run, "shared_bottom", "model.hidden_dims=[16]", "model.tower_dims=[]")
    eager = predict_batches(run.model, data, 16)
    torch._dynamo.reset()
    tuned_before = torch._dynamo.utils.counters["inductor"]["select_algorithm_autotune"]
    # no cached graph or autotuning result from an earlier run: the GEMMs are tuned here
    with torch._inductor.config.patch(fx_graph_cache=False, autotune_local_cache=False):
        tuned = predict_batches(run.model, data, 16, compiled=True, autotune=True)
        tuned_bf16 = predict_batches(run.model, data, 16, precision="bf16", compiled=True, autotune=True)
    assert torch._dynamo.utils.counters["inductor"]["select_algorithm_autotune"] > tuned_before  # GEMMs were autotuned
    for task, values in eager.items():
        np.testing.assert_allclose(tuned[task], values, rtol=1e-4, atol=1e-5, err_msg=task)
        np.testing.assert_allclose(tuned_bf16[task], values, rtol=0.03, atol=0.03, err_msg=task)
        assert np.corrcoef(tuned_bf16[task], values)[0, 1] > 0.99, task


def test_cli_autotune_needs_compile(trained_run, tmp_path, capsys):
    run_dir, data = trained_run("mmoe"), trained_run.data_dir / "test.csv"
    capsys.readouterr()
    code = run_main("predict", run_dir, "--data", data, "--out", tmp_path / "x.csv", "--autotune")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--autotune" in err[0] and "--compile" in err[0], err
    assert not (tmp_path / "x.csv").exists()
