"""Logistic regression: one weight per category, standardised dense features, a per-scenario bias.

Trained to convergence it is the maximum-likelihood GLM: with one one-hot feature, each
category's logit is its empirical log-odds; with several features, scenario and a dense feature
it matches scikit-learn's (almost) unpenalised LogisticRegression / PoissonRegressor on the
same one-hot design; and its output is additive in the features (no interaction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression, PoissonRegressor

from helpers import model_config
from msmt.data.fit import fit_schema
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.spec.batch import take
from msmt.spec.dataset import DatasetSpec
from msmt.spec.task_kinds import rules
from msmt.training.losses import task_losses


def spec(sparse, dense=(), tasks=(("click", "binary"),)) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "files": {"train": "in-memory"},
            "scenario": {"column": "scenario"},
            "features": {"sparse": list(sparse), "dense": list(dense)},
            "tasks": [{"name": n, "label": n, "kind": k} for n, k in tasks],
        }
    )


def table(rows: int, seed: int = 0, scenarios=("a",)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue", "grey", "pink"], rows, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    size = rng.choice(["s", "m", "l"], rows)
    scenario = rng.choice(list(scenarios), rows)
    x = rng.normal(2.0, 3.0, rows)
    eta = -1.0 + pd.Series(colour).map({"red": 0.0, "green": 0.8, "blue": -0.7, "grey": 1.5, "pink": -1.2}).to_numpy()
    eta += pd.Series(size).map({"s": -0.4, "m": 0.0, "l": 0.6}).to_numpy() + 0.2 * (x - 2.0) / 3.0
    eta += pd.Series(scenario).map({"a": 0.0, "b": 0.9}).to_numpy()
    return pd.DataFrame(
        {
            "scenario": scenario, "colour": colour, "size": size, "x": x,
            "click": (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(float),
            "plays": rng.poisson(np.exp(eta + 1.0)).astype(float),
        }
    )


def train(model, batch, steps: int = 1500, lr: float = 0.05):
    """Full-batch Adam without weight decay: the maximum-likelihood fit."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        sum(task_losses(model.schema.spec.tasks, model(batch), batch["labels"], batch["weight"]).values()).backward()
        opt.step()
    return model.eval()


def fitted(frame, sparse, dense=(), tasks=(("click", "binary"),)):
    schema = fit_schema(frame, spec(sparse, dense, tasks))
    batch = encode_frame(frame, schema)
    torch.manual_seed(0)
    return schema, batch, train(build_model(schema, model_config("logistic_regression")), batch)


def test_one_one_hot_feature_gives_each_categorys_log_odds():
    frame = table(3000)
    _, batch, model = fitted(frame, ["colour"])
    with torch.no_grad():
        logit = model(batch)["click"].numpy()
    rate = frame.groupby("colour")["click"].transform("mean").to_numpy()
    np.testing.assert_allclose(logit, np.log(rate / (1 - rate)), atol=2e-3)
    sk = LogisticRegression(C=1e6, max_iter=5000).fit(pd.get_dummies(frame[["colour"]]), frame["click"])
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), sk.predict_proba(pd.get_dummies(frame[["colour"]]))[:, 1], atol=5e-4)


@pytest.mark.parametrize(("task", "kind"), [("click", "binary"), ("plays", "count")])
def test_matches_scikit_learn_on_the_one_hot_design(task, kind):
    frame = table(3000, seed=1, scenarios=("a", "b"))
    _, batch, model = fitted(frame, ["colour", "size"], ["x"], ((task, kind),))
    with torch.no_grad():
        mean = torch.sigmoid(model(batch)[task]) if kind == "binary" else torch.exp(model(batch)[task])
    design = pd.concat([pd.get_dummies(frame[["colour", "size", "scenario"]]).astype(float), pd.Series(batch["dense"][:, 0].numpy(), name="x")], axis=1)
    if kind == "binary":
        want = LogisticRegression(C=1e6, max_iter=5000).fit(design, frame[task]).predict_proba(design)[:, 1]
    else:
        want = PoissonRegressor(alpha=1e-8, max_iter=5000).fit(design, frame[task]).predict(design)
    np.testing.assert_allclose(mean.numpy(), want, rtol=5e-3, atol=5e-4)


def test_outputs_are_additive_in_the_features():
    frame = table(400, seed=2, scenarios=("a", "b"))
    schema = fit_schema(frame, spec(["colour", "size"], ["x"], (("click", "binary"), ("plays", "count"))))
    batch = encode_frame(frame, schema, with_labels=False)
    torch.manual_seed(0)
    model = build_model(schema, model_config("logistic_regression")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # any weights: additivity is structural
    # rows (a, b), (a, b'), (a', b), (a', b') over colour x size, the rest of row 0 held fixed
    base = take(batch, torch.zeros(4, dtype=torch.long))
    a, a2, b, b2 = 2, 3, 2, 4
    base["sparse"][:, 0] = torch.tensor([a, a, a2, a2])
    base["sparse"][:, 1] = torch.tensor([b, b2, b, b2])
    with torch.no_grad():
        for out in model(base).values():
            torch.testing.assert_close(out[0] - out[1], out[2] - out[3], rtol=0, atol=1e-5)
        # the dense feature: a linear term (equal steps give equal differences)
        dense = take(batch, torch.zeros(3, dtype=torch.long))
        dense["dense"][:, 0] = torch.tensor([-1.0, 0.5, 2.0])
        for out in model(dense).values():
            torch.testing.assert_close(out[1] - out[0], out[2] - out[1], rtol=0, atol=1e-5)


def test_linear_predictor_is_the_formula_from_raw_weights():
    """η_t = b_t + c_{t,s} + Σ_f w_{t,f}[x_f] + u_tᵀ d, with every index and the standardised
    dense value computed here from the raw table (sorted vocabulary + 2, NumPy mean and std)."""
    frame = table(300, seed=4, scenarios=("a", "b"))
    tasks = (("click", "binary"), ("plays", "count"))
    schema = fit_schema(frame, spec(["colour", "size"], ["x"], tasks))
    batch = encode_frame(frame, schema, with_labels=False)
    torch.manual_seed(0)
    model = build_model(schema, model_config("logistic_regression")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    enc = model.encoder
    table_w = enc.table.weight.detach().numpy()  # [rows, T]
    offsets = enc.offsets.numpy()
    eta = model.bias.detach().numpy()[None, :] + model.scenario_bias.weight.detach().numpy()[
        frame["scenario"].map({"a": 1, "b": 2}).to_numpy()]
    for f, column in enumerate(["colour", "size"]):
        vocab = sorted(frame[column].unique())
        ids = frame[column].map({v: i + 2 for i, v in enumerate(vocab)}).to_numpy()
        eta = eta + table_w[offsets[f] + ids]
    if enc.with_scenario:  # the scenario as one more categorical field
        eta = eta + table_w[offsets[-1] + frame["scenario"].map({"a": 1, "b": 2}).to_numpy()]
    x = frame["x"].to_numpy()
    z = (x - x.mean()) / x.std()
    eta = eta + z[:, None] * model.dense.weight.detach().numpy()[:, 0][None, :]
    with torch.no_grad():
        out = model(batch)
    for i, (t, _) in enumerate(tasks):
        np.testing.assert_allclose(out[t].numpy(), eta[:, i], rtol=1e-5, atol=1e-5, err_msg=t)


def test_task_bias_starts_at_the_link_of_the_training_mean():
    frame = table(300, seed=5)
    schema = fit_schema(frame, spec(["colour"], (), (("click", "binary"), ("plays", "count"))))
    model = build_model(schema, model_config("logistic_regression"))
    click, plays = frame["click"].mean(), frame["plays"].mean()
    np.testing.assert_allclose(model.bias.detach().numpy(), [np.log(click / (1 - click)), np.log(plays)], rtol=1e-5)


def test_untrained_model_on_panel_data_is_the_naive_forecast(advertiser_panel):
    """On panel data a count task with a history is a GLM offset, log λ = log(b + ε) + η: its task
    bias starts at 0, so the untrained model (every weight 0) predicts exactly the naive forecast
    for those tasks, and the link of the training mean for the others (not both at once)."""
    schema, rows = advertiser_panel
    model = build_model(schema, model_config("logistic_regression")).eval()
    assert model.forecast is not None and model.forecast.tasks
    batch = take(rows, slice(0, 200))
    with torch.no_grad():
        out, offsets = model(batch), model.forecast.offsets(batch)
    for task in schema.spec.tasks:
        if task.name in offsets:
            torch.testing.assert_close(out[task.name], offsets[task.name], rtol=1e-6, atol=1e-6)
        else:
            start = rules(task.kind).inverse_link(torch.tensor(schema.label_stat(task.name, "mean")))
            torch.testing.assert_close(out[task.name], start.expand(len(out[task.name])), rtol=1e-6, atol=1e-6)
