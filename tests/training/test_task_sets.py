"""Per-scenario task sets (``tasks.<name>.scenarios``) and per-task weight columns.

A task absent in a scenario has no label there (an empty cell is accepted), no loss, no gradient
and no metric; its loss is the mean over the rows where it exists, also when the batch is sharded
across processes. SBMM builds each scenario's tower with exactly that scenario's tasks.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import model_config
from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.evaluation.metrics import compute_metrics
from msmt.models import build_model
from msmt.spec.batch import take
from msmt.spec.config import load_dataset_spec, load_experiment
from msmt.spec.dataset import DatasetSpec, Task, TaskKind
from msmt.spec.errors import ConfigError, DataError
from msmt.synth.simple import write_simple
from msmt.training.distributed import Dist
from msmt.training.loop import validation_loss
from msmt.training.losses import batch_losses, model_losses, task_losses

ONLY = ["feed", "search"]  # the scenarios that have ``purchase``


@pytest.fixture(scope="module")
def task_set_dir(tmp_path_factory):
    """The simple world with ``purchase`` only in feed and search (its label blanked elsewhere)
    and a per-task weight column for ``dwell``."""
    out = write_simple(tmp_path_factory.mktemp("task_sets"), rows=1200, seed=4)
    rng = np.random.default_rng(0)
    for name in ("train", "validation", "test"):
        frame = pd.read_csv(out / f"{name}.csv")
        frame.loc[~frame["scenario"].isin(ONLY), "purchase"] = np.nan
        frame["dwell_weight"] = rng.uniform(0.5, 2.0, len(frame)).round(3)
        frame.to_csv(out / f"{name}.csv", index=False)
    cfg = yaml.safe_load((out / "dataset.yaml").read_text())
    tasks = {t["name"]: t for t in cfg["tasks"]}
    tasks["purchase"]["scenarios"] = ONLY
    tasks["dwell"]["weight_column"] = "dwell_weight"
    (out / "dataset.yaml").write_text(yaml.safe_dump(cfg))
    return out


@pytest.fixture(scope="module")
def fitted(task_set_dir):
    spec = load_dataset_spec(task_set_dir / "dataset.yaml")
    train = read_data(task_set_dir / "train.csv", spec)
    schema = fit_schema(train, spec)
    return spec, train, schema, encode_frame(train, schema)


def test_spec_reads_and_checks_task_scenarios():
    t = Task(name="x", label="x", kind="binary", scenarios=[1, "b"])
    assert t.scenarios == ("1", "b") and t.exists_in("1") and t.exists_in(1) and not t.exists_in("c")
    assert Task(name="x", label="x", kind="binary").exists_in("anything")
    with pytest.raises(ValueError, match="at least one scenario"):
        Task(name="x", label="x", kind="binary", scenarios=[])
    with pytest.raises(ValueError, match="duplicate"):
        Task(name="x", label="x", kind="binary", scenarios=["a", "a"])
    base = {"files": {"train": "t.csv"}, "scenario": {"column": "s"}, "features": {"sparse": ["u"]}}
    with pytest.raises(ValueError, match="weight_column"):
        DatasetSpec.model_validate({**base, "tasks": [{"name": "y", "label": "y", "kind": "binary", "weight_column": "u"}]})


def test_a_misspelt_scenario_is_an_error_naming_the_task(fitted):
    spec, train, _, _ = fitted
    bad = spec.model_copy(update={"tasks": tuple(t.model_copy(update={"scenarios": ("feed", "serch")}) if t.name == "purchase" else t for t in spec.tasks)})
    with pytest.raises(ConfigError, match=r"tasks.purchase.scenarios: \['serch'\]"):
        fit_schema(train, bad)


def test_batch_holds_the_task_mask_and_weights(fitted):
    spec, train, schema, batch = fitted
    scen = train["scenario"].astype(str).to_numpy()
    has = np.isin(scen, ONLY)
    assert 0 < has.sum() < len(has)
    mask = batch["task_mask"].numpy()
    assert mask.dtype == bool and mask.shape == (len(train), 3)
    np.testing.assert_array_equal(mask[:, 1], has)
    assert mask[:, 0].all() and mask[:, 2].all()
    np.testing.assert_allclose(batch["task_weight"][:, 2].numpy(), train["dwell_weight"].to_numpy(), rtol=1e-6)
    assert (batch["task_weight"][:, :2] == 1).all()
    assert (batch["labels"][~torch.from_numpy(has), 1] == 0).all()  # blank labels outside its scenarios read as 0
    # the label statistics are those of the task's own rows
    assert schema.task_stats["purchase"]["mean"] == pytest.approx(train.loc[has, "purchase"].mean())


def test_a_missing_label_is_an_error_only_where_the_task_exists(fitted):
    spec, train, schema, _ = fitted
    row = int(np.flatnonzero(train["scenario"].isin(ONLY))[3])
    broken = train.copy()
    broken.loc[row, "purchase"] = np.nan
    with pytest.raises(DataError, match=f"purchase.*missing value in data row {row + 1}"):
        encode_frame(broken, schema)
    broken = train.copy()
    broken.loc[row, "dwell_weight"] = -1.0
    with pytest.raises(DataError, match="dwell_weight.*>= 0"):
        encode_frame(broken, schema)


def test_masked_mean_by_hand():
    tasks = (Task(name="a", label="a", kind=TaskKind.REGRESSION), Task(name="b", label="b", kind=TaskKind.REGRESSION))
    out = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    labels = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    weight = torch.tensor([1.0, 1.0, 2.0, 1.0])
    mask = torch.tensor([[True, True], [True, False], [True, False], [True, True]])
    task_weight = torch.tensor([[1.0, 3.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.5]])
    losses = task_losses(tasks, out, labels, weight, mask=mask, task_weight=task_weight)
    assert float(losses["a"]) == pytest.approx((1 + 4 + 2 * 9 + 16) / 4)
    assert float(losses["b"]) == pytest.approx((1 * 3 * 1 + 1 * 0.5 * 16) / 2)  # rows 0 and 3 only
    assert float(task_losses(tasks, out, labels, weight, mask=torch.zeros(4, 2, dtype=torch.bool))["b"]) == 0.0


def test_an_absent_task_gives_no_loss_and_no_gradient_there(fitted):
    _, train, schema, batch = fitted
    batch = take(batch, slice(0, 300))
    torch.manual_seed(0)
    model = build_model(schema, model_config("mmoe"))
    absent = ~batch["task_mask"][:, 1]
    assert absent.any() and (~absent).any()
    out = model(batch)
    logits = {t: v.detach().requires_grad_(True) for t, v in out.items()}
    loss = batch_losses(schema.spec.tasks, logits, batch)["purchase"]
    loss.backward()
    assert (logits["purchase"].grad[absent] == 0).all()  # rows of scenarios without purchase
    assert (logits["purchase"].grad[~absent] != 0).all()
    # whatever their labels say, rows outside the task's scenarios do not move its loss
    relabelled = dict(batch, labels=batch["labels"].clone())
    relabelled["labels"][absent, 1] = 1 - relabelled["labels"][absent, 1]
    again = batch_losses(schema.spec.tasks, {t: v.detach() for t, v in out.items()}, relabelled)["purchase"]
    assert float(again) == pytest.approx(float(loss.detach()), rel=1e-7)
    # and the loss is the mean over the task's own rows
    own = ~absent
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["purchase"][own], batch["labels"][own, 1])
    assert float(loss) == pytest.approx(float(bce), rel=1e-6)
    # training the model on these rows never reads the blanked labels: gradients equal with them flipped
    grads = []
    for b in (batch, relabelled):
        model.zero_grad()
        sum(model_losses(model, b, normalise=False).values()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_sharded_masked_losses_average_to_the_global_loss(fitted):
    _, _, schema, batch = fitted
    batch = take(batch, slice(0, 97))
    tasks = schema.spec.tasks
    torch.manual_seed(1)
    outputs = {t.name: torch.randn(97) for t in tasks}
    full = batch_losses(tasks, outputs, batch)
    world = 3
    parts = []
    for rank in range(world):
        local = Dist(rank, world).shard({**batch, **{f"out.{k}": v for k, v in outputs.items()}})
        parts.append(batch_losses(tasks, {t.name: local[f"out.{t.name}"] for t in tasks}, local))
    for t in tasks:  # what DDP's gradient averaging yields
        assert float(sum(p[t.name] for p in parts) / world) == pytest.approx(float(full[t.name]), rel=1e-5), t.name


def test_validation_loss_is_the_mean_over_each_tasks_rows(fitted):
    _, _, schema, batch = fitted
    torch.manual_seed(0)
    model = build_model(schema, model_config("shared_bottom")).eval()
    got = validation_loss(model, batch, batch_size=64, normalise=False)
    with torch.no_grad():
        whole = model_losses(model, batch, normalise=False)
    for t in schema.spec.task_names:
        assert got[t] == pytest.approx(float(whole[t]), rel=1e-5)


def test_no_metric_where_the_task_is_absent():
    tasks = (Task(name="a", label="a", kind="binary"), Task(name="b", label="b", kind="binary", scenarios=["x"]))
    scen = np.array(["x", "x", "x", "y", "y", "y"], dtype=object)
    y = np.array([0, 1, 0, 1, 0, 1.0])
    labels = {"a": y, "b": y}
    preds = {"a": np.linspace(0.1, 0.9, 6), "b": np.array([0.2, 0.8, 0.3, 0.0, 1.0, 0.0])}  # b's y-rows are wrong on purpose
    M = compute_metrics(tasks, labels, preds, scen)
    assert set(M["scenarios"]["x"]) == {"a", "b"} and set(M["scenarios"]["y"]) == {"a"}
    assert M["overall"]["b"]["rows"] == 3 and M["overall"]["a"]["rows"] == 6
    assert M["overall"]["b"]["auc"] == 1.0  # the rows of y, where b does not exist, are not scored


def test_sbmm_towers_hold_exactly_their_scenarios_tasks(fitted):
    _, _, schema, batch = fitted
    torch.manual_seed(0)
    model = build_model(schema, model_config("sbmm", tower_dims=[8]))
    towers = model.towers
    per_scenario = {s: [t.name for t in schema.spec.tasks if t.exists_in(s)] for s in schema.scenarios}
    assert towers.out_weight.shape == (sum(len(v) for v in per_scenario.values()), 8)
    for p, s in enumerate(schema.scenarios):
        got = [schema.spec.task_names[int(i)] for i in towers.pair_task[towers.pair_scenario == p]]
        assert got == per_scenario[s], s
    # a row of a scenario without purchase: its tower has no purchase unit, so its purchase score
    # is the mean of the towers that have one, and training it moves no purchase parameter
    b = take(batch, slice(0, 200))
    model.zero_grad()
    sum(model_losses(model, b, normalise=False).values()).backward()
    rows = ~b["task_mask"][:, 1]
    assert rows.any()
    no_purchase = [p for p, s in enumerate(schema.scenarios) if s not in ONLY]
    h = model.bottom(model.encoder(b))
    per_tower = towers(h)  # [P, B, T]
    for p in no_purchase:
        assert (per_tower[p, :, 1] == 0).all()
    with_purchase = [p for p, s in enumerate(schema.scenarios) if s in ONLY]
    expected = per_tower[with_purchase, :, 1].mean(0)
    torch.testing.assert_close(model(b)["purchase"][rows], expected[rows])


def test_train_and_evaluate_with_task_sets(task_set_dir, tmp_path):
    from msmt.experiments.run import run_experiment

    cfg = load_experiment(task_set_dir / "experiment.yaml", ["model.name=sbmm", "train.epochs=1", "train.batch_size=128",
                                                           "model.hidden_dims=[16]", "model.tower_dims=[8]"])
    cfg.train.progress = False
    run_experiment(cfg, tmp_path / "run")
    M = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    for scenario, block in M["scenarios"].items():
        assert ("purchase" in block) == (scenario in ONLY), scenario
        assert {"click", "dwell"} <= set(block)
    test = pd.read_csv(task_set_dir / "test.csv")
    assert M["overall"]["purchase"]["rows"] == int(test["scenario"].isin(ONLY).sum())
    assert "–" in (tmp_path / "run" / "report.md").read_text()  # the report marks the absent cells
