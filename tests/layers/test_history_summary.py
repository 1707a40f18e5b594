"""The history summary that lets non-sequence models read the panel history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.layers.history import HistorySummary
from msmt.models import build_model
from msmt.spec.batch import take
from msmt.spec.config import ModelConfig, load_dataset_spec
from msmt.spec.errors import ConfigError
from msmt.synth.advertiser import write_advertiser


@pytest.fixture(scope="module")
def adv_world(tmp_path_factory):
    return write_advertiser(tmp_path_factory.mktemp("adv"), advertisers=30, days=25, seed=1)


def _encoded(world, cross_section_keys=()):
    """(schema, batch) of the world's training rows; ``cross_section_keys`` added to its panel."""
    spec = load_dataset_spec(world / "dataset.yaml")
    spec = spec.model_copy(update={"panel": spec.panel.model_copy(update={"cross_section_keys": cross_section_keys})})
    frame = read_data(world / "train.csv", spec)
    schema = fit_schema(frame, spec)
    return schema, encode_frame(frame, schema)


@pytest.fixture(scope="module")
def adv(adv_world):
    return _encoded(adv_world)


@pytest.fixture(scope="module")
def adv_cross(adv_world):
    """The simulator with the cross-section channel too (``panel.cross_section_keys: [scenario]``)."""
    return _encoded(adv_world, ("scenario",))


def test_summary_matches_a_per_row_loop(adv):
    schema, batch = adv
    out = HistorySummary(schema)(batch).numpy()
    perf, mask, beh = batch["seq.performance"].numpy(), batch["seq.mask"].numpy(), batch["seq.behaviour"].numpy()
    F, V = perf.shape[2], len(schema.panel.events) + 2
    own = 2 * F + 1 + V  # then the group channel's 2F + 3 (the simulator declares panel.group_keys)
    assert out.shape == (len(mask), own + (2 * F + 3 if schema.panel.group_keys else 0))
    for i in np.random.default_rng(0).choice(len(mask), 40, replace=False):
        seen = mask[i]
        n = max(seen.sum(), 1)
        expected_mean = perf[i][seen].sum(0) / n
        expected_last = perf[i, -1] if seen[-1] else np.zeros(F)
        expected_events = np.bincount(beh[i][seen], minlength=V) / n
        np.testing.assert_allclose(out[i, :own], np.concatenate([expected_mean, expected_last, [seen.mean()], expected_events]), atol=1e-6)


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe"])
def test_models_read_history_and_stay_row_independent(adv, name):
    schema, batch = adv
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    torch.manual_seed(0)
    model = build_model(schema, ModelConfig(name=name, embedding_dim=4, hidden_dims=[16], tower_dims=[8], history_summary=True)).eval()
    r = int(torch.nonzero(inputs["seq.mask"].all(1))[0])  # a row with a full history
    rows = torch.arange(r - 5, r + 59) if r >= 5 else torch.arange(0, 64)
    k = int((rows == r).nonzero())
    full = model(take(inputs, rows))
    alone = model(take(inputs, slice(r, r + 1)))
    changed = {key: v.clone() for key, v in take(inputs, rows).items()}
    changed["seq.performance"][k] += 1.0  # row r's history changes: only row r moves
    moved = model(changed)
    others = torch.arange(len(rows)) != k
    for t in full:
        torch.testing.assert_close(alone[t], full[t][k : k + 1])
        assert not torch.allclose(moved[t][k], full[t][k])
        torch.testing.assert_close(moved[t][others], full[t][others])


def test_history_summary_needs_a_panel(tiny_schema):
    with pytest.raises(ConfigError, match="model.history_summary"):
        build_model(tiny_schema, ModelConfig(name="shared_bottom", history_summary=True))


@pytest.mark.parametrize("prefix", ["seq.group", "seq.cross"])
def test_summary_reads_the_peer_channels(adv_cross, prefix):
    """Each peer channel's block (the group's, then the cross-section's) against a per-row loop."""
    schema, batch = adv_cross
    assert schema.panel.group_keys == ("advertiser_id",)  # the simulator declares the group channel
    out = HistorySummary(schema)(batch).numpy()
    F, V = len(schema.panel.metrics), len(schema.panel.events) + 2
    assert out.shape == (len(out), 2 * F + 1 + V + 2 * (2 * F + 3))
    start = 2 * F + 1 + V + (2 * F + 3) * (prefix == "seq.cross")
    raw, count, active = (batch[f"{prefix}_{k}"].numpy() for k in ("raw", "count", "active"))
    paused = np.flatnonzero((active < count).any(1))  # rows whose advertiser had other scenarios paused
    assert len(paused) > 20
    rng = np.random.default_rng(1)
    for i in [*rng.choice(len(out), 20, replace=False), *rng.choice(paused, 20, replace=False)]:
        seen = count[i] > 0
        level = np.log1p(raw[i])
        live = active[i][seen] / count[i][seen]
        last_live = active[i, -1] / count[i, -1] if count[i, -1] > 0 else 0.0
        expected = np.concatenate([level[seen].sum(0) / max(seen.sum(), 1), level[-1], [seen.mean()],
                                   [live.sum() / max(seen.sum(), 1), last_live]])
        np.testing.assert_allclose(out[i, start : start + 2 * F + 3], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", ["seq.group_raw", "seq.group_active", "seq.cross_raw", "seq.cross_active"])
@pytest.mark.parametrize("name", ["m2m", "mmoe"])
def test_a_row_without_own_history_is_forecast_from_its_group(adv_cross, name, key):
    """Zero-shot rows (no own history) still move with their group's (the advertiser's other
    scenarios') and their cross-section's (the scenario's other advertisers') units, and only they do."""
    schema, batch = adv_cross
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    torch.manual_seed(0)
    cfg = dict(embedding_dim=4, hidden_dims=[16], tower_dims=[8], history_summary=name != "m2m")
    model = build_model(schema, ModelConfig(name=name, **cfg)).eval()
    rows = torch.arange(len(inputs["seq.mask"]))[-64:]  # late days: the other scenarios have a past
    sub = take(inputs, rows)
    sub["seq.mask"][:] = False  # nobody has history of its own
    for own in ("seq.raw", "seq.performance"):
        sub[own] = torch.zeros_like(sub[own])
    sub["seq.present"][:] = False
    prefix = key.rsplit("_", 1)[0]
    k = int(torch.nonzero(sub[f"{prefix}_active"].sum(1) > 0)[0])
    full = model(sub)
    changed = {batch_key: v.clone() for batch_key, v in sub.items()}
    if key.endswith("_raw"):
        changed[key][k] *= 5.0  # row k's advertiser does five times as much elsewhere
    else:
        changed[key][k] = 0.0  # row k's advertiser paused its other scenarios (the same sums: only the count says so)
    moved = model(changed)
    others = torch.arange(len(rows)) != k
    for t in full:
        assert not torch.allclose(moved[t][k], full[t][k]), t
        torch.testing.assert_close(moved[t][others], full[t][others])


def test_live_history_is_the_practitioners_live_day_features(adv_world):
    """``HistorySummary(live=True)``'s last 4F columns against :mod:`msmt.experiments.live_history`
    (a numpy computation from the rows themselves) for every panel metric: days since the last
    live / paused day, changes between consecutive observed days, yesterday live."""
    from msmt.experiments.live_history import feature_names, live_history_features

    spec = load_dataset_spec(adv_world / "dataset.yaml")
    frame = read_data(adv_world / "train.csv", spec)
    frame = frame[frame.index % 3 != 1].reset_index(drop=True)  # days without a row: gaps in some units' windows
    schema = fit_schema(frame, spec)
    batch = encode_frame(frame, schema)
    plain, live = HistorySummary(schema), HistorySummary(schema, live=True)
    full = live(batch)
    F, W = len(spec.panel.metrics), spec.panel.window
    assert live.out_dim == plain.out_dim + 4 * F == full.shape[1]
    torch.testing.assert_close(full[:, : plain.out_dim], plain(batch), rtol=0, atol=0)  # the rest unchanged
    extra = full[:, plain.out_dim:].reshape(len(frame), 4, F).numpy()
    names = feature_names(W)
    for f, metric in enumerate(spec.panel.metrics):
        ref = dict(zip(names, live_history_features(frame, frame, list(spec.panel.keys), spec.panel.time, metric, W).T))
        days = np.stack([ref[f"day_{i + 1}"] for i in range(W)], axis=1)  # oldest first, −1 unobserved
        both = (days[:, 1:] >= 0) & (days[:, :-1] >= 0)
        np.testing.assert_allclose(extra[:, 0, f], ref["since_live"] / (W + 1), rtol=1e-6)
        np.testing.assert_allclose(extra[:, 1, f], ref["since_paused"] / (W + 1), rtol=1e-6)
        np.testing.assert_allclose(extra[:, 2, f], (both & (days[:, 1:] != days[:, :-1])).sum(1) / W, rtol=1e-6)
        np.testing.assert_array_equal(extra[:, 3, f], days[:, -1] == 1)
    assert (extra[:, 2] > 0).any() and (extra[:, 3] == 0).any() and (extra[:, 0] < 1).any()  # not trivially constant


def test_history_live_needs_the_history_summary():
    with pytest.raises(ValueError, match="model.history_live"):
        ModelConfig(name="mmoe", history_live=True)
    assert ModelConfig(name="mmoe", history_summary=True, history_live=True).history_live


@pytest.mark.parametrize("name", ["mmoe", "logistic_regression", "m2m"])
def test_history_live_reaches_the_binary_head_and_only_its_own_row(adv, name):
    """``active`` (binary: no forecast offset) reads the raw history only through the live features
    in MMoE and the logistic regression: zeroing one row's raw history moves that row's ``active``
    with ``history_live`` and nothing without it; other rows never move. M2M (whose encoder reads
    raw levels anyway) gains the 4F inputs."""
    schema, batch = adv
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    r = int(torch.nonzero(inputs["seq.mask"].all(1))[0])  # a row with a full window
    rows = torch.arange(r - 5, r + 59) if r >= 5 else torch.arange(0, 64)
    k = int((rows == r).nonzero())
    changed = {key: v.clone() for key, v in take(inputs, rows).items()}
    changed["seq.raw"][k] = 0.0  # every day paused
    others = torch.arange(len(rows)) != k
    cfg = dict(name=name, embedding_dim=4, hidden_dims=[16], tower_dims=[8], history_summary=True)
    dims = {}
    for live in (False, True):
        torch.manual_seed(0)
        model = build_model(schema, ModelConfig(**cfg, history_live=live)).eval()
        with torch.no_grad():  # the logistic regression starts at zero weights: give every weight a value
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        dims[live] = model.encoder.history.out_dim
        with torch.no_grad():
            full, moved = model(take(inputs, rows)), model(changed)
        torch.testing.assert_close(moved["active"][others], full["active"][others])
        if name != "m2m":
            assert (moved["active"][k] != full["active"][k]) == live, live
    assert dims[True] == dims[False] + 4 * len(schema.spec.panel.metrics)
