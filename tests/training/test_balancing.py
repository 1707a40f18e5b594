"""Loss balancing: each strategy checked against a closed form or a toy problem with known answer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.spec.config import LossConfig, load_experiment
from msmt.spec.dataset import Task
from msmt.spec.errors import ConfigError
from msmt.spec.task_kinds import rules
from msmt.training.balancing.pcgrad import project_conflicts
from msmt.training.loop import fit
from msmt.training.losses import balancer_names, build_balancer


class Toy(nn.Module):
    """x [B, I] -> shared MLP -> one linear head per task; declares its shared layer."""

    def __init__(self, num_tasks: int, in_dim: int = 8, hidden: int = 16, out_dim: int = 1):
        super().__init__()
        self.first = nn.Linear(in_dim, hidden)
        self.last = nn.Linear(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, out_dim) for _ in range(num_tasks))

    def forward(self, x):
        h = torch.relu(self.last(torch.relu(self.first(x))))
        return [head(h).squeeze(-1) for head in self.heads]

    def shared_parameters(self):
        return [*self.first.parameters(), *self.last.parameters()]

    def last_shared_layer(self):
        return self.last


def tasks_of(kind: str, n: int = 2) -> tuple[Task, ...]:
    return tuple(Task(name=f"t{i}", label=f"t{i}", kind=kind) for i in range(n))


def loss_cfg(strategy: str, **params) -> LossConfig:
    return LossConfig.model_validate({"strategy": strategy, **({strategy: params} if params else {})})


def train_toy(strategy, kind, make_batch, steps, num_tasks=2, lr=0.02, seed=0, **params):
    torch.manual_seed(seed)
    tasks = tasks_of(kind, num_tasks)
    model = Toy(num_tasks, out_dim=1)
    balancer = build_balancer(tasks, loss_cfg(strategy, **params), model)
    opt = torch.optim.Adam([*model.parameters(), *balancer.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, ys = make_batch(gen)
        outs = model(x)
        losses = {t.name: rules(t).row_loss(o, y).mean() for t, o, y in zip(tasks, outs, ys)}
        opt.zero_grad()
        balancer.backward(losses)
        opt.step()
    return model, balancer, tasks


def test_every_strategy_is_registered():
    assert {"fixed", "uncertainty", "gradnorm", "pcgrad", "dwa"} <= set(balancer_names())
    with pytest.raises(ValueError, match="unknown loss strategy 'nope'"):
        loss_cfg("nope")


# --------------------------------------------------------------------------- uncertainty


def regression_batch(noise=(0.1, 1.0)):
    coef = torch.randn(8, generator=torch.Generator().manual_seed(7))

    def make(gen):
        x = torch.randn(256, 8, generator=gen)
        clean = x @ coef
        return x, [clean + s * torch.randn(256, generator=gen) for s in noise]

    return make


def test_uncertainty_gives_the_noisier_regression_task_the_smaller_weight():
    model, bal, tasks = train_toy("uncertainty", "regression", regression_batch(), steps=600, lr=0.02)
    w = bal.current_weights()
    assert w["t1"] < w["t0"] / 10  # noise variance 1.0 vs 0.01
    # closed form: for a fixed loss L the optimum of ½e^{-s}L + ½s is s = log L
    x, ys = regression_batch()(torch.Generator().manual_seed(123))
    with torch.no_grad():
        losses = torch.stack([rules(t).row_loss(o, y).mean() for t, o, y in zip(tasks, model(x), ys)])
    torch.testing.assert_close(bal.log_var.detach(), losses.log(), atol=0.35, rtol=0)


def test_uncertainty_classification_form_and_noisier_task():
    coef = torch.randn(8, generator=torch.Generator().manual_seed(3)) * 3

    def make(gen):
        x = torch.randn(256, 8, generator=gen)
        p = torch.sigmoid(x @ coef)
        clean = (torch.rand(256, generator=gen) < p).float()
        flip = torch.rand(256, generator=gen) < 0.4  # task 1: 40% of labels flipped
        return x, [clean, torch.where(flip, 1 - clean, clean)]

    model, bal, tasks = train_toy("uncertainty", "binary", make, steps=500, lr=0.02)
    w = bal.current_weights()
    assert w["t1"] < 0.7 * w["t0"]
    x, ys = make(torch.Generator().manual_seed(5))
    with torch.no_grad():
        losses = torch.stack([rules(t).row_loss(o, y).mean() for t, o, y in zip(tasks, model(x), ys)])
    # optimum of e^{-s}L + ½s is s = log(2L)
    torch.testing.assert_close(bal.log_var.detach(), (2 * losses).log(), atol=0.2, rtol=0)


def test_uncertainty_objective_matches_kendall_formula():
    tasks = (Task(name="a", label="a", kind="binary"), Task(name="b", label="b", kind="count", weight=0.5))
    bal = build_balancer(tasks, loss_cfg("uncertainty"), Toy(2))
    with torch.no_grad():
        bal.log_var.copy_(torch.tensor([0.3, -0.7]))
    la, lb = torch.tensor(0.8), torch.tensor(2.5)
    expected = math.exp(-0.3) * 0.8 + 0.15 + 0.5 * (0.5 * math.exp(0.7) * 2.5 + 0.5 * -0.7)
    assert float(bal.combine({"a": la, "b": lb}).detach()) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- GradNorm


def gradnorm_toy_batch(scales=(1.0, 12.0)):
    """Chen et al. Sec. 4 toy: tasks t_i = sigma_i * tanh((B + eps_i) x), very different scales."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(8, 4, generator=g) / 2
    mats = [base + 0.3 * torch.randn(8, 4, generator=g) for _ in scales]
    head = torch.randn(4, generator=g)

    def make(gen):
        x = torch.randn(256, 8, generator=gen)
        return x, [s * torch.tanh(x @ m) @ head for s, m in zip(scales, mats)]

    return make


def grad_norm_spread(model, tasks, weights, make):
    """max_t / min_t of G_t = w_t * ||grad_W L_t|| on the last shared layer."""
    x, ys = make(torch.Generator().manual_seed(999))
    outs = model(x)
    norms = []
    for t, o, y, w in zip(tasks, outs, ys, weights):
        g = torch.autograd.grad(rules(t).row_loss(o, y).mean(), model.last.weight, retain_graph=True)[0]
        norms.append(w * g.norm())
    norms = torch.stack(norms)
    return float(norms.max() / norms.min())


def test_gradnorm_brings_gradient_norms_together():
    make = gradnorm_toy_batch()
    fixed, _, tasks = train_toy("fixed", "regression", make, steps=300, lr=0.01)
    spread_fixed = grad_norm_spread(fixed, tasks, [1.0, 1.0], make)
    gn_model, gn, tasks = train_toy("gradnorm", "regression", make, steps=300, lr=0.01, alpha=0.5)
    w = list(gn.current_weights().values())
    spread_gn = grad_norm_spread(gn_model, tasks, w, make)
    assert spread_fixed > 10
    assert spread_gn < 3 and spread_gn < spread_fixed / 5
    assert sum(w) == pytest.approx(2.0, abs=1e-5) and min(w) > 0
    assert w[0] > w[1]  # the large-scale task is down-weighted


def test_gradnorm_weight_update_matches_hand_computed_gradient():
    """One step: the gradient of L_grad w.r.t. w equals its closed form sign(G_t - target_t) ||g_t||."""
    torch.manual_seed(0)
    tasks = tasks_of("regression")
    model = Toy(2)
    bal = build_balancer(tasks, loss_cfg("gradnorm", alpha=1.0, lr=0.1), model)
    x = torch.randn(64, 8)
    ys = [torch.randn(64), 5 * torch.randn(64)]
    losses = {t.name: rules(t).row_loss(o, y).mean() for t, o, y in zip(tasks, model(x), ys)}
    layer = [model.last.weight, model.last.bias]  # GradNorm measures all parameters of the declared layer
    norms = torch.stack(
        [torch.cat([g.flatten() for g in torch.autograd.grad(losses[n], layer, retain_graph=True)]).norm() for n in ("t0", "t1")]
    )
    G = norms  # w = 1 at the start
    target = G.mean()  # first step: every loss ratio is 1, so r_t = 1
    expected_grad = torch.sign(G - target) * norms
    bal.backward(losses)
    # Adam's first step moves each weight by -lr * sign(grad); then renormalisation to sum 2
    moved = torch.ones(2) - 0.1 * torch.sign(expected_grad)
    torch.testing.assert_close(bal.weights.detach(), moved * 2 / moved.sum(), atol=1e-5, rtol=0)
    assert model.last.weight.grad is not None  # the model got its gradient too


def test_gradnorm_weights_follow_hand_computed_updates_while_losses_move():
    """Several steps of training, each weight update checked against MODELS.md's GradNorm by hand:
    G_t = w_t ‖∇_W L_t‖, r_t = (L_t/L_t(0)) / mean_τ(L_τ/L_τ(0)), target_t = mean(G)·r_tᵅ (constant),
    ∂L_grad/∂w_t = sign(G_t − target_t)·‖∇_W L_t‖, then Adam (written out here) and Σ w = T.
    Three tasks whose losses fall at different rates, so r ≠ 1 after the first step, and the
    loss-ratio term decides the direction of at least one update (checked: not vacuous)."""
    torch.manual_seed(0)
    tasks = tasks_of("regression", 3)
    model = Toy(3)
    alpha, lr, min_weight = 0.5, 0.05, 1e-3
    bal = build_balancer(tasks, loss_cfg("gradnorm", alpha=alpha, lr=lr, min_weight=min_weight), model)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(128, 8, generator=gen)
    coef = torch.randn(8, generator=gen)
    ys = [x @ coef, 3 * torch.tanh(x[:, 0] * x[:, 1]), 2 * torch.randn(128, generator=gen)]  # easy, harder, noise
    layer = [model.last.weight, model.last.bias]
    w = torch.ones(3, dtype=torch.float64)
    m = torch.zeros(3, dtype=torch.float64)
    v = torch.zeros(3, dtype=torch.float64)
    initial = None
    ratio_term_decided = exponent_decided = False
    for step in range(1, 13):
        losses = {t.name: rules(t).row_loss(o, y).mean() for t, o, y in zip(tasks, model(x), ys)}
        L = torch.tensor([float(losses[t.name].detach()) for t in tasks], dtype=torch.float64)
        norms = torch.tensor(
            [float(torch.cat([g.flatten() for g in torch.autograd.grad(losses[t.name], layer, retain_graph=True)]).norm()) for t in tasks],
            dtype=torch.float64,
        )
        initial = L if initial is None else initial
        r = (L / initial) / (L / initial).mean()
        G = w * norms
        target = G.mean() * r**alpha
        assert (G - target).abs().min() > 1e-4 * G.max()  # no near-tie: float32 and float64 agree on the sign
        grad = torch.sign(G - target) * norms
        ratio_term_decided |= bool((torch.sign(G - target) != torch.sign(G - G.mean())).any())
        exponent_decided |= bool((torch.sign(G - target) != torch.sign(G - G.mean() * r)).any())
        # Adam (Kingma & Ba) with torch's defaults: betas (0.9, 0.999), eps 1e-8
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w = w - lr * (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
        w = w.clamp_min(min_weight)
        w = w * 3 / w.sum()

        opt.zero_grad()
        bal.backward(losses)
        opt.step()
        torch.testing.assert_close(bal.last_grad_norms.double(), G, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bal.weights.detach().double(), w, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(initial / initial.mean(), L / L.mean(), rtol=0.05)  # the losses moved apart: r ≠ 1
    assert ratio_term_decided
    assert exponent_decided  # α itself decides an update: r^α and r^1 disagree on a sign at some step


def test_gradnorm_needs_a_last_shared_layer():
    class NoShared(Toy):
        def last_shared_layer(self):
            return None

    with pytest.raises(ConfigError, match="last_shared_layer"):
        build_balancer(tasks_of("regression"), loss_cfg("gradnorm"), NoShared(2))


# --------------------------------------------------------------------------- PCGrad


def test_pcgrad_projection_closed_form():
    a = torch.tensor([1.0, 0.0, 1.0])
    b = torch.tensor([-1.0, 1.0, 0.0])  # a.b = -1 < 0: conflict
    out = project_conflicts(torch.stack([a, b]))
    torch.testing.assert_close(out[0], a - (a @ b) / (b @ b) * b)
    torch.testing.assert_close(out[1], b - (b @ a) / (a @ a) * a)
    assert float(out[0] @ b) == pytest.approx(0.0, abs=1e-6)
    c = torch.tensor([1.0, 1.0, 0.0])  # a.c > 0: left alone
    torch.testing.assert_close(project_conflicts(torch.stack([a, c])), torch.stack([a, c]))


def test_pcgrad_sets_shared_gradient_to_projected_sum_and_keeps_task_gradients():
    torch.manual_seed(1)
    tasks = tasks_of("regression")
    model = Toy(2)
    bal = build_balancer(tasks, loss_cfg("pcgrad"), model)
    x = torch.randn(32, 8)
    ys = [torch.randn(32), -torch.randn(32)]

    def losses():
        return {t.name: rules(t).row_loss(o, y).mean() for t, o, y in zip(tasks, model(x), ys)}

    shared = model.shared_parameters()
    per_task = [torch.cat([g.flatten() for g in torch.autograd.grad(v, shared, retain_graph=True)]) for v in losses().values()]
    expected = project_conflicts(torch.stack(per_task)).sum(0)
    head_grad = torch.autograd.grad(losses()["t1"], model.heads[1].weight)[0]
    model.zero_grad()
    bal.backward(losses())
    got = torch.cat([p.grad.flatten() for p in shared])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(model.heads[1].weight.grad, head_grad)


# --------------------------------------------------------------------------- DWA


def test_dwa_weights_follow_the_loss_ratio_softmax():
    tasks = tasks_of("binary", 3)
    bal = build_balancer(tasks, loss_cfg("dwa", temperature=2.0), Toy(3))
    assert list(bal.current_weights().values()) == [1.0, 1.0, 1.0]
    bal.end_epoch({"t0": 1.0, "t1": 1.0, "t2": 1.0})
    assert list(bal.current_weights().values()) == [1.0, 1.0, 1.0]  # no ratio after one epoch
    bal.end_epoch({"t0": 0.5, "t1": 0.9, "t2": 1.2})
    ratios = torch.tensor([0.5, 0.9, 1.2])
    expected = 3 * torch.exp(ratios / 2) / torch.exp(ratios / 2).sum()
    torch.testing.assert_close(torch.tensor(list(bal.current_weights().values())), expected)
    total = bal.combine({"t0": torch.tensor(1.0), "t1": torch.tensor(2.0), "t2": torch.tensor(3.0)})
    assert float(total) == pytest.approx(float(expected @ torch.tensor([1.0, 2.0, 3.0])), rel=1e-6)


def test_dwa_ratio_is_of_the_last_two_epochs_only():
    """From the third epoch on, w_t = T · softmax(L_t(e−1) / L_t(e−2) / τ): the two most recent
    epochs, never the first one."""
    bal = build_balancer(tasks_of("binary", 2), loss_cfg("dwa", temperature=0.5), Toy(2))
    epochs = [{"t0": 4.0, "t1": 1.0}, {"t0": 2.0, "t1": 1.0}, {"t0": 1.0, "t1": 0.8}, {"t0": 0.9, "t1": 0.4}]
    for e, losses in enumerate(epochs):
        bal.end_epoch(losses)
        if e == 0:
            continue
        r0 = losses["t0"] / epochs[e - 1]["t0"]
        r1 = losses["t1"] / epochs[e - 1]["t1"]
        w0 = 2 * math.exp(r0 / 0.5) / (math.exp(r0 / 0.5) + math.exp(r1 / 0.5))
        got = bal.current_weights()
        assert got["t0"] == pytest.approx(w0, rel=1e-6) and got["t1"] == pytest.approx(2 - w0, rel=1e-6), e


# --------------------------------------------------------------------------- through the trainer


@pytest.mark.parametrize("strategy", ["uncertainty", "gradnorm", "pcgrad", "dwa"])
@pytest.mark.parametrize("model", ["mmoe", "ple", "star", "esmm", "shared_bottom", "pepnet", "apg", "hmoe", "m3oe", "aitm", "escm2"])
def test_strategy_trains_every_model_through_the_one_trainer(strategy, model, tiny_dir, tiny_schema, tiny_train):
    from msmt.data.loading import read_data

    cfg = load_experiment(
        tiny_dir / "experiment.yaml",
        [f"model.name={model}", "model.hidden_dims=[16]", "model.tower_dims=[8]", "model.embedding_dim=4",
         "train.epochs=2", "train.batch_size=256", "train.progress=false", f"loss.strategy={strategy}"],
    )
    val = read_data(tiny_dir / "validation.csv", tiny_schema.spec)
    torch.manual_seed(0)
    net = build_model(tiny_schema, cfg.model)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = fit(net, cfg.train, cfg.loss, encode_frame(tiny_train, tiny_schema), encode_frame(val, tiny_schema), val)
    assert len(result.history) >= 1
    row = result.history[0]
    assert all(math.isfinite(row[f"weight_{t}"]) and row[f"weight_{t}"] > 0 for t in tiny_schema.spec.task_names)
    assert math.isfinite(row["val_loss"])
    changed = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed


# --------------------------------------------------------------------------- the model's own loss terms


@pytest.mark.parametrize("strategy", ["fixed", "uncertainty", "gradnorm", "pcgrad", "dwa"])
def test_every_strategy_adds_the_models_own_terms_unbalanced(strategy):
    """backward(losses, extra) leaves the gradient of backward(losses) plus ∇extra on every parameter
    (PCGrad projects the task gradients only; GradNorm measures the tasks' norms only)."""
    tasks = tasks_of("regression", 2)
    grads = []
    for with_extra in (True, False):
        torch.manual_seed(0)
        model = Toy(2)
        balancer = build_balancer(tasks, loss_cfg(strategy), model)
        x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
        ys = [torch.randn(32, generator=torch.Generator().manual_seed(2 + i)) for i in range(2)]
        outs = model(x)
        losses = {t.name: rules(t).row_loss(o, y).mean() for t, o, y in zip(tasks, outs, ys)}
        extra = 0.3 * outs[0].square().mean()  # reaches the shared layers and the first head
        model.zero_grad()
        if with_extra:
            balancer.backward(losses, extra)
            grads.append([p.grad.clone() for p in model.parameters()])
        else:
            extra_only = torch.autograd.grad(extra, list(model.parameters()), retain_graph=True, allow_unused=True)
            balancer.backward(losses)
            task_only = [p.grad.clone() for p in model.parameters()]
            grads.append([g + (e if e is not None else 0) for g, e in zip(task_only, extra_only)])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_the_trainer_adds_the_models_extra_losses(tiny_dir, tiny_schema, tiny_train):
    """One step of the trainer on AITM (whose calibrator is an extra loss): the gradients are those of
    Σ_t w_t L_t + extra, and differ from the task losses' alone."""
    import copy

    from msmt.spec.batch import take
    from msmt.training.loop import _step, _trainer
    from msmt.training.losses import model_losses, weighted_total

    cfg = load_experiment(tiny_dir / "experiment.yaml", ["model.name=aitm", "model.hidden_dims=[16]", "model.tower_dims=[8]",
                                                       "model.embedding_dim=4", "model.aitm.calibrator_weight=5.0"])
    batch = take(encode_frame(tiny_train, tiny_schema), slice(0, 256))
    torch.manual_seed(0)
    model = build_model(tiny_schema, cfg.model)
    reference = copy.deepcopy(model)
    tr = _trainer(model, cfg.train, cfg.loss, None)
    model.train()
    _step(tr, batch, cfg.train, {t: 0.0 for t in tiny_schema.spec.task_names})
    got = {n: p.grad for n, p in model.named_parameters()}

    reference.train()
    tasks = tiny_schema.spec.tasks
    torch.manual_seed(0)  # no dropout or ID dropout in this config: the forward is deterministic
    outputs = reference(batch)
    losses = model_losses(reference, batch, outputs)
    extra = reference.extra_losses(batch, outputs)
    assert set(extra) == {"calibrator"} and float(extra["calibrator"].detach()) > 0
    grads_tasks = torch.autograd.grad(weighted_total(tasks, losses), list(reference.parameters()), retain_graph=True, allow_unused=True)
    grads_extra = torch.autograd.grad(extra["calibrator"], list(reference.parameters()), allow_unused=True)
    moved = False
    for (name, _), g_t, g_e in zip(reference.named_parameters(), grads_tasks, grads_extra):
        want = (g_t if g_t is not None else 0) + (g_e if g_e is not None else 0)
        if isinstance(want, int):
            assert got[name] is None or not got[name].any(), name
            continue
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-7)
        moved |= g_e is not None and bool(g_e.abs().sum() > 0)
    assert moved  # the calibrator did reach some parameter
