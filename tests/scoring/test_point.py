"""The point forecast for absolute errors (``train.point_forecast: scaled | median``, msmt.scoring.point):
the factor is the least-absolute-deviation scale, fitted per count task and scenario on the
validation split (``median``: the point is the Poisson median of factor × mean); NMAE / SMAPE / MAPE
score it, RMSE and deviance the mean; ``predict``, ``evaluate`` and the service all use the run's
stored factors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import run_main
from msmt.api import encode_for_scoring, score
from msmt.commands.export import export_run
from msmt.evaluation.metrics import compute_metrics
from msmt.experiments.run import run_experiment
from msmt.rundir.layout import load_run
from msmt.scoring import point as point_module
from msmt.scoring.point import (
    POINT_FILE,
    PointScales,
    earlier_half,
    fit_checked_point_scales,
    fit_point_scales,
    lad_scale,
    poisson_median,
)
from msmt.serving.app import create_app
from msmt.spec.config import load_experiment
from msmt.spec.dataset import Task
from msmt.spec.errors import ConfigError, RunDirError
from msmt.spec.measures import mape, nmae, smape
from msmt.synth.advertiser import write_advertiser
from serving.serve_helpers import json_records

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient


def _absolute_error(c: float, pred: np.ndarray, label: np.ndarray) -> float:
    return float(np.abs(c * pred - label).sum())


def test_lad_scale_minimises_the_absolute_error_over_every_candidate():
    """Σ|c·p − y| is convex and piecewise linear in c with kinks at the ratios y / p: its minimum
    over those kinks (and a fine grid) is reached at lad_scale, which is not the ratio of sums."""
    rng = np.random.default_rng(0)
    pred = rng.gamma(2.0, 20.0, size=400)
    label = rng.poisson(pred * rng.gamma(1.5, 1 / 1.5, size=400)).astype(float)  # over-dispersed: median < mean
    c = lad_scale(pred, label)
    candidates = np.concatenate([label / pred, np.linspace(0.0, 3.0, 3001)])
    best = min(_absolute_error(k, pred, label) for k in candidates)
    assert _absolute_error(c, pred, label) <= best + 1e-9
    ratio_of_sums = label.sum() / pred.sum()
    assert _absolute_error(c, pred, label) < _absolute_error(ratio_of_sums, pred, label) - 1.0
    assert c < ratio_of_sums  # the median of an over-dispersed count sits below its mean
    # rows without a positive prediction carry no information about the scale; none at all: 1
    assert lad_scale(np.r_[pred, 0.0, 0.0], np.r_[label, 500.0, 900.0]) == c
    assert lad_scale(np.zeros(3), np.ones(3)) == 1.0


def test_factors_per_scenario_with_the_tasks_factor_for_small_and_new_scenarios():
    rng = np.random.default_rng(1)
    scen = np.array(["a"] * 300 + ["b"] * 300 + ["c"] * 20)
    pred = rng.uniform(5, 50, size=len(scen))
    truth = np.where(scen == "a", 0.5, np.where(scen == "b", 2.0, 9.0))
    tasks = [
        Task(name="n", label="n", kind="count"),
        Task(name="only_b", label="only_b", kind="count", scenarios=("b",)),
        Task(name="flag", label="flag", kind="binary"),
    ]
    # only_b's label outside "b" is no label of the task (e.g. a filled-in 0): it must not count
    labels = {"n": truth * pred, "only_b": np.where(scen == "b", 3.0, 0.1) * pred, "flag": (pred > 20).astype(float)}
    preds = {"n": pred, "only_b": pred, "flag": np.full(len(scen), 0.5)}
    scales = fit_point_scales(tasks, labels, preds, scen, min_rows=100)
    assert set(scales.overall) == {"n", "only_b"}  # binary tasks have no point forecast
    assert scales.scenarios["n"] == pytest.approx({"a": 0.5, "b": 2.0})  # "c": 20 rows, below min_rows
    assert scales.overall["n"] == pytest.approx(lad_scale(pred, truth * pred))
    assert scales.overall["only_b"] == pytest.approx(3.0)  # fitted on its own scenario's rows only
    rows = np.array(["a", "b", "c", "new"])
    assert scales.factors("n", rows) == pytest.approx([0.5, 2.0, scales.overall["n"], scales.overall["n"]])
    points = scales.apply({"n": np.ones(4, np.float32), "flag": np.ones(4, np.float32)}, rows)
    assert set(points) == {"n"} and points["n"] == pytest.approx([0.5, 2.0, scales.overall["n"], scales.overall["n"]])
    assert PointScales.from_json(scales.to_json(), "x") == scales


def test_the_holdout_check_keeps_factors_only_where_they_carry_over():
    """Factors fitted on the earlier half are kept when they also lower the later half's NMAE; a task
    whose later half has another level (a regime change) keeps the mean (factor 1)."""
    rng = np.random.default_rng(3)
    n = 800
    scen = np.array(["a", "b"] * (n // 2))
    earlier = np.arange(n) < n // 2
    pred = rng.uniform(5, 50, size=n)
    noise = rng.gamma(4.0, 0.25, size=n)  # mean 1, right-skewed: its median is below 1
    tasks = [Task(name="steady", label="steady", kind="count"), Task(name="shift", label="shift", kind="count")]
    labels = {"steady": 0.7 * pred * noise, "shift": np.where(earlier, 0.5, 1.6) * pred * noise}
    preds = {"steady": pred, "shift": pred}
    checked = fit_checked_point_scales(tasks, labels, preds, scen, earlier, min_rows=100)
    plain = fit_point_scales(tasks, labels, preds, scen, min_rows=100)
    assert checked.holdout["steady"]["kept"] and checked.overall["steady"] == plain.overall["steady"]
    assert checked.scenarios["steady"] == plain.scenarios["steady"]
    later = ~earlier
    y, mu = labels["shift"][later], pred[later]
    on_later = fit_point_scales(tasks, {k: v[earlier] for k, v in labels.items()}, {k: v[earlier] for k, v in preds.items()},
                                scen[earlier], min_rows=100).apply({"shift": mu}, scen[later])["shift"]
    assert checked.holdout["shift"] == {"mean": pytest.approx(nmae(y, mu)), "scaled": pytest.approx(nmae(y, on_later)), "kept": False}
    assert checked.overall["shift"] == 1.0 and checked.scenarios["shift"] == {}
    assert PointScales.from_json(checked.to_json(), "x") == checked
    # the halves: the earlier half of the distinct times, whatever their type; row order without times
    assert earlier_half(np.array(["2020-05-02", "2020-05-01", "2020-05-04", "2020-05-03"]), 4).tolist() == [True, True, False, False]
    assert earlier_half(np.array([3, 1, 4, 2, 1]), 5).tolist() == [False, True, False, True, True]
    assert earlier_half(None, 5).tolist() == [True, True, False, False, False]
    assert earlier_half(np.array([7, 7, 7]), 3).tolist() == [True, False, False]


def test_poisson_median_is_the_smallest_count_with_half_the_mass():
    """Against the Poisson CDF summed term by term, and inside Choi's (1994) bounds λ − ln 2 ≤ m < λ + 1/3."""
    rates = np.concatenate([[0.0, 1e-6, 0.69, 0.6932, 1.0, 1.6783, 2.5], np.random.default_rng(5).uniform(0, 60, size=300)])
    m = poisson_median(rates)
    k = np.arange(200)
    for rate, median in zip(rates, m):
        cdf = np.cumsum(stats.poisson.pmf(k, rate))
        assert median == k[np.argmax(cdf >= 0.5)], rate
    assert np.all(rates - np.log(2) <= m + 1e-12) and np.all(m < rates + 1 / 3)


def test_the_median_point_beats_the_scaled_mean_on_rare_counts_and_is_checked_like_it():
    """Counts of 0, 1, 2 (the simulator's minor-scenario cost): the Poisson median of c·μ has a lower
    NMAE than c·μ. Its holdout check compares that median with the mean; a regime-change task keeps
    the mean (no factor, no median)."""
    rng = np.random.default_rng(6)
    n = 2000
    scen = np.array(["a", "b"] * (n // 2))
    earlier = np.arange(n) < n // 2
    mu = rng.uniform(0.2, 3.0, size=n)
    tasks = [Task(name="rare", label="rare", kind="count"), Task(name="shift", label="shift", kind="count")]
    labels = {"rare": rng.poisson(mu).astype(float), "shift": rng.poisson(np.where(earlier, 0.3, 4.0) * mu).astype(float)}
    preds = {"rare": mu, "shift": mu}
    scaled = fit_checked_point_scales(tasks, labels, preds, scen, earlier, min_rows=100)
    median = fit_checked_point_scales(tasks, labels, preds, scen, earlier, min_rows=100, median=True)
    assert scaled.median is None and median.median == ("rare",)
    assert median.overall["rare"] == scaled.overall["rare"] and median.scenarios["rare"] == scaled.scenarios["rare"]
    y, later = labels["rare"], ~earlier
    half = fit_point_scales(tasks, {k: v[earlier] for k, v in labels.items()}, {k: v[earlier] for k, v in preds.items()},
                            scen[earlier], min_rows=100)
    c_later = half.factors("rare", scen[later])
    assert median.holdout["rare"]["scaled"] == pytest.approx(nmae(y[later], poisson_median(c_later * mu[later])))
    assert median.holdout["rare"]["scaled"] < scaled.holdout["rare"]["scaled"]
    points = median.apply({"rare": mu, "shift": mu}, scen)
    np.testing.assert_array_equal(points["rare"], poisson_median(median.factors("rare", scen) * mu).astype(np.float32))
    assert nmae(y, points["rare"]) < nmae(y, scaled.apply({"rare": mu}, scen)["rare"])
    assert not median.holdout["shift"]["kept"] and median.overall["shift"] == 1.0
    np.testing.assert_array_equal(points["shift"], mu.astype(np.float32))  # the mean, not its median
    assert PointScales.from_json(median.to_json(), "x") == median
    assert "median" not in json.loads(scaled.to_json()) and PointScales.from_json(scaled.to_json(), "x") == scaled


def test_a_bad_point_file_is_one_line_naming_it():
    with pytest.raises(RunDirError, match=r"^p.json: not a point-forecast file"):
        PointScales.from_json("{", "p.json")
    with pytest.raises(RunDirError, match=r"format 7"):
        PointScales.from_json(json.dumps({"format": 7, "overall": {}, "scenarios": {}}), "p.json")
    with pytest.raises(RunDirError, match=r"finite and >= 0"):
        PointScales.from_json(json.dumps({"format": 1, "overall": {"n": -1.0}, "scenarios": {}}), "p.json")
    with pytest.raises(RunDirError, match=r"^p.json: .*'median' names \['m'\], which have no factor"):
        PointScales.from_json(json.dumps({"format": 1, "overall": {"n": 1.0}, "scenarios": {}, "median": ["m"]}), "p.json")


def test_absolute_errors_score_the_point_and_the_rest_the_mean():
    rng = np.random.default_rng(2)
    scen = np.array(["a", "b"] * 100)
    mean = rng.uniform(1, 30, size=200)
    y = rng.poisson(mean).astype(float)
    point = 0.8 * mean
    task = Task(name="n", label="n", kind="count")
    with_point = compute_metrics([task], {"n": y}, {"n": mean}, scen, points={"n": point})
    mean_only = compute_metrics([task], {"n": y}, {"n": mean}, scen)
    for block, rows in ((with_point["overall"]["n"], slice(None)), (with_point["scenarios"]["b"]["n"], scen == "b")):
        assert block["nmae"] == pytest.approx(nmae(y[rows], point[rows]))
        assert block["smape"] == pytest.approx(smape(y[rows], point[rows]))
        assert block["mape"] == pytest.approx(mape(y[rows], point[rows]))
        assert block["rmse"] == pytest.approx(float(np.sqrt(np.mean((y[rows] - mean[rows]) ** 2))))
    assert with_point["overall"]["n"]["poisson_deviance"] == mean_only["overall"]["n"]["poisson_deviance"]
    assert with_point["overall"]["n"]["nmae"] != mean_only["overall"]["n"]["nmae"]


def test_scaled_needs_a_count_task(trained_run):
    with pytest.raises(ConfigError, match="train.point_forecast"):
        load_experiment(trained_run.data_dir / "experiment.yaml", ["train.point_forecast=scaled", "dataset.tasks=[{name: c, label: click, kind: binary}]"])


@pytest.fixture(scope="module", params=["scaled", "median"])
def scaled_run(tmp_path_factory, request):
    """An MMoE of a 40-advertiser world with ``train.point_forecast=scaled`` (and ``median``); scenarios
    need 40 validation rows for a factor of their own (the world is small), so some have one, some not."""
    data = write_advertiser(tmp_path_factory.mktemp("point_world"), advertisers=40, days=24, seed=4)
    sets = ["model.name=mmoe", "train.epochs=1", "train.batch_size=128", "model.hidden_dims=[16]", "model.tower_dims=[8]",
            "model.embedding_dim=4", f"train.point_forecast={request.param}"]
    cfg = load_experiment(data / "experiment.yaml", sets)
    cfg.train.progress = False
    out = tmp_path_factory.mktemp("point_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(point_module, "MIN_ROWS", 40)
        run_experiment(cfg, out)
    return out, data


def _point(run, task: str, rate: np.ndarray) -> np.ndarray:
    """factor × mean, or its Poisson median where the run's option is ``median`` and the check kept it."""
    return poisson_median(rate) if task in (run.point.median or ()) else rate


def _scored(run, data, split: str, context: list[str]):
    frame, encoded = encode_for_scoring(run, data / f"{split}.csv", [data / f"{c}.csv" for c in context], note=lambda _: None)
    return frame, score(run, frame, encoded, note=lambda _: None)


def test_the_run_stores_the_validation_lad_factors_and_scores_test_with_them(scaled_run):
    out, data = scaled_run
    run = load_run(out)
    assert POINT_FILE in json.loads((out / "manifest.json").read_text())["files"]
    counts = [t for t in run.schema.spec.tasks if t.kind == "count"]
    # the factors and their holdout check, recomputed from the stored model's validation predictions
    val, mu_val = _scored(run, data, "validation", ["train"])
    sizes = val["scenario"].value_counts()
    assert (sizes >= 40).any() and (sizes < 40).any()
    days = val["day"].to_numpy()
    first = days < np.unique(days)[len(np.unique(days)) // 2]
    scen = val["scenario"].astype(str).to_numpy()

    def factors(p, y, rows, apply_to):
        own = {s: lad_scale(p[rows & (scen == s)], y[rows & (scen == s)]) for s in np.unique(scen[rows]) if (rows & (scen == s)).sum() >= 40}
        return np.array([own.get(s, lad_scale(p[rows], y[rows])) for s in scen[apply_to]]), own

    kept_any = False
    for t in counts:
        y, p = val[t.label].to_numpy(float), mu_val[t.name]
        on_later, _ = factors(p, y, first, ~first)
        check = run.point.holdout[t.name]
        assert check["mean"] == pytest.approx(nmae(y[~first], p[~first]), rel=1e-5)
        later_point = poisson_median(on_later * p[~first]) if run.config.train.point_forecast == "median" else on_later * p[~first]
        assert check["scaled"] == pytest.approx(nmae(y[~first], later_point), rel=1e-5)
        assert check["kept"] == (check["scaled"] < check["mean"])
        _, own = factors(p, y, np.ones(len(y), bool), np.ones(len(y), bool))
        if check["kept"]:
            kept_any = True
            assert run.point.overall[t.name] == pytest.approx(lad_scale(p, y))
            assert run.point.scenarios[t.name] == pytest.approx(own)
            assert (t.name in (run.point.median or ())) == (run.config.train.point_forecast == "median")
        else:
            assert t.name not in (run.point.median or ())
            assert run.point.overall[t.name] == 1.0 and run.point.scenarios[t.name] == {}
    assert kept_any  # the world is stationary: the check keeps factors for some task
    # test metrics: absolute errors of factor × mean, squared error of the mean
    test, mu = _scored(run, data, "test", ["train", "validation"])
    M = json.loads((out / "metrics.json").read_text())["test"]
    scenarios = test["scenario"].astype(str).to_numpy()
    for t in counts:
        y = test[t.label].to_numpy(float)
        pt = _point(run, t.name, np.array([run.point.scenarios[t.name].get(s, run.point.overall[t.name]) for s in scenarios]) * mu[t.name])
        assert M["overall"][t.name]["nmae"] == pytest.approx(nmae(y, pt), rel=1e-5)
        assert M["overall"][t.name]["smape"] == pytest.approx(smape(y, pt), rel=1e-5)
        assert M["overall"][t.name]["rmse"] == pytest.approx(float(np.sqrt(np.mean((y - mu[t.name]) ** 2))), rel=1e-5)
        if run.point.holdout[t.name]["kept"]:
            assert M["overall"][t.name]["nmae"] != pytest.approx(nmae(y, mu[t.name]), rel=1e-4)
    assert "point_forecast" in (out / "report.md").read_text()


def test_predict_evaluate_and_the_service_give_the_runs_point_forecast(scaled_run, tmp_path):
    out, data = scaled_run
    run = load_run(out)
    context = ["--context", data / "train.csv", "--context", data / "validation.csv"]
    assert run_main("predict", out, "--data", data / "test.csv", "--out", tmp_path / "p.parquet", *context) == 0
    pred = pd.read_parquet(tmp_path / "p.parquet")
    for task in run.point.overall:
        factors = run.point.factors(task, pred["scenario"].astype(str).to_numpy())
        np.testing.assert_allclose(pred[f"point_{task}"], _point(run, task, factors * pred[f"pred_{task}"]), rtol=1e-6)
    assert "point_active" not in pred.columns
    assert run_main("evaluate", out, "--data", data / "test.csv", "--out", tmp_path / "m.json", *context) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads((out / "metrics.json").read_text())["test"]

    history = pd.concat([pd.read_csv(data / "train.csv"), pd.read_csv(data / "validation.csv")], ignore_index=True)
    rows = pd.read_csv(data / "test.csv")
    client = TestClient(create_app(run, max_rows=5000))
    body = {"rows": json_records(rows), "context": json_records(history)}
    resp = client.post("/v1/predict", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    for task in run.point.overall:
        np.testing.assert_allclose([p[task] for p in answer["point"]], pred[f"point_{task}"], rtol=1e-5, atol=1e-6)
    assert "point" in client.get("/openapi.json").json()["components"]["schemas"]["PredictResponse"]["properties"]
    documented = {t["name"]: t.get("point_factors") for t in client.get("/v1/schema").json()["tasks"]}
    assert documented["active"] is None
    for task in run.point.overall:
        assert documented[task] == {
            "overall": run.point.overall[task], "scenarios": run.point.scenarios[task], "poisson_median": task in (run.point.median or ()),
        }


def test_the_onnx_backend_gives_the_point_of_its_own_predictions(scaled_run, tmp_path):
    """An exported graph gives the mean only; the service applies the run's point after the runner,
    so with ``--backend onnx`` the point is the run's factors (and median) of the graph's predictions."""
    out, data = scaled_run
    onnx_file = tmp_path / "m.onnx"
    export_run(out, "onnx", onnx_file, rows=30)
    rows = pd.read_csv(data / "test.csv")
    history = pd.concat([pd.read_csv(data / "train.csv"), pd.read_csv(data / "validation.csv")], ignore_index=True)
    body = {"rows": json_records(rows), "context": json_records(history)}
    eager = TestClient(create_app(load_run(out), max_rows=5000)).post("/v1/predict", json=body).json()
    run = load_run(out)
    resp = TestClient(create_app(run, backend="onnx", onnx_path=onnx_file, max_rows=5000)).post("/v1/predict", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    scenarios = rows["scenario"].astype(str).to_numpy()
    for task in run.point.overall:
        mean = np.array([p[task] for p in answer["predictions"]])
        np.testing.assert_allclose(mean, [p[task] for p in eager["predictions"]], rtol=1e-4, atol=1e-5)
        want = run.point.apply({task: mean.astype(np.float32)}, scenarios)[task]
        np.testing.assert_allclose([p[task] for p in answer["point"]], want, rtol=1e-6)


def test_a_mean_run_has_no_point_forecast(trained_panel_run, tmp_path):
    out = trained_panel_run("mmoe")
    run = load_run(out)
    assert run.point is None and not (out / POINT_FILE).exists()
    data = trained_panel_run.data_dir
    assert run_main("predict", out, "--data", data / "test.csv", "--out", tmp_path / "p.csv", "--context", data / "train.csv") == 0
    assert not [c for c in pd.read_csv(tmp_path / "p.csv").columns if c.startswith("point_")]
