"""Meta-learning per group: inner loop, MAML meta-gradient, Reptile/FOMAML updates, blocks.

Independent references: central finite differences of the meta-objective (float64) for
second-order MAML, plain autograd at the adapted point for first-order MAML, the closed-form
Reptile interpolation, and a copy of the model holding the adapted weights for composition.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from msmt.cli import main
from msmt.data.tensorize import encode_frame
from msmt.experiments.run import run_experiment
from msmt.meta import GroupIndex, adapt, adapt_groups, inner_loop, meta_loss, meta_step, objective, split_parameters
from msmt.meta.algorithms import build_outer_optimizer
from msmt.meta.episodes import group_values
from msmt.models import build_model, model_names
from msmt.rundir.blocks import BlockStore, read_index
from msmt.scoring.predict import predict, predict_batches
from msmt.spec.batch import take
from msmt.spec.config import MetaConfig, load_experiment
from msmt.spec.errors import ConfigError

GROUP = "item_category"  # ~12 groups with >100 rows each in the tiny data
TINY_MODEL = ["model.embedding_dim=4", "model.hidden_dims=[8]", "model.tower_dims=[4]", "model.dropout=0.0"]


def _cfg(tiny_dir, *overrides):
    return load_experiment(
        tiny_dir / "experiment.yaml",
        ["model.name=shared_bottom", *TINY_MODEL, f"dataset.group={GROUP}", *overrides],
    )


def _model(cfg, schema, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = build_model(schema, cfg.model).to(dtype)
    model.eval()
    return model


def _as(batch, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


@pytest.fixture(scope="module")
def groups(tiny_train, tiny_schema):
    data = encode_frame(tiny_train, tiny_schema)
    return data, GroupIndex(group_values(tiny_train, GROUP))


def _support_query(groups, g=0, k=8, q=8, dtype=torch.float32):
    data, index = groups
    rows = index.rows[g]
    return _as(take(data, rows[:k]), dtype), _as(take(data, rows[k : k + q]), dtype)


def test_inner_loop_lowers_support_loss(tiny_dir, tiny_schema, groups):
    cfg = _cfg(tiny_dir)
    model = _model(cfg, tiny_schema)
    split = split_parameters(model, cfg.meta)
    tasks = cfg.dataset.tasks
    for g in range(3):
        support, _ = _support_query(groups, g, k=20)
        params = dict(model.named_parameters())
        with torch.no_grad():
            before = float(objective(model, {n: params[n] for n in split.personal}, support, tasks))
        phi = adapt(model, split, support, tasks, steps=5, lr=0.02)
        with torch.no_grad():
            after = float(objective(model, phi, support, tasks))
        assert after < before - 1e-3, (g, before, after)
        assert set(phi) == set(split.personal) and split.personal  # the block holds only φ


def _flat_grad(model, names):
    params = dict(model.named_parameters())
    return torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n])).reshape(-1) for n in names])


@pytest.mark.parametrize("clip,backtrack,lr", [
    ("null", 0, 0.3),
    ("0.001", 0, 0.3),  # the inner-loop gradient clipping is engaged
    ("null", 6, 40.0),  # a step too long: backtracking halves it (the factor is a constant of the graph)
])
def test_maml_meta_gradient_matches_finite_differences(tiny_dir, tiny_schema, groups, clip, backtrack, lr):
    """d/dε L_Q(θ+εu, φ_g(θ+εu, φ+εv)) at 0 equals <∇, (u, v)> of second-order MAML."""
    cfg = _cfg(tiny_dir, "meta.inner_steps=2", f"meta.inner_lr={lr}", f"meta.inner_max_grad_norm={clip}", "meta.shared=['*']",
               f"meta.inner_backtrack={backtrack}")
    model = _model(cfg, tiny_schema, seed=1, dtype=torch.float64)
    assert cfg.meta.personal == ["auto"] and set(split_parameters(model, cfg.meta).personal) == set(model.personal_parameters())
    split = split_parameters(model, cfg.meta)
    support, query = _support_query(groups, 1, k=8, q=8, dtype=torch.float64)
    tasks = cfg.dataset.tasks
    if backtrack:  # the case is what it says: plain steps of this length would differ
        start = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n in split.personal}
        plain, halved = (inner_loop(model, start, support, tasks, 2, lr, backtrack=b) for b in (0, backtrack))
        assert any(not torch.allclose(plain[n], halved[n]) for n in start)
    names = [*split.personal, *split.shared]
    params = dict(model.named_parameters())

    def value() -> float:
        loss, _ = meta_loss(model, split, support, query, tasks, cfg.meta)
        return float(loss.detach())

    def gradient(algorithm: str) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        meta = cfg.meta.model_copy(update={"algorithm": algorithm})
        loss, _ = meta_loss(model, split, support, query, tasks, meta)
        loss.backward()
        return _flat_grad(model, names)

    cfg.meta.algorithm = "maml"
    g_maml, g_fo = gradient("maml"), gradient("fomaml")
    gen = torch.Generator().manual_seed(0)
    for subset in (split.personal, split.shared, names):  # φ alone, θ alone, both
        direction = {n: torch.randn(params[n].shape, generator=gen, dtype=torch.float64) if n in subset else torch.zeros_like(params[n]) for n in names}
        d = torch.cat([direction[n].reshape(-1) for n in names])
        eps = 1e-5
        with torch.no_grad():
            for n in names:
                params[n].add_(eps * direction[n])
        plus = value()
        with torch.no_grad():
            for n in names:
                params[n].sub_(2 * eps * direction[n])
        minus = value()
        with torch.no_grad():
            for n in names:
                params[n].add_(eps * direction[n])
        fd = (plus - minus) / (2 * eps)
        analytic = float(g_maml @ d)
        assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9), (subset is split.personal, analytic, fd)
    # the check is sharp: the first-order gradient misses the second-order terms
    assert not torch.allclose(g_maml, g_fo, rtol=1e-3, atol=1e-6)


def test_first_order_maml_gradient_is_query_gradient_at_adapted_point(tiny_dir, tiny_schema, groups):
    cfg = _cfg(tiny_dir, "meta.algorithm=fomaml", "meta.inner_steps=3", "meta.inner_lr=0.1")
    model = _model(cfg, tiny_schema, dtype=torch.float64)
    split = split_parameters(model, cfg.meta)
    support, query = _support_query(groups, 2, dtype=torch.float64)
    tasks = cfg.dataset.tasks
    loss, _ = meta_loss(model, split, support, query, tasks, cfg.meta)
    loss.backward()
    params = dict(model.named_parameters())
    # independent: adapt by hand with detached steps, then autograd at φ_g
    phi = {n: params[n].detach().clone().requires_grad_(True) for n in split.personal}
    for _ in range(3):
        grads = torch.autograd.grad(objective(model, phi, support, tasks), list(phi.values()))
        phi = {n: (p - 0.1 * g).detach().requires_grad_(True) for (n, p), g in zip(phi.items(), grads)}
    expected = torch.autograd.grad(objective(model, phi, query, tasks), list(phi.values()))
    for n, e in zip(phi, expected):
        torch.testing.assert_close(params[n].grad, e, rtol=1e-10, atol=1e-12)


def test_reptile_moves_personal_init_toward_adapted_block(tiny_dir, tiny_schema, groups):
    """With SGD(lr=ε) and nothing shared: φ ← φ + ε (φ_g − φ) exactly (Nichol et al. 2018)."""
    cfg = _cfg(tiny_dir, "meta.algorithm=reptile", "meta.shared=[]", "meta.outer_optimizer=sgd", "meta.outer_lr=0.5")
    model = _model(cfg, tiny_schema, dtype=torch.float64)
    split = split_parameters(model, cfg.meta)
    assert not split.shared and split.frozen
    episode = [_support_query(groups, 0, dtype=torch.float64)]
    tasks = cfg.dataset.tasks
    before = copy.deepcopy(model.state_dict())
    phi_g = adapt(model, split, episode[0][0], tasks, cfg.meta.inner_steps, cfg.meta.inner_lr)
    meta_step(model, split, episode, tasks, cfg.meta, build_outer_optimizer(model, split, cfg.meta))
    after = model.state_dict()
    for n in split.personal:
        torch.testing.assert_close(after[n], before[n] + 0.5 * (phi_g[n] - before[n]))
    for n in split.frozen:
        assert torch.equal(after[n], before[n])


def test_an_outer_step_follows_the_mean_of_the_groups_query_gradients(tiny_dir, tiny_schema, groups):
    """One episode of G groups, SGD(lr) without clipping: φ ← φ − lr · (1/G) Σ_g ∇_φ L_Q_g (the mean, not the sum)."""
    cfg = _cfg(tiny_dir, "meta.algorithm=fomaml", "meta.inner_steps=1", "meta.outer_optimizer=sgd", "meta.outer_lr=0.5",
               "meta.outer_max_grad_norm=null")
    model = _model(cfg, tiny_schema, dtype=torch.float64)
    split = split_parameters(model, cfg.meta)
    episode = [_support_query(groups, g, dtype=torch.float64) for g in range(3)]
    tasks = cfg.dataset.tasks
    params = dict(model.named_parameters())
    grads = []
    for support, query in episode:  # independent: each group's first-order query gradient on its own
        model.zero_grad(set_to_none=True)
        meta_loss(model, split, support, query, tasks, cfg.meta)[0].backward()
        grads.append({n: params[n].grad.clone() for n in split.personal})
    before = copy.deepcopy(model.state_dict())
    meta_step(model, split, episode, tasks, cfg.meta, build_outer_optimizer(model, split, cfg.meta))
    after = model.state_dict()
    for n in split.personal:
        torch.testing.assert_close(after[n], before[n] - 0.5 * sum(g[n] for g in grads) / 3)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
# the naive forecasters share nothing (a scale per task is the whole model) and popularity has no
# parameters (counts): no base to meta-learn
@pytest.mark.parametrize("name", [m for m in model_names() if not m.startswith("naive_") and m != "popularity"])
def test_every_model_meta_trains_without_model_specific_code(tiny_dir, tiny_schema, groups, name, algorithm):
    """Every model declares a non-empty personal block (``meta.personal: [auto]``) and meta-trains
    with the base moving too (``meta.shared: ["*"]``)."""
    cfg = _cfg(tiny_dir, f"model.name={name}", f"meta.algorithm={algorithm}", "meta.inner_steps=1", "meta.shared=['*']")
    model = _model(cfg, tiny_schema)
    split = split_parameters(model, cfg.meta)
    assert split.personal and set(split.personal) == set(model.personal_parameters())
    before = copy.deepcopy(model.state_dict())
    episode = [_support_query(groups, g) for g in range(2)]
    loss = meta_step(model, split, episode, cfg.dataset.tasks, cfg.meta, build_outer_optimizer(model, split, cfg.meta))
    assert np.isfinite(loss)
    after = model.state_dict()
    assert any(not torch.equal(after[n], before[n]) for n in split.personal)
    assert any(not torch.equal(after[n], before[n]) for n in split.shared)


def test_meta_config_is_strict_and_checked(tiny_dir, tiny_schema):
    with pytest.raises(ConfigError, match="meta.inner_stepz"):
        _cfg(tiny_dir, "meta.inner_stepz=3")
    with pytest.raises(ConfigError, match="meta.algorithm"):
        _cfg(tiny_dir, "meta.algorithm=mamll")
    cfg = _cfg(tiny_dir, "meta.personal=[nothing.*]")
    with pytest.raises(ConfigError, match=r"meta.personal: patterns \['nothing.\*'\] match no parameter"):
        split_parameters(_model(cfg, tiny_schema), cfg.meta)
    assert MetaConfig().personal == ["auto"] and MetaConfig().shared == []


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_dir):
    """A meta-trained (first-order MAML, a few episodes) tiny run directory."""
    cfg = _cfg(
        tiny_dir,
        "train.epochs=1",
        "train.progress=false",
        "train.num_threads=1",
        "meta.algorithm=fomaml",
        "meta.episodes=4",
        "meta.groups_per_episode=2",
        "meta.inner_lr=0.02",
    )
    out = tmp_path_factory.mktemp("meta_run") / "run"
    run_experiment(cfg, out)
    return out


@pytest.fixture(scope="module")
def adapted_run(tmp_path_factory, base_run, tiny_dir):
    """``msmt adapt`` on the validation file, excluding one category (for the fallback)."""
    import pandas as pd

    frame = pd.read_csv(tiny_dir / "validation.csv", dtype={GROUP: str})
    left_out = sorted(frame[GROUP].unique())[0]
    part = tmp_path_factory.mktemp("adapt_data") / "support.csv"
    frame[frame[GROUP] != left_out].to_csv(part, index=False)
    out = base_run.parent / "run2"
    with pytest.raises(SystemExit) as exit_info:
        main(["adapt", str(base_run), "--data", str(part), "--out", str(out)])
    assert exit_info.value.code == 0
    return out, part, left_out


def test_adapt_never_changes_the_shared_base(base_run, adapted_run, tiny_schema):
    from msmt.rundir.layout import load_run

    out, part, left_out = adapted_run
    assert (out / "model.safetensors").read_bytes() == (base_run / "model.safetensors").read_bytes()
    assert not (base_run / "blocks").exists()
    run = load_run(base_run)
    before = copy.deepcopy(run.model.state_dict())
    frame = __import__("msmt.data.loading", fromlist=["read_data"]).read_data(part, run.schema.spec)
    split = split_parameters(run.model, run.config.meta)
    blocks, stats = adapt_groups(run.model, split, frame, encode_frame(frame, run.schema), GROUP, run.schema.spec.tasks, run.config.meta)
    for n, t in run.model.state_dict().items():
        assert torch.equal(t, before[n]), n
    index = read_index(out)
    assert set(index) == set(blocks) and left_out not in index
    stored = load_file(str(out / "blocks" / index[next(iter(index))]))
    assert set(stored) == set(split.personal)  # only the personal tensors, never the whole model
    assert (out / "blocks" / index[next(iter(index))]).stat().st_size < (out / "model.safetensors").stat().st_size / 5
    assert np.mean(list(stats.loss_after.values())) < np.mean(list(stats.loss_before.values()))


def test_each_groups_block_is_adapted_on_that_groups_rows_only(tiny_dir, tiny_schema, tiny_train):
    """adapt_groups' block of group g equals adapt() run on the rows whose group column is g,
    selected here by a plain mask on the table: no block is fitted on another group's rows."""
    cfg = _cfg(tiny_dir, "meta.inner_steps=2", "meta.inner_lr=0.05", "meta.inner_backtrack=0")
    model = _model(cfg, tiny_schema)
    split = split_parameters(model, cfg.meta)
    names = sorted(tiny_train[GROUP].astype(str).unique())[:3]
    frame = tiny_train[tiny_train[GROUP].astype(str).isin(names)].groupby(GROUP).head(24).reset_index(drop=True)
    data = encode_frame(frame, tiny_schema)
    tasks = tiny_schema.spec.tasks
    blocks, stats = adapt_groups(model, split, frame, data, GROUP, tasks, cfg.meta)
    assert sorted(blocks) == names
    m = cfg.meta
    for name in names:
        rows = torch.from_numpy(np.flatnonzero(frame[GROUP].astype(str).to_numpy() == name))
        assert stats.rows[name] == len(rows)
        want = adapt(model, split, take(data, rows), tasks, m.inner_steps, m.inner_lr, m.inner_max_grad_norm, m.inner_backtrack)
        for n in split.personal:
            torch.testing.assert_close(blocks[name][n], want[n], rtol=1e-5, atol=1e-6)
    first = blocks[names[0]]
    assert any(not torch.allclose(first[n], blocks[names[1]][n]) for n in split.personal)  # groups differ


def test_adapt_groups_steps_with_meta_sgd_rates_elementwise(tiny_dir, tiny_schema, tiny_train):
    """With Meta-SGD's per-parameter rates α, one unclipped inner step gives φ_g = φ − α ⊙ ∇_φ L_support(φ)
    (Li et al., 2017), the gradient taken here by plain autograd on the group's rows, not a step of
    ``meta.inner_lr``."""
    cfg = _cfg(tiny_dir, "meta.inner_steps=1", "meta.inner_lr=0.05", "meta.inner_backtrack=0", "meta.inner_max_grad_norm=null")
    model = _model(cfg, tiny_schema)
    split = split_parameters(model, cfg.meta)
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(0)
    rates = {n: 0.5 * torch.rand(params[n].shape, generator=generator) for n in split.personal}
    name = sorted(tiny_train[GROUP].astype(str).unique())[0]
    frame = tiny_train[tiny_train[GROUP].astype(str) == name].head(32).reset_index(drop=True)
    data = encode_frame(frame, tiny_schema)
    blocks, _ = adapt_groups(model, split, frame, data, GROUP, tiny_schema.spec.tasks, cfg.meta, rates)
    phi = {n: params[n].detach().clone().requires_grad_(True) for n in split.personal}
    grads = torch.autograd.grad(objective(model, phi, data, tiny_schema.spec.tasks), list(phi.values()))
    for (n, p), g in zip(phi.items(), grads):
        torch.testing.assert_close(blocks[name][n], p.detach() - rates[n] * g, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(blocks[name][n], p.detach() - cfg.meta.inner_lr * g)


def _adapted_test_rows(adapted_run, tiny_dir):
    """(blocks dir, held-out group, loaded run, test frame, encoded test rows, group per row)."""
    from msmt.data.loading import read_data
    from msmt.rundir.layout import load_run

    out, _, left_out = adapted_run
    run = load_run(out)
    frame = read_data(tiny_dir / "test.csv", run.schema.spec)
    return out, left_out, run, frame, encode_frame(frame, run.schema, with_labels=False), group_values(frame, GROUP)


def test_group_without_block_falls_back_to_base(base_run, adapted_run, tiny_dir):
    out, left_out, run, frame, data, groups = _adapted_test_rows(adapted_run, tiny_dir)
    scores = predict(run.model, data, batch_size=64, groups=groups, blocks=BlockStore(out))
    preds, n_block = scores.values, scores.personal_rows
    base = predict_batches(run.model, data)
    fallback = groups == left_out
    assert fallback.any() and n_block == int((~fallback).sum())
    for t in base:
        np.testing.assert_allclose(preds[t][fallback], base[t][fallback], rtol=1e-6, atol=1e-7)
        assert not np.allclose(preds[t][~fallback], base[t][~fallback])
    # a run without blocks scores every row by the base
    scores = predict(run.model, data, groups=groups, blocks=BlockStore(base_run))
    preds0, n0 = scores.values, scores.personal_rows
    assert n0 == 0
    for t in base:
        np.testing.assert_allclose(preds0[t], base[t], rtol=1e-6, atol=1e-7)


def test_base_plus_block_equals_the_adapted_model(adapted_run, tiny_dir, tmp_path):
    """Composition from the stored block == a copy of the model holding φ_g as its own weights."""
    import pandas as pd

    out, left_out, run, frame, data, groups = _adapted_test_rows(adapted_run, tiny_dir)
    composed = predict(run.model, data, batch_size=7, groups=groups, blocks=BlockStore(out)).values
    index = read_index(out)
    for group in sorted(set(groups) - {left_out})[:4]:
        rows = np.flatnonzero(groups == group)
        adapted = copy.deepcopy(run.model)
        adapted.load_state_dict(load_file(str(out / "blocks" / index[group])), strict=False)
        own = predict_batches(adapted, take(data, torch.from_numpy(rows)))
        # each row alone, too: a row's prediction never depends on its batch-mates
        alone = predict(run.model, take(data, torch.from_numpy(rows[:1])), groups=groups[rows[:1]], blocks=BlockStore(out)).values
        for t in own:
            np.testing.assert_allclose(composed[t][rows], own[t], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(alone[t], own[t][:1], rtol=1e-6, atol=1e-7)
    # the CLI composes the same way
    pred_file = tmp_path / "pred.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(out), "--data", str(tiny_dir / "test.csv"), "--out", str(pred_file)])
    assert exit_info.value.code == 0
    cli = pd.read_csv(pred_file)
    for t in composed:
        np.testing.assert_allclose(cli[f"pred_{t}"].to_numpy(), composed[t], rtol=1e-5, atol=1e-7)


def test_adapt_reports_bad_input_in_one_line(base_run, tiny_dir, tmp_path, capsys):
    import pandas as pd

    frame = pd.read_csv(tiny_dir / "validation.csv").drop(columns=[GROUP])
    bad = tmp_path / "nogroup.csv"
    frame.to_csv(bad, index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["adapt", str(base_run), "--data", str(bad), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and GROUP in err


def test_episodes_split_groups_into_disjoint_support_and_query(groups):
    _, index = groups
    sampler = index.sampler(support_size=5, query_size=7, groups_per_episode=3, seed=0)
    for _ in range(3):
        episode = sampler.sample()
        assert len(episode) == 3
        for support, query in episode:
            assert len(support) == 5 and len(query) == 7
            assert not set(support.tolist()) & set(query.tolist())
            owners = {g for g, rows in enumerate(index.rows) if set(support.tolist()) & set(rows.tolist())}
            assert len(owners) == 1 and set(query.tolist()) <= set(index.rows[owners.pop()].tolist())
    with pytest.raises(ConfigError, match="no group has"):
        index.sampler(support_size=10_000, query_size=1, groups_per_episode=1, seed=0)


def test_a_group_needs_one_row_beyond_the_smallest_support_to_be_drawn():
    """support_min + 1 rows at least: a group of exactly support_min rows is never drawn (its support would
    fall short of support_min), and a table with only such groups is a ConfigError."""
    index = GroupIndex(np.array(["a"] * 3 + ["b"] * 4 + ["c"] * 3, dtype=object))
    sampler = index.sampler(support_size=3, query_size=5, groups_per_episode=3, seed=0)
    for _ in range(5):
        episode = sampler.sample()
        assert len(episode) == 1
        (support, query), = episode
        assert set(support.tolist()) | set(query.tolist()) == set(index.rows[1].tolist()) and len(support) == 3
    with pytest.raises(ConfigError, match="no group has"):
        GroupIndex(np.array(["a"] * 3, dtype=object)).sampler(support_size=3, query_size=1, groups_per_episode=1, seed=0)


def test_inner_loop_clipping_bounds_each_step(tiny_dir, tiny_schema, groups):
    cfg = _cfg(tiny_dir)
    model = _model(cfg, tiny_schema, seed=0)
    split = split_parameters(model, cfg.meta)
    support, _ = _support_query(groups, 0, k=8, q=8)
    params = dict(model.named_parameters())
    phi = {n: params[n].detach().clone().requires_grad_(True) for n in split.personal}
    lr, max_norm = 100.0, 0.5  # a huge step: only the clipping keeps it bounded
    stepped = inner_loop(model, phi, support, cfg.dataset.tasks, 1, lr, max_grad_norm=max_norm)
    moved = torch.sqrt(sum(((stepped[n] - phi[n]) ** 2).sum() for n in phi)).detach()
    assert float(moved) <= lr * max_norm * (1 + 1e-5)
    assert float(moved) > 0


def test_backtracking_makes_every_inner_step_a_descent_step(tiny_dir, tiny_schema, groups):
    """Steps so long that plain gradient descent raises the support loss: with backtracking the loss
    never rises from one step to the next; a step short enough to descend is taken unchanged."""
    cfg = _cfg(tiny_dir)
    model = _model(cfg, tiny_schema, seed=0)
    split = split_parameters(model, cfg.meta)
    tasks = cfg.dataset.tasks
    params = dict(model.named_parameters())

    def losses(support, lr, backtrack, steps=4):
        phi = {n: params[n].detach().clone().requires_grad_(True) for n in split.personal}
        out = []
        for _ in range(steps):
            with torch.no_grad():
                out.append(float(objective(model, phi, support, tasks)))
            phi = {n: t.detach().requires_grad_(True) for n, t in inner_loop(model, phi, support, tasks, 1, lr, backtrack=backtrack).items()}
        with torch.no_grad():
            out.append(float(objective(model, phi, support, tasks)))
        return np.array(out), phi

    raised = 0
    for g in range(4):
        support, _ = _support_query(groups, g, k=16)
        plain, _ = losses(support, 200.0, 0)
        with np.errstate(invalid="ignore"):  # plain steps this long may overflow to inf
            raised += int(not (np.diff(plain) <= 0).all())
        guarded, _ = losses(support, 200.0, 8)
        assert (np.diff(guarded) <= 1e-7).all(), (g, guarded)
        assert guarded[-1] < guarded[0], (g, guarded)  # and it still moves
        short_plain, phi_plain = losses(support, 0.01, 0, steps=1)
        short_guarded, phi_guarded = losses(support, 0.01, 8, steps=1)
        assert all(torch.equal(phi_plain[n], phi_guarded[n]) for n in phi_plain)
    assert raised >= 2  # the steps are long enough for plain descent to overshoot


def test_backtracking_skips_a_step_that_no_halving_makes_a_descent(tiny_dir, tiny_schema, groups):
    """A step so long that it and every one of its ``backtrack`` halvings raise the support loss is
    skipped: φ comes back unchanged, not moved by the last (still ascending) halving."""
    cfg = _cfg(tiny_dir)
    model = _model(cfg, tiny_schema, seed=0)
    split = split_parameters(model, cfg.meta)
    tasks = cfg.dataset.tasks
    params = dict(model.named_parameters())
    support, _ = _support_query(groups, 0, k=16)
    phi = {n: params[n].detach().clone().requires_grad_(True) for n in split.personal}
    lr, tries = 1e6, 2  # steps of 1e6, 5e5, 2.5e5 times the gradient: all overshoot
    loss = objective(model, phi, support, tasks)
    grads = torch.autograd.grad(loss, list(phi.values()))
    with torch.no_grad():
        for f in (1.0, 0.5, 0.25):
            trial = {n: phi[n] - f * lr * g for n, g in zip(phi, grads)}
            assert float(objective(model, trial, support, tasks)) > float(loss)  # the case is what it says
    stepped = inner_loop(model, phi, support, tasks, 1, lr, backtrack=tries)
    for n in phi:
        torch.testing.assert_close(stepped[n].detach(), phi[n].detach(), rtol=0, atol=0)
