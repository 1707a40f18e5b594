"""One parametrised test over every registered model (DeepCTR-Torch's check_mtl_model idea).

Each model must: return {task: [B]} for every task; work with a batch of one row and with a
batch holding a single scenario; reduce its training loss in a few steps; give identical
predictions after a save/load round trip; score each row independently of its batch-mates;
and run on another device than the CPU (checked on the ``meta`` device, see
``test_forward_and_backward_stay_on_the_model_device``).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_model

from helpers import DeviceMixCheck, encoded, model_config
from msmt.models import build_model, model_names
from msmt.rundir.layout import save_weights
from msmt.spec.batch import take, to_device
from msmt.training.losses import task_losses
from toy_panel import make_toy_panel

MODELS = model_names()


@pytest.fixture(scope="module")
def tiny_batch(tiny_train, tiny_schema):
    return encoded(tiny_train.iloc[:256].reset_index(drop=True), tiny_schema)


@pytest.fixture
def data(name, tiny_schema, tiny_batch, advertiser_panel):
    """(schema, 256 encoded rows) the model applies to: the tiny synthetic data, or for the naive
    forecasters (which read each unit's own history) the advertiser panel."""
    if not name.startswith("naive_"):
        return tiny_schema, tiny_batch
    schema, rows = advertiser_panel
    return schema, take(rows, slice(0, 256))


def make(name, schema, seed=0):
    torch.manual_seed(seed)
    return build_model(schema, model_config(name))


def inputs(batch):
    return {k: v for k, v in batch.items() if k not in ("labels", "weight")}


@pytest.mark.parametrize("name", MODELS)
def test_output_shapes(name, data):
    tiny_schema, batch = data
    model = make(name, tiny_schema).eval()
    out = model(inputs(batch))
    assert set(out) == set(tiny_schema.spec.task_names)
    for value in out.values():
        assert value.shape == (256,)
        assert torch.isfinite(value).all()


@pytest.mark.parametrize("name", MODELS)
def test_batch_of_one_and_single_scenario(name, data):
    tiny_schema, batch = data
    model = make(name, tiny_schema).eval()
    one = model(take(inputs(batch), slice(0, 1)))
    assert all(v.shape == (1,) for v in one.values())
    scen = batch["scenario"]
    rows = torch.nonzero(scen == scen[0]).flatten()
    single = model(take(inputs(batch), rows))
    assert all(v.shape == (len(rows),) for v in single.values())


@pytest.mark.parametrize("name", MODELS)
def test_rows_do_not_depend_on_batch_mates(name, data):
    tiny_schema, batch = data
    model = make(name, tiny_schema).eval()
    full = model(inputs(batch))
    shuffled_idx = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    shuffled = model(take(inputs(batch), shuffled_idx))
    alone = model(take(inputs(batch), slice(5, 6)))
    for t in full:
        torch.testing.assert_close(shuffled[t], full[t][shuffled_idx], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(alone[t], full[t][5:6], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_a_few_steps_reduce_the_loss(name, data):
    tiny_schema, batch = data
    model = make(name, tiny_schema)
    tasks = tiny_schema.spec.tasks

    def loss():
        losses = task_losses(tasks, model(inputs(batch)), batch["labels"], batch["weight"])
        return sum(losses.values())

    model.train()
    with torch.no_grad():
        start = float(loss())
    if model.fits_statistics:  # closed form (popularity): one counting pass, no gradient step
        model.fit_statistics([batch])
        with torch.no_grad():
            assert float(loss()) < 0.99 * start  # shrunk toward the scenario rates (m = 20); exactness: test_popularity.py
        return
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    # the naive forecasters start at the naive forecast and fit only a scale per task
    with torch.no_grad():
        assert float(loss()) < (0.999 if name.startswith("naive_") else 0.9) * start


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, data, tmp_path):
    tiny_schema, batch = data
    model = make(name, tiny_schema, seed=3).eval()
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    fresh = make(name, tiny_schema, seed=99).eval()
    load_model(fresh, str(path))
    a, b = model(inputs(batch)), fresh(inputs(batch))
    for t in a:
        assert torch.equal(a[t], b[t])


@pytest.mark.parametrize("name", MODELS)
def test_declares_shared_parameters(name, data):
    model = make(name, data[0])
    shared = {id(p) for p in model.shared_parameters()}
    assert shared <= {id(p) for p in model.parameters()}
    if name not in ("single_task", "logistic_regression", "popularity") and not name.startswith("naive_"):  # these share nothing by construction
        assert shared


@pytest.fixture(scope="module")
def panel():
    """A small advertiser panel: ``seq.*`` history inputs and an advertiser profile."""
    return make_toy_panel(rows=64, seed=0, new_scenario_share=0.1)


@pytest.mark.parametrize("with_panel", [False, True], ids=["plain", "panel"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_and_backward_stay_on_the_model_device(name, with_panel, data, panel, advertiser_panel):
    """Device-agnostic models, proved without a GPU: model and batch on the ``meta`` device
    (shapes, no data), one training forward + loss + backward and one eval forward. A tensor
    created in ``forward`` without ``device=`` lands on the CPU and meets meta tensors: either
    the op refuses it or :class:`DeviceMixCheck` records it. ``panel``: the sequence/history
    path (M2M's encoder with an advertiser profile; ``history_summary`` for the others)."""
    if with_panel:  # the advertiser panel: raw history and forecast offsets too
        schema, rows = advertiser_panel
        data = take(rows, slice(0, 64))
        extra = {"m2m": {"profile_features": ["industry", "size_tier", "budget_level"]}} if name == "m2m" else {"history_summary": True}
        if name == "popularity":  # the advertiser panel has no ID feature: count by one declared here
            extra["popularity"] = {"column": "region"}
    else:
        (schema, data), extra = data, {}
    torch.manual_seed(0)
    meta = torch.device("meta")
    model = build_model(schema, model_config(name, **extra)).to(meta)
    on_meta = to_device(data, meta)
    check = DeviceMixCheck()
    with check:
        model.train()
        out = model(inputs(on_meta))
        if model.fits_statistics:
            model.fit_statistics([on_meta])
        total = sum(task_losses(schema.spec.tasks, out, on_meta["labels"], on_meta["weight"]).values())
        if total.requires_grad:  # a closed-form model (popularity) has nothing to differentiate
            total.backward()
        model.eval()
        scored = model(inputs(on_meta))
    assert check.mixed == []
    assert {v.device for v in [*out.values(), *scored.values()]} == {meta}
    rows = on_meta["scenario"].shape[0]
    assert all(v.shape == (rows,) for v in out.values())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert (grads or not any(p.requires_grad for p in model.parameters())) and all(g.device == meta for g in grads)
    assert all(b.device == meta for b in model.buffers())


OTHER_VALUE = {"embedding_dim": 5, "hidden_dims": [7], "tower_dims": [3], "dropout": 0.5, "activation": "gelu",
               "history_dropout": 0.9, "history_gap_dropout": 0.9, "unseen_scenario_correction": 0.5}


@pytest.mark.parametrize("name", MODELS)
def test_ignored_options_are_really_ignored(name, data):
    """An option a model declares it ignores (``ignored_options``, left out of its hyper-parameter
    search) changes neither its parameters nor its eval outputs; every other model reads
    ``hidden_dims`` or ``embedding_dim`` (so the declaration is not a blanket)."""
    schema, batch = data
    torch.manual_seed(0)
    base = build_model(schema, model_config(name)).eval()
    ignored = type(base).ignored_options
    changed = {k: OTHER_VALUE[k] for k in ignored}
    torch.manual_seed(0)
    other = build_model(schema, model_config(name, **changed)).eval()
    if ignored:
        assert {k: v.shape for k, v in base.state_dict().items()} == {k: v.shape for k, v in other.state_dict().items()}
        for mode in (False, True):  # eval, then training (where dropouts act; same random stream for both)
            outs = []
            for model in (base, other):
                model.train(mode)
                torch.manual_seed(1)
                with torch.no_grad():
                    outs.append(model(inputs(batch)))
            for task in outs[0]:
                torch.testing.assert_close(outs[0][task], outs[1][task])
    else:
        torch.manual_seed(0)
        wider = build_model(schema, model_config(name, hidden_dims=[7], embedding_dim=5))
        assert sum(p.numel() for p in wider.parameters()) != sum(p.numel() for p in base.parameters())
