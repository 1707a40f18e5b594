"""Smoothed popularity: (Σ y + m · scenario rate) / (n + m) per (scenario, ID, task), against a
pandas groupby on a tiny table; unseen IDs get the scenario's rate; ``msmt train`` fits it in one
counting pass without a gradient step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import model_config
from msmt.data.fit import fit_schema
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.models.popularity import Popularity
from msmt.rundir.layout import load_run
from msmt.scoring.predict import predict_batches
from msmt.spec.batch import iterate_batches
from msmt.spec.dataset import DatasetSpec, TaskKind
from msmt.spec.errors import ConfigError
from msmt.spec.task_kinds import rules


def spec(**features) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "files": {"train": "in-memory"},
            "scenario": {"column": "scenario"},
            "features": features or {"sparse": [{"name": "item_id", "column": "item_id", "min_count": 2}, "colour"]},
            "tasks": [{"name": "click", "label": "click", "kind": "binary"}, {"name": "plays", "label": "plays", "kind": "count"}],
        }
    )


def table(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    items = np.array([f"i{k}" for k in range(12)] + ["rare"])  # "rare" appears once: under min_count, so OOV
    item = rng.choice(items[:-1], rows, p=np.linspace(1, 3, 12) / np.linspace(1, 3, 12).sum())
    item[0] = "rare"
    scenario = rng.choice(["a", "b"], rows)
    base = {"a": 0.2, "b": 0.5}
    p = np.array([base[s] for s in scenario]) + np.array([int(i[1:]) if i != "rare" else 0 for i in item]) * 0.03
    return pd.DataFrame(
        {
            "scenario": scenario,
            "item_id": item,
            "colour": rng.choice(["red", "blue"], rows),
            "click": (rng.random(rows) < p).astype(float),
            "plays": rng.poisson(1 + 3 * p).astype(float),
        }
    )


def fitted(frame: pd.DataFrame, prior_strength: float = 20.0, column: str | None = None):
    schema = fit_schema(frame, spec())
    model = build_model(schema, model_config("popularity", popularity={"prior_strength": prior_strength, "column": column}))
    model.fit_statistics(iterate_batches(encode_frame(frame, schema), 64))  # several batches: counts accumulate
    return schema, model.eval()


def scores(model, schema, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return predict_batches(model, encode_frame(frame, schema, with_labels=False), 64)


def expected(train: pd.DataFrame, rows: pd.DataFrame, task: str, m: float) -> np.ndarray:
    """The smoothed rate of each row of ``rows`` by pandas: seen (scenario, item) cells shrunk to
    the scenario's rate; items under min_count or never seen: the scenario's rate."""
    scenario_rate = train.groupby("scenario")[task].mean()
    kept = train[train["item_id"] != "rare"]
    cell = kept.groupby(["scenario", "item_id"])[task].agg(["sum", "count"])
    out = []
    for s, i in zip(rows["scenario"], rows["item_id"]):
        r = scenario_rate[s]
        if (s, i) in cell.index:
            total, n = cell.loc[(s, i)]
            out.append((total + m * r) / (n + m))
        else:
            out.append(r)
    return np.array(out)


@pytest.mark.parametrize("m", [20.0, 3.0])
def test_rates_equal_a_pandas_groupby(m):
    frame = table()
    schema, model = fitted(frame, m)
    got = scores(model, schema, frame)
    for task in ("click", "plays"):
        np.testing.assert_allclose(got[task], expected(frame, frame, task, m), rtol=1e-5, atol=1e-6, err_msg=task)


def test_shrinkage_moves_between_the_item_rate_and_the_scenario_rate():
    frame = table()
    schema = fit_schema(frame, spec())
    rows = frame.iloc[1:40]
    raw = rows.merge(frame.groupby(["scenario", "item_id"])["click"].mean().rename("raw"), on=["scenario", "item_id"])["raw"]
    _, none = fitted(frame, 0.0)
    np.testing.assert_allclose(scores(none, schema, rows)["click"], raw.to_numpy(), rtol=1e-5)  # m = 0: the item's own rate
    _, strong = fitted(frame, 1e7)
    scenario_rate = rows["scenario"].map(frame.groupby("scenario")["click"].mean()).to_numpy()
    np.testing.assert_allclose(scores(strong, schema, rows)["click"], scenario_rate, rtol=1e-4)  # m → ∞: the scenario's rate


def test_unseen_ids_get_the_scenario_rate_and_unseen_scenarios_the_pooled_rates():
    frame = table()
    schema, model = fitted(frame)
    new = pd.DataFrame({"scenario": ["a", "b", "a", "zzz"], "item_id": ["never", "never", "rare", "i5"], "colour": "red"})
    got = scores(model, schema, new)
    rate = frame.groupby("scenario")[["click", "plays"]].mean()
    for task in ("click", "plays"):
        np.testing.assert_allclose(got[task][:3], [rate.loc["a", task], rate.loc["b", task], rate.loc["a", task]], rtol=1e-5)
        seen = frame[frame["item_id"] == "i5"][task]  # an unseen scenario: item i5 over every scenario, shrunk to the overall rate
        np.testing.assert_allclose(got[task][3], (seen.sum() + 20 * frame[task].mean()) / (len(seen) + 20), rtol=1e-5)


def test_before_counting_every_id_scores_its_scenario_mean():
    frame = table()
    schema = fit_schema(frame, spec())
    model = build_model(schema, model_config("popularity")).eval()
    got = scores(model, schema, frame.iloc[:20])
    want = frame.iloc[:20]["scenario"].map(frame.groupby("scenario")["click"].mean()).to_numpy()
    np.testing.assert_allclose(got["click"], want, rtol=1e-5)


def test_the_id_column_default_and_its_errors():
    schema = fit_schema(table(), spec())
    assert build_model(schema, model_config("popularity")).column == "item_id"
    with pytest.raises(ConfigError, match=r"model.popularity.column: 'nope' is not a sparse feature"):
        build_model(schema, model_config("popularity", popularity={"column": "nope"}))
    assert build_model(schema, model_config("popularity", popularity={"column": "colour"})).column == "colour"
    two = spec(sparse=["item_id", "ad_id"])
    with pytest.raises(ConfigError, match=r"model.popularity.column: more than one ID feature \['item_id', 'ad_id'\]"):
        Popularity.not_applicable(two) or build_model(fit_schema(table().assign(ad_id="x"), two), model_config("popularity"))
    none = spec(sparse=["colour"])
    assert "ID column" in Popularity.not_applicable(none)
    assert Popularity.not_applicable(none.model_copy(update={"group": "colour"})) is None  # the declared group counts


def test_msmt_train_counts_the_training_split_once(trained_run):
    run_dir = trained_run("popularity")  # synth simple: scenario, item_id, click/purchase/dwell, min_count 1
    run = load_run(run_dir)
    train = load_splits(run.schema.spec)["train"]
    assert run.model.column == "item_id" and list(run.model.parameters()) == []
    assert len(pd.read_csv(run_dir / "history.csv")) == 1  # no gradient epochs: one counting pass, one validation
    got = predict_batches(run.model, encode_frame(train, run.schema, with_labels=False), 256)
    for task in run.schema.spec.task_names:
        np.testing.assert_allclose(got[task], expected(train.astype({task: float}), train, task, 20.0), rtol=1e-5, atol=1e-6, err_msg=task)
    assert torch.all(run.model.id_rows[:, :2] == 0)  # padding and OOV have no counts of their own


def test_no_forecast_offset_on_panel_data(advertiser_panel):
    """On panel data every model's count heads are offset by the naive forecast (model.forecast:
    auto); popularity's rate is the prediction itself, so it takes none."""
    schema, rows = advertiser_panel
    model = build_model(schema, model_config("popularity", popularity={"column": "region"}))
    model.fit_statistics([rows])
    model.eval()
    with torch.no_grad():
        out, rates = model(rows), model.rates(rows)
    for i, task in enumerate(schema.spec.tasks):
        torch.testing.assert_close(rules(task.kind).link(out[task.name]), rates[:, i].clamp(1e-7, 1 - 1e-7) if task.kind == TaskKind.BINARY else rates[:, i].clamp_min(1e-7))


def test_counts_only_rows_where_the_task_exists():
    """A task declared for scenario b only: its rates count b's rows alone (Σ y and n over
    ``task_mask``), whatever label the other rows carry; an unseen scenario pools those rows only."""
    frame = table()
    declared = spec().model_copy(update={"tasks": (spec().tasks[0], spec().tasks[1].model_copy(update={"scenarios": ("b",)}))})
    schema = fit_schema(frame, declared)
    model = build_model(schema, model_config("popularity", popularity={"prior_strength": 5.0}))
    batch = encode_frame(frame, schema)
    plays = schema.spec.task_names.index("plays")
    assert not batch["task_mask"][:, plays].all()
    batch["labels"][~batch["task_mask"][:, plays], plays] = 99.0  # never read
    model.fit_statistics(iterate_batches(batch, 64))
    model.eval()
    b = frame[(frame["scenario"] == "b") & (frame["item_id"] != "rare")]
    rate = frame.loc[frame["scenario"] == "b", "plays"].mean()
    cell = b.groupby("item_id")["plays"].agg(["sum", "count"])
    rows = pd.DataFrame({"scenario": ["b", "b", "zzz", "zzz"], "item_id": ["i4", "never", "i7", "never"], "colour": "red"})
    got = scores(model, schema, rows)["plays"]
    want = [(cell.loc["i4", "sum"] + 5 * rate) / (cell.loc["i4", "count"] + 5), rate,
            (cell.loc["i7", "sum"] + 5 * rate) / (cell.loc["i7", "count"] + 5), rate]
    np.testing.assert_allclose(got, want, rtol=1e-5)
