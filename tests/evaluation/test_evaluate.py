"""``msmt evaluate``: every task of every scenario measured on that scenario's rows against the
task's own label column, the oracle (``true_<task>``) beside it, the negative-binomial deviance
with each row's own dispersion, the cohorts of the group; the table it prints and the metrics
JSON it writes, from the scores the run gives (``--precision``). References: the raw columns of
the data and closed forms (scipy's NB2 pmf), never the evaluator itself."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import nbinom
from sklearn.metrics import roc_auc_score

from helpers import encoded, model_config, run_main
from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.evaluation.evaluate import evaluate_model
from msmt.evaluation.report import metrics_table
from msmt.models import build_model
from msmt.rundir.layout import load_run
from msmt.scoring.predict import predict_batches
from msmt.spec.dataset import DatasetSpec, Task, TaskKind


def _logloss(y, p) -> float:
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _nb_deviances(y, mu, alpha) -> np.ndarray:
    """2·[log p(y | mean y) − log p(y | mean μ)] under NB2 with dispersion α (scipy's pmf, r = 1/α)."""
    r = 1.0 / alpha
    return 2.0 * (nbinom.logpmf(y, r, r / (r + y)) - nbinom.logpmf(y, r, r / (r + mu)))


@pytest.fixture(scope="module")
def nb_world(tiny_dir, tiny_spec, tiny_train):
    """The tiny data with ``dwell`` a negative-binomial task (a dispersion per scenario, set to
    distinct values) and ``user_id`` the group; an untrained model and its scores on the test rows."""
    raw = tiny_spec.model_dump()
    for task in raw["tasks"]:
        if task["name"] == "dwell":
            task.update(distribution="negative_binomial", dispersion="scenario")
    spec = DatasetSpec.model_validate({**raw, "group": "user_id"})
    schema = fit_schema(tiny_train, spec)
    test = read_data(tiny_dir / "test.csv", spec)
    data = encoded(test, schema)
    torch.manual_seed(0)
    model = build_model(schema, model_config("mmoe")).eval()
    with torch.no_grad():
        model.dispersion["dwell"].copy_(torch.linspace(-2.0, 1.0, model.dispersion["dwell"].numel()))
    return model, test, data, predict_batches(model, data, 8192)


def test_each_task_in_each_scenario_against_its_own_label_and_the_oracle(nb_world):
    model, test, data, preds = nb_world
    M = evaluate_model(model, test, data)
    alpha = np.exp(model.dispersion["dwell"].detach().double().numpy())[data["scenario"].numpy()]
    deviance = _nb_deviances(test["dwell"].to_numpy(float), preds["dwell"].astype(np.float64), alpha)
    scenarios = sorted(test["scenario"].unique())
    assert sorted(M["scenarios"]) == scenarios and len(scenarios) > 1
    for s in [None, *scenarios]:
        rows = np.ones(len(test), bool) if s is None else (test["scenario"] == s).to_numpy()
        block, oracle = (M["overall"], M["oracle"]["overall"]) if s is None else (M["scenarios"][s], M["oracle"]["scenarios"][s])
        for task in ("click", "purchase"):
            y, p, truth = test[task].to_numpy(float)[rows], preds[task][rows], test[f"true_{task}"].to_numpy(float)[rows]
            assert block[task]["rows"] == rows.sum()
            assert block[task]["logloss"] == pytest.approx(_logloss(y, p), rel=1e-9), (s, task)
            assert oracle[task]["logloss"] == pytest.approx(_logloss(y, truth), rel=1e-9), (s, task)
            if len(np.unique(y)) == 2:  # AUC is defined
                assert block[task]["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-9), (s, task)
                assert oracle[task]["auc"] == pytest.approx(roc_auc_score(y, truth), rel=1e-9), (s, task)
        y, p, truth = test["dwell"].to_numpy(float)[rows], preds["dwell"].astype(np.float64)[rows], test["true_dwell"].to_numpy(float)[rows]
        assert block["dwell"]["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)), rel=1e-9), s
        assert oracle["dwell"]["rmse"] == pytest.approx(np.sqrt(np.mean((y - truth) ** 2)), rel=1e-9), s
        assert block["dwell"]["nb_deviance"] == pytest.approx(deviance[rows].mean(), rel=1e-6), s  # each row's own α


def test_the_groups_cohorts_are_measured_on_their_own_rows(nb_world, tiny_train):
    model, test, data, preds = nb_world
    M = evaluate_model(model, test, data)
    seen = test["user_id"].isin(set(tiny_train["user_id"])).to_numpy()
    assert 0 < seen.sum() < len(test)
    for name, rows in (("user_id ∈ train", seen), ("user_id ∉ train", ~seen)):
        block = M["cohorts"][name]["click"]
        assert block["rows"] == rows.sum()
        assert block["logloss"] == pytest.approx(_logloss(test["click"].to_numpy(float)[rows], preds["click"][rows]), rel=1e-9)


def test_the_table_shows_each_scenarios_own_cells_next_to_its_oracle():
    """One row per scenario and one overall; for each task its primary measures as ``model (oracle)``
    of that very row; a task absent from a scenario is a dash; the rows column counts every row."""
    click, n = Task(name="click", label="c", kind=TaskKind.BINARY), Task(name="n", label="n", kind=TaskKind.COUNT, scenarios=["b"])

    def count(smape, nmae, rows):
        return {"smape": smape, "nmae": nmae, "mape": 0.9, "rmse": 9.0, "poisson_deviance": 9.0, "rows": rows}

    M = {
        "rows": 10,
        "overall": {"click": {"auc": 0.75, "logloss": 0.5, "rows": 10}, "n": count(0.3, 0.2, 4)},
        "scenarios": {"a": {"click": {"auc": 0.6, "logloss": 0.7, "rows": 6}},
                      "b": {"click": {"auc": 0.9, "logloss": 0.3, "rows": 4}, "n": count(0.31, 0.21, 4)}},
        "oracle": {"overall": {"click": {"auc": 0.8, "logloss": 0.45, "rows": 10}, "n": count(0.1, 0.05, 4)},
                   "scenarios": {"a": {"click": {"auc": 0.65, "logloss": 0.66, "rows": 6}},
                                 "b": {"click": {"auc": 0.95, "logloss": 0.25, "rows": 4}, "n": count(0.11, 0.06, 4)}}},
    }
    assert metrics_table(M, (click, n)).splitlines() == [
        "| scenario | rows | click auc | click logloss | n smape | n nmae |",
        "|---|---|---|---|---|---|",
        "| a | 6 | 0.6000 (0.6500) | 0.7000 (0.6600) | – | – |",
        "| b | 4 | 0.9000 (0.9500) | 0.3000 (0.2500) | 0.3100 (0.1100) | 0.2100 (0.0600) |",
        "| **overall** | 10 | 0.7500 (0.8000) | 0.5000 (0.4500) | 0.3000 (0.1000) | 0.2000 (0.0500) |",
    ]
    assert "(" not in metrics_table(M, (click, n), with_oracle=False)


def test_evaluate_measures_the_scores_of_the_requested_precision_and_prints_its_table(trained_run, tmp_path, capsys):
    """``msmt evaluate --precision bf16`` measures what ``msmt predict --precision bf16`` scores (not
    the fp32 model's), writes those metrics, and prints their table with the oracle."""
    run, data = trained_run("mmoe"), trained_run.data_dir / "test.csv"
    assert run_main("predict", run, "--data", data, "--out", tmp_path / "p.parquet", "--precision", "bf16") == 0
    capsys.readouterr()
    assert run_main("evaluate", run, "--data", data, "--out", tmp_path / "bf16.json", "--precision", "bf16") == 0
    printed = capsys.readouterr().out
    assert run_main("evaluate", run, "--data", data, "--out", tmp_path / "fp32.json") == 0
    M, fp32 = (json.loads((tmp_path / name).read_text()) for name in ("bf16.json", "fp32.json"))
    scored = pd.read_parquet(tmp_path / "p.parquet")
    for task in ("click", "purchase"):
        want = _logloss(scored[task].to_numpy(float), scored[f"pred_{task}"].to_numpy())
        assert M["overall"][task]["logloss"] == pytest.approx(want, rel=1e-9), task
        assert fp32["overall"][task]["logloss"] != pytest.approx(want, rel=1e-9), task  # bf16 scores do differ
    assert metrics_table(M, load_run(run).schema.spec.tasks) in printed


def test_a_scenario_where_no_task_exists_has_no_block_and_no_table_row():
    """Rows of a scenario none of the tasks is declared for (``tasks.<name>.scenarios``) count in
    ``rows`` but get no scenario block (nothing is measured there), and the table leaves them out."""
    from msmt.evaluation.metrics import compute_metrics

    tasks = (Task(name="a", label="a", kind=TaskKind.BINARY, scenarios=["x"]),)
    scen = np.array(["x", "x", "x", "y", "y"], dtype=object)
    M = compute_metrics(tasks, {"a": np.array([0, 1, 0, 1, 1.0])}, {"a": np.array([0.2, 0.7, 0.4, 0.1, 0.9])}, scen)
    assert M["rows"] == 5 and list(M["scenarios"]) == ["x"] and M["overall"]["a"]["rows"] == 3
    assert [line.split(" | ")[0] for line in metrics_table(M, tasks).splitlines()[2:]] == ["| x", "| **overall**"]


@pytest.mark.parametrize("training", [True, False])
def test_scoring_leaves_the_models_mode_as_it_was(tiny_schema, tiny_train, training):
    """``predict`` scores in eval mode and hands the model back in the mode it came in (training's
    validation scores between steps; a caller's model stays what it was)."""
    model = build_model(tiny_schema, model_config("shared_bottom", dropout=0.5))
    model.train(training)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    predict_batches(model, encoded(tiny_train.iloc[:64], tiny_schema), batch_size=32)
    assert seen == [False, False]
    assert model.training is training
