"""The task-kind table: each kind's loss against scipy's log-pmf / closed forms, links, label rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from msmt.spec.dataset import Task, TaskKind
from msmt.spec.task_kinds import KINDS, rules, to_user_units


def test_poisson_loss_is_the_exact_negative_log_pmf():
    y = torch.tensor([0.0, 1.0, 3.0, 17.0, 250.0], dtype=torch.float64)
    log_rate = torch.tensor([-1.0, 0.2, 1.1, 2.9, 5.4], dtype=torch.float64)
    loss = rules(TaskKind.COUNT).row_loss(log_rate, y)
    expected = -stats.poisson.logpmf(y.numpy(), np.exp(log_rate.numpy()))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("alpha", [1e-3, 0.2, 1.0, 7.5])
def test_negative_binomial_loss_is_scipys_nb2_log_pmf(alpha):
    """NB2 with mean λ and Var = λ + αλ² is scipy's nbinom(n = 1/α, p = 1/(1 + αλ))."""
    y = torch.tensor([0.0, 1.0, 3.0, 17.0, 250.0, 1200.0], dtype=torch.float64)
    log_mean = torch.tensor([-1.0, 0.2, 1.1, 2.9, 5.4, 6.0], dtype=torch.float64)
    log_alpha = torch.full_like(y, np.log(alpha))
    task = Task(name="n", label="n", kind="count", distribution="negative_binomial")
    loss = rules(task).row_loss(log_mean, y, log_alpha)
    lam = np.exp(log_mean.numpy())
    expected = -stats.nbinom.logpmf(y.numpy(), 1 / alpha, 1 / (1 + alpha * lam))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-8)
    # NB variance: a fitted α recovers the over-dispersion of Gamma-Poisson draws
    assert rules(task) is not rules(TaskKind.COUNT)


def test_negative_binomial_tends_to_poisson_as_dispersion_vanishes():
    y = torch.tensor([0.0, 2.0, 9.0], dtype=torch.float64)
    o = torch.tensor([0.3, 0.9, 2.0], dtype=torch.float64)
    task = Task(name="n", label="n", kind="count", distribution="negative_binomial")
    nb = rules(task).row_loss(o, y, torch.full_like(y, np.log(1e-7)))
    torch.testing.assert_close(nb, rules(TaskKind.COUNT).row_loss(o, y), rtol=1e-5, atol=1e-5)


def test_fitting_the_dispersion_recovers_the_gamma_mixing_of_the_data():
    """Maximum likelihood over α on Gamma(k, 1/k)-mixed Poisson counts gives α ≈ 1/k."""
    rng = np.random.default_rng(0)
    k, lam = 5.0, 40.0
    y = torch.from_numpy(rng.poisson(lam * rng.gamma(k, 1 / k, 20000)).astype(np.float64))
    log_alpha = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    task = Task(name="n", label="n", kind="count", distribution="negative_binomial")
    opt = torch.optim.LBFGS([log_alpha], max_iter=100)
    o = torch.full_like(y, np.log(lam))

    def closure():
        opt.zero_grad()
        loss = rules(task).row_loss(o, y, log_alpha.expand_as(y)).mean()
        loss.backward()
        return loss

    opt.step(closure)
    assert float(torch.exp(log_alpha)) == pytest.approx(1 / k, rel=0.08)


def test_binary_and_regression_losses_and_links():
    o = torch.tensor([-2.0, 0.0, 3.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    p = torch.sigmoid(o)
    torch.testing.assert_close(rules("binary").row_loss(o, y), -(y * torch.log(p) + (1 - y) * torch.log(1 - p)))
    torch.testing.assert_close(rules("regression").row_loss(o, y), (o - y) ** 2)
    for kind in KINDS:
        z = torch.tensor([-1.5, 0.25, 2.0], dtype=torch.float64)
        r = rules(kind)
        torch.testing.assert_close(r.inverse_link(r.link(z)), z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_user_units("count", np.array([0.0, np.log(3.0)], dtype=np.float32)), [1.0, 3.0], rtol=1e-6)


def test_label_rules_name_the_problem():
    bad, rule = rules("binary").label_problem(np.array([0.0, 1.0, 0.5]))
    assert bad.tolist() == [False, False, True] and "0 or 1" in rule
    bad, rule = rules("count").label_problem(np.array([0.0, -1.0, 2.0]))
    assert bad.tolist() == [False, True, False] and ">= 0" in rule


def test_loss_scales_follow_the_label_magnitude():
    assert rules("binary").loss_scale({"mean": 0.3, "var": 0.21}) == 1.0
    assert rules("count").loss_scale({"mean": 250.0, "var": 9e4}) == 250.0
    assert rules("regression").loss_scale({"mean": 5.0, "var": 4.0}) == 4.0


def test_negative_binomial_deviance_is_twice_the_log_likelihood_gap_to_the_saturated_model():
    from msmt.spec.measures import negative_binomial_deviance

    y = np.array([0.0, 1.0, 4.0, 30.0, 500.0])
    mu = np.array([0.5, 2.0, 4.0, 12.0, 800.0])
    alpha = np.array([0.3, 0.3, 1.2, 0.05, 0.2])
    loglik = lambda m: stats.nbinom.logpmf(y, 1 / alpha, 1 / (1 + alpha * m))  # noqa: E731
    np.testing.assert_allclose(negative_binomial_deviance(y, mu, alpha), 2 * (loglik(np.maximum(y, 1e-300)) - loglik(mu)), rtol=1e-8, atol=1e-9)
    assert negative_binomial_deviance(y, y, alpha)[1:].max() < 1e-9  # zero at the saturated fit
