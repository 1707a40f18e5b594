"""ONNX / TorchScript export: every registered model, dynamic batch and history length, loud parity failures."""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from msmt.cli import main
from msmt.commands.export import export_run
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.models import model_names
from msmt.rundir.layout import load_run
from msmt.scoring.export import ExportError, OnnxRunner, TorchScriptRunner, export_model, used_keys
from msmt.scoring.predict import predict_batches
from msmt.spec.task_kinds import to_user_units


def _batch(run, data_dir, rows=None):
    frame = read_data(data_dir / "test.csv", run.schema.spec)
    frame = frame if rows is None else frame.iloc[:rows]
    return encode_frame(frame, run.schema, with_labels=False)


@pytest.mark.parametrize("model", model_names())
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_registered_model_exports_with_parity(trained_run, trained_panel_run, tmp_path, model, fmt, caplog):
    # the naive forecasters read each unit's history: they are trained on panel data
    trained_run = trained_panel_run if model.startswith("naive_") else trained_run
    run_dir = trained_run(model)
    out = tmp_path / f"m.{fmt}"
    caplog.set_level(logging.WARNING, logger="msmt.scoring.export")
    result = export_run(run_dir, fmt, out, rows=40)
    assert out.exists() and result.max_abs_diff <= 1e-5
    assert result.rows_checked == 40
    # ONNX through torch.export for every registered model when onnxscript (the export extra) is
    # there; without it, the TorchScript-based exporter with the reason logged
    fallbacks = [r.getMessage() for r in caplog.records if r.name == "msmt.scoring.export"]
    if fmt == "torchscript":
        assert fallbacks == []
    elif importlib.util.find_spec("onnxscript") is not None:
        assert fallbacks == [], fallbacks
    else:
        assert len(fallbacks) == 1 and "onnxscript" in fallbacks[0]
    run = load_run(run_dir)
    if fmt == "onnx":
        _declares_dynamic_batch_and_task_kinds(out, run, model)

    # Independent of the built-in check: rows from the *test* file, a batch size never traced,
    # compared in user units with what `msmt predict` computes.
    batch = _batch(run, trained_run.data_dir, rows=23)
    runner = OnnxRunner(out) if fmt == "onnx" else TorchScriptRunner(out)
    raw = runner(batch)
    expected = predict_batches(run.model, batch)
    for task in run.model.task_names:
        kind = run.schema.spec.task(task).kind
        got = to_user_units(kind, torch.from_numpy(raw[task])).numpy()
        assert got.shape == (23,)
        np.testing.assert_allclose(got, expected[task], atol=1e-5, rtol=0)


@pytest.mark.parametrize("forecast", ["blend", "blend_backtest"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_blend_offsets_export_with_parity(trained_panel_run, tmp_path, forecast, fmt):
    """The learnt per-row mix of the naive forecasts (and the backtest errors its gate reads) is part
    of the exported graph: test rows scored by the file equal ``msmt predict``'s."""
    run_dir = trained_panel_run("mmoe", f"model.forecast={forecast}")
    out = tmp_path / f"m.{fmt}"
    assert export_run(run_dir, fmt, out, rows=40).max_abs_diff <= 1e-5
    run = load_run(run_dir)
    assert run.model.forecast.blends and run.model.forecast.backtests == (forecast == "blend_backtest")
    batch = _batch(run, trained_panel_run.data_dir, rows=31)
    raw = (OnnxRunner(out) if fmt == "onnx" else TorchScriptRunner(out))(batch)
    expected = predict_batches(run.model, batch)
    for task in run.model.task_names:
        got = to_user_units(run.schema.spec.task(task).kind, torch.from_numpy(raw[task])).numpy()
        np.testing.assert_allclose(got, expected[task], atol=1e-5, rtol=1e-5)


def _declares_dynamic_batch_and_task_kinds(path, run, model: str) -> None:
    """Every input and output has the symbolic batch dimension, the metadata names each task's
    kind, and (for the mmoe run, whose data has no scenario attributes: [N, 0] tensors) unused
    keys are not graph inputs."""
    proto = onnx.load(str(path))
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["msmt.tasks"]) == {t: run.schema.spec.task(t).kind for t in run.model.task_names}
    if model == "mmoe":
        assert json.loads(meta["msmt.tasks"]) == {"click": "binary", "purchase": "binary", "dwell": "count"}
        assert {i.name for i in proto.graph.input} == {"scenario", "sparse", "dense", "multi.tags"}


class ToySequenceModel(nn.Module):
    """A model reading the panel-history keys ``seq.*`` (as M2M will): a masked mean over W steps.

    seq.behaviour [B, W] int64, seq.performance [B, W, F] float32, seq.mask [B, W] bool -> {"y": [B]}.
    """

    task_names = ["y"]

    def __init__(self, features: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.perf = nn.Linear(features, 4)
        self.scen = nn.Embedding(5, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, batch):
        mask = batch["seq.mask"].unsqueeze(-1).float()  # [B, W, 1]
        steps = self.emb(batch["seq.behaviour"]) + self.perf(batch["seq.performance"])  # [B, W, 4]
        pooled = (steps * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # [B, 4]
        return {"y": self.out(torch.tanh(pooled + self.scen(batch["scenario"]))).squeeze(-1)}


def _seq_batch(rows: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {
        "scenario": torch.randint(0, 5, (rows,), generator=g),
        "dense": torch.randn(rows, 2, generator=g),  # present but unread: must not become an input
        "seq.behaviour": torch.randint(0, 10, (rows, steps), generator=g),
        "seq.performance": torch.randn(rows, steps, 3, generator=g),
        "seq.mask": torch.rand(rows, steps, generator=g) > 0.3,
    }


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_sequence_inputs_have_dynamic_length(tmp_path, fmt):
    model = ToySequenceModel().eval()
    out = tmp_path / f"seq.{fmt}"
    result = export_model(model, _seq_batch(32, 6, 0), fmt, out)
    assert result.inputs == ["scenario", "seq.behaviour", "seq.mask", "seq.performance"]
    runner = OnnxRunner(out) if fmt == "onnx" else TorchScriptRunner(out)
    for rows, steps in [(1, 3), (17, 11), (4, 1)]:
        batch = _seq_batch(rows, steps, rows + steps)
        with torch.no_grad():
            expected = model(batch)["y"].numpy()
        np.testing.assert_allclose(runner(batch)["y"], expected, atol=1e-5, rtol=0)


class BranchyModel(nn.Module):
    """Python control flow on data: tracing freezes the branch taken on the example rows."""

    task_names = ["y"]

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, batch):
        x = batch["dense"]
        if bool((x[:, 0] > 0).all()):  # true on the tracing rows, false on the others
            x = x * 10.0
        return {"y": self.lin(x).squeeze(-1)}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_parity_failure_is_loud_and_writes_nothing(tmp_path, fmt):
    dense = torch.randn(40, 2)
    dense[:5, 0] = dense[:5, 0].abs() + 0.1  # the 5 tracing rows take the x10 branch
    dense[5:, 0] = -dense[5:, 0].abs() - 0.1
    out = tmp_path / f"bad.{fmt}"
    with pytest.raises(ExportError, match="parity check failed"):
        export_model(BranchyModel().eval(), {"dense": dense, "scenario": torch.zeros(40, dtype=torch.long)}, fmt, out)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary left behind


def test_used_keys_reads_only_what_the_model_reads():
    assert used_keys(ToySequenceModel(), _seq_batch(4, 2, 0)) == ["scenario", "seq.behaviour", "seq.mask", "seq.performance"]


def test_export_command(trained_run, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(trained_run("mmoe")), "--format", "onnx", "--out", str(out), "--rows", "30"])
    assert exit_info.value.code == 0 and out.exists()
    assert "max abs diff" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(trained_run("mmoe")), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2  # bad usage
    assert "--format" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def funnel_run(tmp_path_factory):
    """Factory: ``funnel_run(model)`` -> (run directory, data folder) of a model trained once on the
    declared funnel (1,500 synthetic rows, 1 epoch)."""
    from msmt.experiments.run import run_experiment
    from msmt.spec.config import load_experiment
    from msmt.synth.funnel import write_funnel

    data = write_funnel(tmp_path_factory.mktemp("funnel"), rows=1500, seed=0)
    runs = {}

    def make(model: str):
        if model not in runs:
            cfg = load_experiment(data / "experiment.yaml", [f"model.name={model}", "train.epochs=1", "train.progress=false",
                                                             "model.hidden_dims=[16]"])
            runs[model] = tmp_path_factory.mktemp(f"funnel_{model}")
            run_experiment(cfg, runs[model])
        return runs[model], data

    return make


@pytest.mark.parametrize("model", ["esmm", "escm2", "aitm"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_esmm_with_a_declared_product_exports_with_parity(funnel_run, tmp_path, fmt, model):
    """The funnel ESMM (ctcvr = click × cvr) goes through the log-space product algebra
    (msmt.layers.probability), which must export too: compared in probabilities with `predict`.
    The ESMM family trained on its declared funnel (ESCM², AITM with its calibrator) likewise."""
    run_dir, data = funnel_run(model)
    out = tmp_path / f"m.{fmt}"
    result = export_run(run_dir, fmt, out, rows=40)
    assert result.max_abs_diff <= 1e-5
    run = load_run(run_dir)
    batch = _batch(run, data, rows=31)
    raw = (OnnxRunner(out) if fmt == "onnx" else TorchScriptRunner(out))(batch)
    expected = predict_batches(run.model, batch)
    assert "ctcvr" in raw
    for task in run.model.task_names:
        got = to_user_units(run.schema.spec.task(task).kind, torch.from_numpy(raw[task])).numpy()
        np.testing.assert_allclose(got, expected[task], atol=1e-5, rtol=0)


def test_parity_is_the_largest_difference_and_a_nan_output_fails_it():
    """parity: max |exported − eager| over tasks and rows (all rows, then the first alone); one NaN
    in the exported outputs makes it infinite, never hidden by the other rows' agreement."""
    from msmt.scoring.export import parity

    class Tiny(nn.Module):
        task_names = ["a", "b"]

        def forward(self, batch):
            x = batch["x"]
            return {"a": x, "b": 2 * x}

    batch = {"scenario": torch.zeros(4, dtype=torch.long), "x": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)}

    def exported(shift_b, nan_row=None):
        def run(part):
            x = part["x"].double().numpy()
            b = 2 * x + shift_b[: len(x)]
            if nan_row is not None and len(x) > nan_row:
                b[nan_row] = np.nan
            return {"a": x.copy(), "b": b}
        return run

    shift = np.array([0.0, -3e-3, 1e-3, 0.0])
    assert parity(Tiny(), exported(shift), batch) == pytest.approx(3e-3)
    assert parity(Tiny(), exported(np.zeros(4)), batch) == pytest.approx(0.0, abs=1e-12)
    assert parity(Tiny(), exported(np.zeros(4), nan_row=2), batch) == float("inf")


def test_parity_also_scores_a_single_row():
    """A graph that agrees on the whole batch but not on one row alone (a batch size baked in by tracing)
    fails parity: the first row is scored alone as well."""
    from msmt.scoring.export import parity

    class Tiny(nn.Module):
        task_names = ["a"]

        def forward(self, batch):
            return {"a": batch["x"]}

    batch = {"scenario": torch.zeros(4, dtype=torch.long), "x": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)}

    def run(part):
        x = part["x"].double().numpy()
        return {"a": x + (0.5 if len(x) == 1 else 0.0)}

    assert parity(Tiny(), run, batch) == pytest.approx(0.5)


class NudgedModel(BranchyModel):
    """Off the tracing rows the eager model adds 1e-4: the exported graph (traced on the other branch) does not."""

    def forward(self, batch):
        x = batch["dense"]
        y = self.lin(x).squeeze(-1)
        return {"y": y if bool((x[:, 0] > 0).all()) else y + 1e-4}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_parity_tolerance_is_the_one_given(tmp_path, fmt):
    """A difference of 1e-4 fails the default tolerance (1e-5) and passes 1e-3, reported as the difference."""
    dense = torch.randn(40, 2)
    dense[:5, 0] = dense[:5, 0].abs() + 0.1  # the tracing rows
    dense[5:, 0] = -dense[5:, 0].abs() - 0.1
    batch = {"dense": dense, "scenario": torch.zeros(40, dtype=torch.long)}
    with pytest.raises(ExportError, match="parity check failed"):
        export_model(NudgedModel().eval(), batch, fmt, tmp_path / f"strict.{fmt}")
    result = export_model(NudgedModel().eval(), batch, fmt, tmp_path / f"loose.{fmt}", tolerance=1e-3)
    assert result.max_abs_diff == pytest.approx(1e-4, rel=0.05) and (tmp_path / f"loose.{fmt}").exists()
