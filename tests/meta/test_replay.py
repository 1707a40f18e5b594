"""Replaying the frozen base across an inner loop (msmt.meta.replay) gives what recomputing it gives.

The reference is the same inner loop with the replay turned off (every forward recomputed). Where the
model is deterministic (eval mode) the adapted block, the query loss and MAML's second-order
meta-gradient must agree to float rounding; the modules after the personal block (the forecast offset
on panel data) must be recomputed for each φ, and the personal block must never be replayed.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.meta import meta_loss, split_parameters
from msmt.meta.params import inner_loop, trainable_only
from msmt.meta.replay import frozen_modules
from msmt.rundir.layout import load_run
from msmt.spec.batch import take


@pytest.fixture(scope="module")
def groups(trained_panel_run):
    """{model: (run, support batch, query batch)}: one advertiser's validation rows in time order, halved."""
    data = trained_panel_run.data_dir
    out = {}
    for name in ("m2m", "mmoe"):
        run = load_run(trained_panel_run(name))
        frame = read_data(data / "validation.csv", run.schema.spec)
        batch = encode_frame(frame, run.schema, context=read_data(data / "train.csv", run.schema.spec))
        ids = frame["advertiser_id"].to_numpy()
        values, counts = np.unique(ids, return_counts=True)
        rows = np.flatnonzero(ids == values[counts.argmax()])  # the advertiser with the most rows
        rows = rows[np.argsort(frame["day"].to_numpy()[rows], kind="stable")]
        half = len(rows) // 2
        assert half >= 4
        out[name] = (run, take(batch, torch.from_numpy(rows[:half])), take(batch, torch.from_numpy(rows[half:])))
    return out


def _count_expert_computations(model, monkeypatch) -> list[int]:
    """[n]: how often the experts really compute (the class's forward, patched before the replay wraps the
    instance's), however often they are called."""
    experts_class = type(model.experts)
    original = experts_class.forward
    computed = [0]

    def counting(self, *args, **kwargs):
        computed[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(experts_class, "forward", counting)
    return computed


def _no_replay(model, personal):
    return contextlib.nullcontext()


@pytest.mark.parametrize("name", ["m2m", "mmoe"])
def test_replayed_inner_loop_matches_recomputing_it(groups, name, monkeypatch):
    run, support, query = groups[name]
    model = run.model.eval()
    assert run.model.forecast is not None  # a module after the personal block, fed by it
    split = split_parameters(model, run.config.meta)
    meta = run.config.meta.model_copy(update={"algorithm": "maml", "inner_steps": 3, "inner_lr": 0.3, "inner_backtrack": 2})

    def adapted_and_meta_gradient():
        params = dict(model.named_parameters())
        with trainable_only(model, split.personal):
            loss, phi = meta_loss(model, split, support, query, run.schema.spec.tasks, meta)
            grads = torch.autograd.grad(loss, [params[n] for n in split.personal])
        return float(loss), {n: t.detach() for n, t in phi.items()}, grads

    replayed = adapted_and_meta_gradient()
    monkeypatch.setattr("msmt.meta.params.replaying_frozen_base", _no_replay)
    recomputed = adapted_and_meta_gradient()

    assert replayed[0] == pytest.approx(recomputed[0], rel=1e-6)
    start = dict(model.named_parameters())
    assert any(not torch.equal(replayed[1][n], start[n]) for n in split.personal)  # the block moved
    for n in split.personal:
        torch.testing.assert_close(replayed[1][n], recomputed[1][n], rtol=1e-5, atol=1e-6)
    for a, b in zip(replayed[2], recomputed[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_base_is_computed_once_per_batch_and_the_personal_block_never_replayed(groups, monkeypatch):
    run, support, _ = groups["m2m"]
    model = run.model.eval()
    split = split_parameters(model, run.config.meta)
    computed = _count_expert_computations(model, monkeypatch)
    calls = [0]
    handle = model.experts.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        with trainable_only(model, ()):
            frozen = frozen_modules(model, split.personal)
            named = dict(model.named_modules())
            assert model.experts in frozen and model.panel in frozen
            assert not any(named[n.rsplit(".", 1)[0]] in frozen for n in split.personal)
            phi = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n in split.personal}
            adapted = inner_loop(model, phi, support, run.schema.spec.tasks, 3, 0.3, backtrack=2)
    finally:
        handle.remove()
    assert calls[0] >= 6  # every step's forward and every backtracking trial calls the experts
    assert computed[0] == 1  # ... which compute once for the support rows
    assert any(not torch.equal(adapted[n], phi[n]) for n in split.personal)


def test_meta_training_draws_the_input_augmentation_once_per_episode_batch(groups, trained_panel_run, monkeypatch):
    """With ``model.history_gap_dropout`` on, meta-training hides history once per episode batch: the
    inner loop's steps and trials and the query see one draw each, so the base computes once per batch
    (a new draw per forward call would recompute it on every call)."""
    from msmt.meta import meta_train, plan_meta

    run, _, _ = groups["m2m"]
    model = run.model
    monkeypatch.setattr(model, "history_gap_dropout", 0.5)
    frame = read_data(trained_panel_run.data_dir / "train.csv", run.schema.spec)
    batch = encode_frame(frame, run.schema)
    meta = run.config.meta.model_copy(update={"algorithm": "maml", "episodes": 2, "groups_per_episode": 3, "support_min": 5,
                                              "support_size": 10, "inner_steps": 3, "inner_backtrack": 2, "log_reference": False})
    plan = plan_meta(model, meta, frame, "advertiser_id")
    computed = _count_expert_computations(model, monkeypatch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        meta_train(model, meta, plan, batch)
    finally:
        model.load_state_dict(state)
    assert model.augments_in_forward  # put back
    assert computed[0] == 2 * 2 * 3  # episodes × groups × (support once, query once)
