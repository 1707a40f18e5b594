"""Metrics against scikit-learn / hand computation; losses against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, mean_poisson_deviance, roc_auc_score

from msmt.evaluation.metrics import compute_metrics
from msmt.spec.dataset import Task, TaskKind
from msmt.spec.measures import mape, nmae, smape
from msmt.spec.task_kinds import rules
from msmt.training.losses import task_losses

RNG = np.random.default_rng(0)


def test_smape_nmae_mape_by_hand():
    y = np.array([0.0, 0.0, 2.0, 4.0])
    p = np.array([0.0, 1.0, 1.0, 4.0])
    # 0/0 -> 0; |0-1|/0.5 = 2; |2-1|/1.5; 0
    assert smape(y, p) == pytest.approx((0 + 2 + 1 / 1.5 + 0) / 4)
    assert nmae(y, p) == pytest.approx((0 + 1 + 1 + 0) / 6)
    assert mape(y, p) == pytest.approx((0.5 + 0) / 2)
    assert nmae(np.zeros(3), np.ones(3)) is None


def test_grouped_metrics_match_sklearn_per_scenario():
    n = 600
    scen = RNG.choice(["a", "b", "c"], n)
    y_bin = RNG.integers(0, 2, n).astype(float)
    p_bin = np.clip(0.3 * y_bin + RNG.random(n) * 0.7, 0.01, 0.99)
    y_cnt = RNG.poisson(3.0, n).astype(float)
    p_cnt = RNG.gamma(3.0, 1.0, n)
    tasks = (Task(name="click", label="c", kind=TaskKind.BINARY), Task(name="n", label="n", kind=TaskKind.COUNT))
    M = compute_metrics(tasks, {"click": y_bin, "n": y_cnt}, {"click": p_bin, "n": p_cnt}, scen)
    assert M["rows"] == n
    assert M["overall"]["click"]["auc"] == pytest.approx(roc_auc_score(y_bin, p_bin))
    for s in "abc":
        rows = scen == s
        block = M["scenarios"][s]
        assert block["click"]["rows"] == rows.sum()
        assert block["click"]["auc"] == pytest.approx(roc_auc_score(y_bin[rows], p_bin[rows]))
        assert block["click"]["logloss"] == pytest.approx(log_loss(y_bin[rows], p_bin[rows]))
        assert block["n"]["poisson_deviance"] == pytest.approx(mean_poisson_deviance(y_cnt[rows], p_cnt[rows]))
        assert block["n"]["rmse"] == pytest.approx(np.sqrt(np.mean((y_cnt[rows] - p_cnt[rows]) ** 2)))


def test_auc_undefined_with_one_class_and_oracle_block():
    tasks = (Task(name="click", label="c", kind=TaskKind.BINARY),)
    y = np.ones(5)
    M = compute_metrics(tasks, {"click": y}, {"click": np.full(5, 0.5)}, np.array(["a"] * 5), truth={"click": np.full(5, 0.9)})
    assert M["overall"]["click"]["auc"] is None
    assert M["oracle"]["overall"]["click"]["logloss"] == pytest.approx(-np.log(0.9))


def test_row_losses_closed_forms():
    o = torch.tensor([0.3, -1.2, 2.0])
    y = torch.tensor([1.0, 0.0, 3.0])
    bce = rules(TaskKind.BINARY).row_loss(o, torch.tensor([1.0, 0.0, 1.0]))
    expected = -torch.log(torch.sigmoid(o)) * torch.tensor([1.0, 0.0, 1.0]) - torch.log(1 - torch.sigmoid(o)) * torch.tensor([0.0, 1.0, 0.0])
    torch.testing.assert_close(bce, expected)
    pois = rules(TaskKind.COUNT).row_loss(o, y)
    torch.testing.assert_close(pois, -torch.distributions.Poisson(torch.exp(o)).log_prob(y))
    torch.testing.assert_close(rules(TaskKind.REGRESSION).row_loss(o, y), (o - y) ** 2)


def test_sample_weights_and_task_weights():
    tasks = (Task(name="a", label="a", kind=TaskKind.REGRESSION, weight=2.0),)
    out = {"a": torch.tensor([1.0, 2.0])}
    labels = torch.tensor([[0.0], [0.0]])
    losses = task_losses(tasks, out, labels, torch.tensor([1.0, 0.0]))
    assert float(losses["a"]) == pytest.approx((1 * 1 + 0 * 4) / 2)
