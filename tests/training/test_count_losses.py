"""Count losses in training: label-scale normalisation, and a negative-binomial task trained end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import model_config
from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.spec.config import load_experiment
from msmt.training.loop import fit
from msmt.training.losses import loss_scales, model_losses, task_losses


def test_normalised_losses_are_the_task_losses_over_the_label_scale(advertiser_panel):
    schema, rows = advertiser_panel
    model = build_model(schema, model_config("mmoe"))
    batch = {k: v[:200] for k, v in rows.items()}
    raw = model_losses(model, batch, normalise=False)
    scaled = model_losses(model, batch)
    scales = loss_scales(schema)
    # count tasks: the training-label mean; binary: 1
    train_mean = float(rows["labels"][:, 0].mean())
    assert scales["impressions"] == np.float64(schema.task_stats["impressions"]["mean"]) and abs(scales["impressions"] - train_mean) < 1e-3 * train_mean
    assert scales["active"] == 1.0
    for task in raw:
        torch.testing.assert_close(scaled[task], raw[task] / scales[task])
    plain = task_losses(schema.spec.tasks, model(batch), batch["labels"], batch["weight"])
    for task in raw:
        torch.testing.assert_close(raw[task], plain[task])


def test_a_per_scenario_dispersion_is_read_at_each_rows_own_scenario(advertiser_panel):
    """``dispersion: scenario``: row n's NB2 loss uses α of its own scenario (index 0: unseen). Each
    scenario's log α is set to a distinct value; the task loss equals the mean of scipy's NB2
    negative log-pmf with the α looked up row by row."""
    schema, rows = advertiser_panel
    tasks = tuple(
        t.model_copy(update={"distribution": "negative_binomial", "dispersion": "scenario"}) if t.name == "impressions" else t
        for t in schema.spec.tasks
    )
    nb = dataclasses.replace(schema, spec=schema.spec.model_copy(update={"tasks": tasks}))
    torch.manual_seed(0)
    model = build_model(nb, model_config("mmoe"))
    values = torch.linspace(-2.0, 1.0, nb.num_scenarios + 1)  # log α per scenario index
    with torch.no_grad():
        model.dispersion["impressions"].copy_(values)
    batch = {k: v[:300] for k, v in rows.items()}
    scen = batch["scenario"]
    assert len(scen.unique()) > 1
    log_alpha = model.distribution_parameters(batch)["impressions"]
    torch.testing.assert_close(log_alpha, torch.stack([values[int(s)] for s in scen]))
    with torch.no_grad():
        lam = torch.exp(model(batch)["impressions"]).double().numpy()
        loss = model_losses(model, batch, normalise=False)["impressions"]
    y = batch["labels"][:, nb.spec.task_names.index("impressions")].double().numpy()
    alpha = np.exp(values.double().numpy()[scen.numpy()])
    expected = -stats.nbinom.logpmf(y, 1 / alpha, 1 / (1 + alpha * lam)).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("dispersion", ["scenario", "task"])
def test_a_negative_binomial_task_learns_its_over_dispersion(trained_panel_run, dispersion):
    """Impressions in the simulator are Gamma(5, 1/5)-mixed Poisson counts: NB2's α moves from its
    start (0.37) toward over-dispersion, one α per scenario or one for the task (the default), and
    the run trains and validates like any other."""
    data = trained_panel_run.data_dir
    cfg = load_experiment(data / "experiment.yaml", [
        "model.name=mmoe", "train.epochs=3", "train.progress=false", "train.batch_size=128",
        "dataset.tasks=[{name: impressions, label: impressions, kind: count, distribution: negative_binomial, dispersion: " + dispersion + "},"
        " {name: active, label: active, kind: binary, history: cost}]",
    ])
    spec = cfg.dataset
    train, val = read_data(spec.files.train, spec), read_data(spec.files.validation, spec)
    schema = fit_schema(train, spec)
    model = build_model(schema, cfg.model)
    start = model.dispersion["impressions"].detach().clone()
    per_scenario = dispersion == "scenario"
    assert start.shape == ((schema.num_scenarios + 1,) if per_scenario else (1,))
    result = fit(model, cfg.train, cfg.loss, encode_frame(train, schema), encode_frame(val, schema, context=train), val)
    trained = slice(1, None) if per_scenario else slice(None)  # per scenario, index 0 (unseen scenarios) is never trained
    moved = model.dispersion["impressions"].detach()[trained]
    assert not torch.equal(moved, start[trained]) and torch.isfinite(moved).all()
    assert np.isfinite(result.history[-1]["val_impressions_loss"])
    overall = result.val_metrics["overall"]["impressions"]
    assert overall["nmae"] < 1.0 and np.isfinite(overall["nb_deviance"]) and overall["nb_deviance"] > 0
    assert "nb_deviance" not in result.val_metrics["overall"]["active"]
