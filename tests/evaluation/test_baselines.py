"""The naive forecasts in a panel run's report (msmt.evaluation.baselines), against an independent
pandas computation of each row's yesterday's value and trailing mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import model_config, run_main
from layers.test_naive import reference
from msmt.evaluation.baselines import naive_baselines
from msmt.experiments.run import load_in_memory
from msmt.layers.naive import EPSILON_SHARE
from msmt.rundir.layout import load_run
from msmt.spec.config import load_dataset_spec
from msmt.synth.advertiser import write_advertiser


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = write_advertiser(tmp_path_factory.mktemp("baselines"), advertisers=25, days=30, seed=12)
    splits, schema, encoded = load_in_memory(load_dataset_spec(out / "dataset.yaml"))
    return splits, schema, encoded, naive_baselines(schema, model_config("m2m"), splits, encoded)


@pytest.mark.parametrize("name, method", [("naive_last", "last"), ("naive_mean", "mean")])
@pytest.mark.parametrize("split, frame_name, earlier", [("val", "validation", ["train"]), ("test", "test", ["train", "validation"])])
def test_the_naive_rows_score_each_rows_own_history(world, name, method, split, frame_name, earlier):
    """Counts: NMAE of b + ε (ε = 1% of the training mean), the scenario's training mean without history;
    ``active``: AUC of the last live flag / the window's live rate, clipped to [0.02, 0.98]."""
    splits, schema, _, baselines = world
    frame = splits[frame_name]
    context = pd.concat([splits[s] for s in earlier], ignore_index=True)
    train = splits["train"]
    block = baselines[split][name]["overall"]
    for task in ("impressions", "cost"):
        b = reference(frame, context, task, method, schema.panel.window, indicator=False)
        prior = train.groupby("scenario")[task].mean()[frame["scenario"]].to_numpy()
        pred = np.where(np.isnan(b), prior, b + EPSILON_SHARE * train[task].mean())
        y = frame[task].to_numpy(float)
        assert block[task]["nmae"] == pytest.approx(np.abs(y - pred).sum() / y.sum(), rel=1e-5)
    rate = reference(frame, context, "cost", method, schema.panel.window, indicator=True)
    prior = train.groupby("scenario")["active"].mean()[frame["scenario"]].to_numpy()
    p = np.where(np.isnan(rate), prior, np.clip(rate, 0.02, 0.98))
    assert block["active"]["auc"] == pytest.approx(roc_auc_score(frame["active"], p), rel=1e-5)


def test_a_panel_runs_report_shows_them_and_others_do_not(trained_panel_run, trained_run):
    out = trained_panel_run("mmoe")
    report = (out / "report.md").read_text()
    run = load_run(out)
    splits, schema, encoded = load_in_memory(run.schema.spec)
    baselines = naive_baselines(schema, run.config.model, splits, encoded)
    test_section = report.split("## test")[1]
    for name in ("naive_last", "naive_mean"):
        row = next(line for line in test_section.splitlines() if line.startswith(f"| {name} |"))
        assert row.split(" | ")[2] == f"{baselines['test'][name]['overall']['impressions']['nmae']:.4f}"  # impressions nmae
    assert "Beside the naive forecasts" not in (trained_run("mmoe") / "report.md").read_text()


def test_msmt_evaluate_prints_them_as_the_report_does(trained_panel_run, capsys):
    """The test split scored by ``msmt evaluate`` with the earlier splits as context: the same rows and
    history as the run's own test evaluation, so the printed naive rows equal the report's."""
    out = trained_panel_run("mmoe")
    data = trained_panel_run.data_dir
    capsys.readouterr()
    assert run_main("evaluate", out, "--data", data / "test.csv", "--context", data / "train.csv", "--context", data / "validation.csv") == 0
    printed = capsys.readouterr().out
    report_test = (out / "report.md").read_text().split("## test")[1]
    for name in ("naive_last", "naive_mean", "oracle"):
        row = next(line for line in report_test.splitlines() if line.startswith(f"| {name} |"))
        assert row in printed.splitlines()


def test_msmt_train_prints_them_as_its_report_does(tmp_path, capsys):
    data = write_advertiser(tmp_path / "data", advertisers=20, days=22, seed=13)
    sets = ["model.name=mmoe", "train.epochs=1", "model.hidden_dims=[8]", "model.tower_dims=[4]", "model.embedding_dim=4"]
    capsys.readouterr()
    assert run_main("train", data / "experiment.yaml", "--out", tmp_path / "run", "--quiet", *[a for s in sets for a in ("--set", s)]) == 0
    printed = capsys.readouterr().out.split("\ntest (")[1]
    report_test = (tmp_path / "run" / "report.md").read_text().split("## test")[1]
    rows = [line for line in report_test.splitlines() if line.startswith(("| naive_last |", "| naive_mean |"))]
    assert len(rows) == 2 and all(row in printed.splitlines() for row in rows)
