"""Time-ordered episodes, support sizes from a range, Meta-SGD's meta-gradient, and the default
that leaves the shared base untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.meta import GroupIndex, meta_loss, meta_train, plan_meta, split_parameters
from msmt.meta.algorithms import episode_time
from msmt.meta.params import InnerRates
from msmt.models import build_model
from msmt.spec.batch import take
from msmt.spec.config import load_experiment


def test_time_ordered_episodes_never_put_a_query_row_before_a_support_row():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{i}" for i in range(6)], 30)
    times = rng.permutation(len(groups)).astype(float)  # rows in no particular order in the table
    index = GroupIndex(groups, times)
    sampler = index.sampler(support_size=9, query_size=5, groups_per_episode=4, seed=1, support_min=2, ordered=True)
    sizes = set()
    for _ in range(200):
        for support, query in sampler.sample():
            s, q = times[support.numpy()], times[query.numpy()]
            assert len(q) >= 1 and s.max() < q.min()  # every query row after every support row
            # the support is the rows just before the cut: no row of the group lies between
            group = groups[support[0].item()]
            between = (groups == group) & (times > s.max()) & (times < q.min())
            assert not between.any()
            sizes.add(len(s))
    assert sizes == set(range(2, 10))  # support sizes drawn from [support_min, support_size]


def test_time_ordered_cut_is_drawn_over_the_whole_group():
    """The cut c is uniform in [k, n−1]: over many episodes the support starts anywhere from the
    group's first row and the query holds up to ``query_size`` rows (not only the group's last)."""
    n, k, q = 20, 4, 5
    times = np.arange(n, dtype=float)
    sampler = GroupIndex(np.array(["g"] * n), times).sampler(support_size=k, query_size=q, groups_per_episode=1, seed=3, ordered=True)
    cuts, query_sizes = set(), set()
    for _ in range(400):
        ((support, query),) = sampler.sample()
        assert support.tolist() == list(range(support[0].item(), support[0].item() + k))
        cut = support[-1].item() + 1
        assert query.tolist() == list(range(cut, min(cut + q, n)))
        cuts.add(cut)
        query_sizes.add(len(query))
    assert cuts == set(range(k, n))
    assert query_sizes == set(range(1, q + 1))


def test_random_episodes_are_disjoint_and_sizes_vary():
    groups = np.repeat(["a", "b", "c"], 40)
    sampler = GroupIndex(groups).sampler(8, 6, 3, seed=0, support_min=3)
    sizes = set()
    for _ in range(100):
        for support, query in sampler.sample():
            assert not set(support.tolist()) & set(query.tolist())
            sizes.add(len(support))
    assert sizes == set(range(3, 9))


@pytest.fixture(scope="module")
def panel(trained_panel_run):
    """The small advertiser panel: (config, schema, training frame, its batch)."""
    data = trained_panel_run.data_dir
    cfg = load_experiment(data / "experiment.yaml", ["model.name=mmoe", "model.hidden_dims=[8]", "model.tower_dims=[4]",
                                                    "model.embedding_dim=4", "meta.algorithm=metasgd"])
    frame = read_data(cfg.dataset.files.train, cfg.dataset)
    schema = fit_schema(frame, cfg.dataset)
    return cfg, schema, frame, encode_frame(frame, schema)


def test_panel_episodes_follow_the_panel_time(panel):
    cfg, schema, frame, _ = panel
    assert episode_time(cfg.dataset) == "day"
    torch.manual_seed(0)
    plan = plan_meta(build_model(schema, cfg.model), cfg.meta, frame)
    assert plan.sampler.ordered
    days = frame["day"].to_numpy()
    adapted = 0
    for _ in range(20):
        for support, query in plan.sampler.sample():
            if len(support):  # k = 0 episodes (meta.support_min 0, the default) have no support row to order
                adapted += 1
                assert days[support.numpy()].max() <= days[query.numpy()].min()
    assert adapted > 0


def test_meta_sgd_meta_gradient_matches_finite_differences(panel):
    """d/dε L_Q(φ_g(φ, α + εv)) at 0 equals <∇_α, v> (and likewise for φ) of Meta-SGD's exact gradient."""
    cfg, schema, frame, batch = panel
    torch.manual_seed(0)
    model = build_model(schema, cfg.model).double().eval()
    meta = cfg.meta.model_copy(update={"inner_steps": 2, "inner_lr": 0.05, "inner_max_grad_norm": None})
    split = split_parameters(model, meta)
    rates = InnerRates(model, split.personal, meta.inner_lr).double()
    with torch.no_grad():  # rates that differ per entry, so that a per-parameter error shows
        for r in rates.parameters():
            r.mul_(torch.rand(r.shape, generator=torch.Generator().manual_seed(3), dtype=r.dtype) + 0.5)
    rows = np.flatnonzero(frame["advertiser_id"].to_numpy() == frame["advertiser_id"].iloc[0])
    double = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    support, query = take(double, torch.from_numpy(rows[:6])), take(double, torch.from_numpy(rows[6:14]))
    tasks = schema.spec.tasks

    def value() -> float:
        loss, _ = meta_loss(model, split, support, query, tasks, meta, rates)
        return float(loss.detach())

    model.zero_grad(set_to_none=True)
    rates.zero_grad(set_to_none=True)
    loss, _ = meta_loss(model, split, support, query, tasks, meta, rates)
    loss.backward()
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(1)
    for tensors in (list(rates.parameters()), [params[n] for n in split.personal]):
        direction = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in tensors]
        analytic = sum(float((t.grad * d).sum()) for t, d in zip(tensors, direction))
        eps = 1e-6
        with torch.no_grad():
            for t, d in zip(tensors, direction):
                t.add_(eps * d)
        plus = value()
        with torch.no_grad():
            for t, d in zip(tensors, direction):
                t.sub_(2 * eps * d)
        minus = value()
        with torch.no_grad():
            for t, d in zip(tensors, direction):
                t.add_(eps * d)
        numeric = (plus - minus) / (2 * eps)
        assert abs(analytic) > 1e-8
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_meta_training_by_default_leaves_the_shared_base_unchanged(panel):
    """``meta.shared: []``: only the personal block's start (and Meta-SGD's rates) move."""
    cfg, schema, frame, batch = panel
    torch.manual_seed(0)
    model = build_model(schema, cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta = cfg.meta.model_copy(update={"episodes": 5, "groups_per_episode": 4})
    plan = plan_meta(model, meta, frame)
    start = {k: v.detach().clone() for k, v in plan.rates.as_dict().items()}
    meta_train(model, meta, plan, batch)
    after = model.state_dict()
    personal = set(plan.split.personal)
    assert personal and all(n.startswith("towers.") for n in personal)
    assert all(torch.equal(after[n], before[n]) for n in before if n not in personal)
    assert any(not torch.equal(after[n], before[n]) for n in personal)
    assert any(not torch.equal(r.detach(), start[n]) for n, r in plan.rates.as_dict().items())


def test_every_model_declares_a_personal_block_that_moves_only_its_groups(trained_panel_run):
    """Adapting one group's block changes that group's predictions and no other group's."""
    from msmt.meta import adapt
    from msmt.rundir.layout import load_run
    from msmt.scoring.predict import predict

    data = trained_panel_run.data_dir
    for name in ("mmoe", "m2m", "single_task", "naive_mean"):
        run = load_run(trained_panel_run(name))
        frame = read_data(data / "validation.csv", run.schema.spec)
        batch = encode_frame(frame, run.schema, context=read_data(data / "train.csv", run.schema.spec))
        split = split_parameters(run.model, run.config.meta)
        assert split.personal, name
        groups = frame["advertiser_id"].to_numpy()
        mine = groups == groups[0]
        block = adapt(run.model, split, take(batch, torch.from_numpy(np.flatnonzero(mine))), run.schema.spec.tasks, steps=3, lr=0.5)

        class OneBlock:
            def has(self, g):
                return g == groups[0]

            def get(self, g):
                return block

        base = predict(run.model, batch).values
        personal = predict(run.model, batch, groups=groups, blocks=OneBlock()).values
        moved = any(not np.allclose(personal[t][mine], base[t][mine]) for t in base)
        assert moved, name
        for t in base:  # other groups: the base's values up to float rounding (rows are scored in other batch shapes)
            np.testing.assert_allclose(personal[t][~mine], base[t][~mine], rtol=1e-6, atol=1e-7, err_msg=f"{name} {t}")


def test_meta_sgd_run_saves_its_rates_and_adapt_steps_with_them(trained_panel_run, tmp_path):
    """A Meta-SGD run stores its learned rates; ``msmt adapt --context`` (panel history from
    earlier rows) uses them and reports each block's displacement."""
    import json

    from helpers import run_main

    run = trained_panel_run("mmoe", "meta.algorithm=metasgd", "meta.episodes=3", "meta.groups_per_episode=4")
    assert (run / "meta_rates.safetensors").exists()
    data = trained_panel_run.data_dir
    out = tmp_path / "adapted"
    assert run_main("adapt", run, "--data", data / "validation.csv", "--context", data / "train.csv", "--out", out) == 0
    summary = json.loads((out / "adapt.json").read_text())
    assert summary["inner_lr"] == "meta-sgd rates" and summary["median_block_displacement"] > 0
    assert summary["mean_support_loss_after"] < summary["mean_support_loss_before"]


@pytest.mark.parametrize("algorithm", ["maml", "reptile", "metasgd"])
def test_the_meta_curve_starts_at_its_fine_tuning_reference_and_computing_it_changes_nothing(panel, algorithm):
    """Before the first outer step the block's start is the fine-tuning start and every algorithm adapts as
    fine-tuning does (Meta-SGD's rates start at ``meta.inner_lr``), so the curve's first point equals its
    reference; once the start has moved the two differ. Meta-training ends where it would without the
    reference (``meta.log_reference`` off, the default: no reference column)."""
    cfg, schema, frame, batch = panel
    meta = cfg.meta.model_copy(update={"algorithm": algorithm, "episodes": 6, "groups_per_episode": 4, "outer_lr": 0.05})
    assert not meta.log_reference

    def trained(reference: bool):
        m = meta.model_copy(update={"log_reference": reference})
        torch.manual_seed(0)
        model = build_model(schema, cfg.model)
        history = meta_train(model, m, plan_meta(model, m, frame), batch)
        return model.state_dict(), history

    state, history = trained(True)
    assert len(history) == 6 and history[0]["query_loss"] == pytest.approx(history[0]["finetune_query_loss"], rel=1e-6)
    assert max(abs(h["query_loss"] - h["finetune_query_loss"]) for h in history[1:]) > 1e-4
    without, plain = trained(False)
    assert all(torch.equal(state[n], without[n]) for n in state)
    assert [h["query_loss"] for h in plain] == [h["query_loss"] for h in history]
    assert all("finetune_query_loss" not in h for h in plain)


def test_support_size_zero_scores_the_blocks_start_unadapted(panel):
    """``meta.support_min: 0``: some episodes draw k = 0; their groups have an empty support and a query, and
    the outer loss is the query loss at the block's start itself (no inner step), whose gradient reaches it."""
    from msmt.meta.params import objective

    cfg, schema, frame, batch = panel
    index = GroupIndex(frame["advertiser_id"].to_numpy(), frame["day"].to_numpy().astype(float))
    sampler = index.sampler(support_size=3, query_size=4, groups_per_episode=2, seed=0, support_min=0, ordered=True)
    sizes = {len(s) for _ in range(60) for s, q in sampler.sample() if len(q)}
    assert sizes == {0, 1, 2, 3}
    torch.manual_seed(0)
    model = build_model(schema, cfg.model).eval()
    meta = cfg.meta.model_copy(update={"algorithm": "maml", "support_min": 0})
    split = split_parameters(model, meta)
    rows = np.flatnonzero(frame["advertiser_id"].to_numpy() == frame["advertiser_id"].iloc[0])
    empty, query = take(batch, torch.from_numpy(rows[:0])), take(batch, torch.from_numpy(rows[:8]))
    loss, phi = meta_loss(model, split, empty, query, schema.spec.tasks, meta)
    params = dict(model.named_parameters())
    assert all(phi[n] is params[n] for n in split.personal)
    assert float(loss.detach()) == pytest.approx(float(objective(model, {}, query, schema.spec.tasks).detach()), rel=1e-6)
    loss.backward()
    assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in split.personal)


def test_outer_clip_rescales_the_outer_step_to_the_bound(panel):
    """``meta.outer_max_grad_norm``: with plain SGD the outer step is −lr·g; clipped, it is −lr·g·c/‖g‖ over
    every moved tensor (the block's start and Meta-SGD's rates together): the same direction, length lr·c."""
    cfg, schema, frame, batch = panel

    def step(clip):
        torch.manual_seed(0)
        model = build_model(schema, cfg.model)
        meta = cfg.meta.model_copy(update={"episodes": 1, "groups_per_episode": 4, "outer_optimizer": "sgd", "outer_lr": 0.1,
                                           "outer_max_grad_norm": clip})
        plan = plan_meta(model, meta, frame)
        before = [p.detach().clone() for p in (*(dict(model.named_parameters())[n] for n in plan.split.personal), *plan.rates.parameters())]
        meta_train(model, meta, plan, batch)
        after = [p.detach() for p in (*(dict(model.named_parameters())[n] for n in plan.split.personal), *plan.rates.parameters())]
        return torch.cat([(a - b).flatten() for a, b in zip(after, before)])

    free = step(None)
    norm = float(free.norm()) / 0.1  # ‖g‖ of the unclipped outer gradient
    clip = norm / 4
    clipped = step(clip)
    assert float(clipped.norm()) == pytest.approx(0.1 * clip, rel=1e-4)
    torch.testing.assert_close(clipped, free / 4, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(step(norm * 2), free, rtol=1e-5, atol=1e-8)  # a bound above ‖g‖ changes nothing


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_meta_training_and_adaptation_keep_the_frozen_base_out_of_autograd(panel, algorithm):
    """While meta-training and adapting, the parameters neither personal nor shared do not require grad
    (no graph recorded, no gradient computed for them); afterwards every flag is as it was. The personal
    block moves, the frozen base does not."""
    from msmt.meta import adapt

    cfg, schema, frame, batch = panel
    meta = cfg.meta.model_copy(update={"algorithm": algorithm, "episodes": 3, "groups_per_episode": 2, "outer_lr": 0.05})
    torch.manual_seed(0)
    model = build_model(schema, cfg.model)
    plan = plan_meta(model, meta, frame)
    assert plan.split.frozen and not plan.split.shared
    named = dict(model.named_parameters())
    frozen = [named[n] for n in plan.split.frozen]
    before = {n: p.detach().clone() for n, p in named.items()}
    seen: list[bool] = []
    handle = model.register_forward_hook(lambda *_: seen.append(any(p.requires_grad for p in frozen)))
    try:
        meta_train(model, meta, plan, batch)
        assert seen and not any(seen)
        assert all(p.requires_grad for p in model.parameters())
        assert all(torch.equal(named[n], before[n]) for n in plan.split.frozen)
        assert any(not torch.equal(named[n], before[n]) for n in plan.split.personal)

        seen.clear()
        rows = torch.arange(20)
        phi = adapt(model, plan.split, take(batch, rows), schema.spec.tasks, 2, 0.1, 5.0)
        assert seen and not any(seen)
        assert all(p.requires_grad for p in model.parameters())
        assert any(not torch.equal(phi[n], named[n]) for n in plan.split.personal)
    finally:
        handle.remove()


def test_meta_history_counts_the_passes_over_the_training_rows(panel):
    """``passes`` in the history = support and query rows drawn so far / training rows, counted here by
    drawing the same episodes again from a sampler with the same seed."""
    cfg, schema, frame, batch = panel
    meta = cfg.meta.model_copy(update={"algorithm": "fomaml", "episodes": 10, "groups_per_episode": 3})
    torch.manual_seed(0)
    model = build_model(schema, cfg.model)
    history = meta_train(model, meta, plan_meta(model, meta, frame), batch)
    again = plan_meta(model, meta, frame).sampler
    drawn = np.cumsum([sum(len(s) + len(q) for s, q in again.sample()) for _ in range(meta.episodes)])
    assert [row["episode"] for row in history] == list(range(1, 11))
    np.testing.assert_allclose([row["passes"] for row in history], drawn / len(frame))
    assert history[-1]["passes"] > 0
