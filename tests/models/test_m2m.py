"""Proofs for M2M (Zhang et al., WSDM 2022): each property is checked against an independent
computation (a naive per-row loop) or an invariance that must hold exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_model

from msmt.layers.meta_attention import MetaAttention
from msmt.layers.meta_unit import MetaUnit
from msmt.meta.finetune import finetune
from msmt.models import build_model
from msmt.rundir.layout import save_schema, save_weights
from msmt.spec.config import ExperimentConfig, ModelConfig, TrainConfig
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema
from msmt.training.loop import fit
from msmt.training.losses import task_losses
from toy_panel import make_toy_panel, subset, without_panel

PROFILE = ["industry", "size_tier", "budget_level"]


def m2m_config(**m2m) -> ModelConfig:
    return ModelConfig(name="m2m", embedding_dim=8, hidden_dims=[32], m2m={"profile_features": PROFILE, **m2m})


@pytest.fixture(scope="module")
def toy():
    return make_toy_panel(rows=3000, seed=0, new_scenario_share=0.1)


@pytest.fixture(scope="module")
def model(toy):
    torch.manual_seed(0)
    return build_model(toy.schema, m2m_config()).eval()


def rows(toy, index):
    return {k: v[torch.as_tensor(index)] for k, v in toy.batch.items()}


# --------------------------------------------------------------------------- meta unit


def naive_meta(unit: MetaUnit, x: torch.Tensor, s: torch.Tensor, group: int, act) -> torch.Tensor:
    """One row, one group, one input vector: generate W, b from S̃ by hand, then loop."""
    h = x
    for i, ((a, b), gw, gb) in enumerate(zip(unit.shapes, unit.weights, unit.biases)):
        if unit.static:
            w, bias = gw[group], gb[group]
        else:  # generator: W[p, q] = sum_k A[k, p, q] s_k + C[p, q] (row s of the k axis holds C)
            ns = s.shape[0]
            w = torch.stack([torch.stack([sum(gw[k, group, p, q] * s[k] for k in range(ns)) + gw[ns, group, p, q] for q in range(b)]) for p in range(a)])
            bias = torch.stack([sum(gb[k, group, q] * s[k] for k in range(ns)) + gb[ns, group, q] for q in range(b)])
        h = torch.stack([sum(h[p] * w[p, q] for p in range(a)) + bias[q] for q in range(b)])
        if i < len(unit.shapes) - 1 or unit.final_act:
            h = act(h)
    return h


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("n", [1, 3])  # n = 1: elementwise application, n > 1: batched matmul
def test_meta_unit_equals_naive_per_row_loop(static, n):
    torch.manual_seed(0)
    unit = MetaUnit([5, 4, 3], scenario_dim=6, groups=2, final_act=True, static=static).double()
    x = torch.randn(4, 2, n, 5, dtype=torch.float64)  # [B, G, n, d_in]
    s = torch.randn(4, 6, dtype=torch.float64)
    fast = unit(x, s)
    assert fast.shape == (4, 2, n, 3)
    for b in range(4):
        for g in range(2):
            for j in range(n):
                ref = naive_meta(unit, x[b, g, j], s[b], g, torch.relu)
                torch.testing.assert_close(fast[b, g, j], ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layers,static", [(1, False), (2, False), (2, True)])
def test_meta_attention_equals_naive_loop(layers, static):
    torch.manual_seed(1)
    att = MetaAttention(expert_dim=4, task_dim=4, scenario_dim=5, hidden=3, layers=layers, act="relu", static=static).double()
    experts = torch.randn(3, 5, 4, dtype=torch.float64)  # [B, k, E]
    tasks = torch.randn(2, 4, dtype=torch.float64)  # [m, Dt]
    s = torch.randn(3, 5, dtype=torch.float64)
    r, alpha = att(experts, tasks, s)
    for b in range(3):
        for t in range(2):
            scores = torch.stack(
                [naive_meta(att.meta, torch.cat([experts[b, j], tasks[t]]), s[b], 0, torch.relu) @ att.v for j in range(5)]
            )
            a = torch.exp(scores) / torch.exp(scores).sum()
            torch.testing.assert_close(alpha[b, t], a, atol=1e-6, rtol=0)
            torch.testing.assert_close(r[b, t], (a[:, None] * experts[b]).sum(0), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- row independence


@pytest.mark.parametrize("training", [False, True])
def test_row_prediction_does_not_depend_on_batch_mates(toy, model, training):
    model.train(training)
    try:
        mask = toy.batch["seq.mask"]
        empty = torch.nonzero(~mask.any(1)).flatten()[:3].tolist()
        partial = torch.nonzero(mask.any(1) & ~mask.all(1)).flatten()[:3].tolist()
        targets = empty + partial + [0, 1]
        with torch.no_grad():
            alone = {i: model(rows(toy, [i])) for i in targets}  # batch size 1
            mates = [list(range(100, 140)), list(range(2000, 2017)), list(range(500, 1000))]
            for others in mates:
                batch_index = others[: len(others) // 2] + targets + others[len(others) // 2 :]
                out = model(rows(toy, batch_index))
                for pos, i in enumerate(targets, start=len(others) // 2):
                    for task, value in alone[i].items():
                        assert value.shape == (1,)
                        torch.testing.assert_close(out[task][pos], value[0], atol=1e-5, rtol=1e-5)
    finally:
        model.eval()


def test_padded_positions_do_not_change_outputs(toy, model):
    batch = rows(toy, range(300))
    mask = batch["seq.mask"]
    assert (~mask.any(1)).any() and (mask.any(1) & ~mask.all(1)).any()  # both kinds of padding present
    noisy = dict(batch)
    g = torch.Generator().manual_seed(3)
    noisy["seq.behaviour"] = torch.where(mask, batch["seq.behaviour"], torch.randint(1, 6, mask.shape, generator=g))
    noise = torch.randn(batch["seq.performance"].shape, generator=g) * 10
    noisy["seq.performance"] = torch.where(mask.unsqueeze(-1), batch["seq.performance"], noise)
    with torch.no_grad():
        a, b = model(batch), model(noisy)
    for task in a:
        assert torch.isfinite(a[task]).all()
        torch.testing.assert_close(a[task], b[task], atol=1e-6, rtol=1e-6)
    # and observed steps do matter (the check above is not vacuous)
    changed = dict(batch)
    changed["seq.performance"] = batch["seq.performance"] + mask.unsqueeze(-1).float()
    with torch.no_grad():
        c = model(changed)
    assert not torch.allclose(a["clicks"], c["clicks"])


def test_steps_older_than_seq_len_are_ignored(toy):
    torch.manual_seed(0)
    m = build_model(toy.schema, m2m_config(seq_len=3)).eval()
    batch = rows(toy, range(200))
    older = dict(batch)
    older["seq.performance"] = batch["seq.performance"].clone()
    older["seq.performance"][:, :-3] += 5.0
    older["seq.mask"] = batch["seq.mask"].clone()
    older["seq.mask"][:, :-3] = True
    with torch.no_grad():
        torch.testing.assert_close(m(batch)["clicks"], m(older)["clicks"], atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- scenario knowledge


def test_generated_weights_differ_between_scenarios_and_gradients_reach_generator(toy, model):
    batch = rows(toy, range(400))
    scen = batch["scenario"]
    with torch.no_grad():
        s = model.scenario_representation(batch)
        w_att = model.attention.meta.generate(s)[0][0]  # [B, 1, d0, d1]
        w_tow = model.tower.units[0].generate(s)[0][0]  # [B, m, d0, d1]
    a = int(torch.nonzero(scen == 1)[0])
    b = int(torch.nonzero(scen == 2)[0])
    assert (w_att[a] - w_att[b]).abs().max() > 1e-3
    assert (w_tow[a] - w_tow[b]).abs().max() > 1e-3
    # same scenario *and* same advertiser -> the very same network
    key = [(int(c), int(adv)) for c, adv in zip(scen, batch["sparse"][:, 0])]
    dup = next((i, j) for i in range(len(key)) for j in range(i + 1, len(key)) if key[i] == key[j])
    torch.testing.assert_close(w_tow[dup[0]], w_tow[dup[1]])

    model.zero_grad()
    losses = task_losses(toy.schema.spec.tasks, model(batch), batch["labels"], batch["weight"])
    sum(losses.values()).backward()
    for unit in (model.attention.meta, *model.tower.units):
        for gen in (*unit.weights, *unit.biases):
            assert gen.grad is not None and gen.grad[:-1].abs().sum() > 0  # the S̃-dependent part
    for p in model.scenario.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.zero_grad()


def test_unseen_scenario_gets_representation_from_its_attributes(toy, model):
    batch = rows(toy, range(50))
    renamed = dict(batch)
    renamed["scenario"] = torch.zeros_like(batch["scenario"])  # same attributes, unknown id
    with torch.no_grad():
        torch.testing.assert_close(model.scenario_representation(batch), model.scenario_representation(renamed))
        moved = dict(batch)
        moved["scenario_dense"] = batch["scenario_dense"] + 1.0
        assert not torch.allclose(model.scenario_representation(batch), model.scenario_representation(moved))


def test_without_meta_modules_scenario_attributes_are_unused(toy):
    torch.manual_seed(0)
    m = build_model(toy.schema, m2m_config(use_meta_attention=False, use_meta_tower=False)).eval()
    batch = rows(toy, range(100))
    moved = dict(batch)
    moved["scenario_dense"] = batch["scenario_dense"] + 3.0
    with torch.no_grad():
        torch.testing.assert_close(m(batch)["clicks"], m(moved)["clicks"])


@pytest.mark.parametrize(
    "switches", [{"use_transformer": False}, {"use_meta_attention": False}, {"use_meta_tower": False}, {"meta_layers": 1, "tower_levels": 1}]
)
def test_ablations_build_and_train(toy, switches):
    torch.manual_seed(0)
    m = build_model(toy.schema, m2m_config(**switches))
    if switches.get("use_transformer") is False:
        assert not any("encoder.layers" in n for n, _ in m.named_parameters())
    batch = rows(toy, range(64))
    losses = task_losses(toy.schema.spec.tasks, m(batch), batch["labels"], batch["weight"])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_single_scenario_batch_and_batch_size_one(toy, model):
    idx = torch.nonzero(toy.batch["scenario"] == 3).flatten()[:32]
    batch = rows(toy, idx)
    model.train()
    losses = task_losses(toy.schema.spec.tasks, model(batch), batch["labels"], batch["weight"])
    sum(losses.values()).backward()
    model.zero_grad()
    model.eval()
    with torch.no_grad():
        one = model(rows(toy, [7]))
    assert all(v.shape == (1,) and torch.isfinite(v).all() for v in one.values())


def test_no_panel_no_profile_no_attributes(tiny_schema, tiny_train):
    from msmt.data.tensorize import encode_frame

    m = build_model(tiny_schema, ModelConfig(name="m2m", embedding_dim=4, hidden_dims=[16])).eval()
    assert m.panel is None and m.scenario.scenario_id is not None
    batch = encode_frame(tiny_train.head(64), tiny_schema)
    out = m(batch)
    assert set(out) == {"click", "purchase", "dwell"} and out["dwell"].shape == (64,)


def test_config_errors_name_the_key(toy):
    with pytest.raises(ConfigError, match=r"model.m2m.profile_features.*'nope'"):
        build_model(toy.schema, m2m_config(profile_features=["nope"]))
    with pytest.raises(ConfigError, match=r"model.m2m.*divisible by seq_heads"):
        from msmt.spec.config import validate_experiment

        validate_experiment({"dataset": toy.schema.spec.model_dump(), "model": {"name": "m2m", "m2m": {"seq_dim": 30, "seq_heads": 4}}})
    with pytest.raises(ConfigError, match="model.m2m.nonsense"):
        validate_experiment({"dataset": toy.schema.spec.model_dump(), "model": {"name": "m2m", "m2m": {"nonsense": 1}}})


def test_save_load_round_trip(toy, model, tmp_path):
    save_weights(model, tmp_path / "model.safetensors")
    save_schema(toy.schema, tmp_path / "schema.json")
    schema = FittedSchema.load(tmp_path / "schema.json")
    assert schema.panel.window == 7
    torch.manual_seed(123)  # a different init: only the loaded weights can make the outputs equal
    fresh = build_model(schema, m2m_config())
    load_model(fresh, str(tmp_path / "model.safetensors"), strict=True)
    fresh.eval()
    batch = rows(toy, range(100))
    with torch.no_grad():
        a, b = model(batch), fresh(batch)
    for task in a:
        torch.testing.assert_close(a[task], b[task])


# --------------------------------------------------------------------------- training


def _split(toy):
    known = np.nonzero(toy.batch["scenario"].numpy() > 0)[0]
    new = np.nonzero(toy.batch["scenario"].numpy() == 0)[0]
    return subset(toy, known[:2400]), subset(toy, known[2400:]), subset(toy, new)


@pytest.fixture(scope="module")
def trained(toy):
    train, val, _ = _split(toy)
    cfg = ExperimentConfig(
        dataset=toy.schema.spec,
        model=m2m_config(),
        train=TrainConfig(seed=0, epochs=6, batch_size=128, lr=0.005, patience=6, progress=False),
    )
    torch.manual_seed(0)
    m = build_model(toy.schema, cfg.model)
    result = fit(m, cfg.train, cfg.loss, train.batch, val.batch, val.frame)
    return m, result


def test_fit_lowers_the_loss(trained):
    _, result = trained
    hist = result.history
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert min(h["val_loss"] for h in hist) < hist[0]["val_loss"]
    assert result.val_metrics["overall"]["active"]["auc"] > 0.6


def test_new_scenario_zero_shot_then_finetune(toy, trained):
    m, _ = trained
    *_, new = _split(toy)
    assert (new.batch["scenario"] == 0).all() and len(new.frame) > 150
    support, query = subset(new, np.arange(64)), subset(new, np.arange(64, len(new.frame)))
    tasks = toy.schema.spec.tasks

    def query_loss(model):
        with torch.no_grad():
            out = model(query.batch)
            return {k: float(v) for k, v in task_losses(tasks, out, query.batch["labels"], query.batch["weight"]).items()}

    with torch.no_grad():
        zero_shot = torch.exp(m(query.batch)["clicks"]).numpy()
    truth = query.frame["true_clicks"].to_numpy()
    assert np.isfinite(zero_shot).all()
    assert np.corrcoef(np.log(zero_shot), np.log(truth))[0, 1] > 0.3  # follows the truth before any of its rows
    before = query_loss(m)
    train, *_ = _split(toy)
    constant = torch.full((len(query.frame),), math.log(float(train.batch["labels"][:, 0].mean())))
    constant_loss = float(task_losses(tasks[:1], {"clicks": constant}, query.batch["labels"], query.batch["weight"])["clicks"])
    assert before["clicks"] < constant_loss  # better than the training mean rate
    # adapt only how the new scenario is described (S̃ path), gently: 64 rows are few
    tuned = finetune(m, support.batch, steps=10, lr=1e-4, batch_size=64, which="scenario", optimizer="sgd")
    after = query_loss(tuned)
    assert after["clicks"] + after["active"] < before["clicks"] + before["active"]
    assert query_loss(m) == before  # the original model is untouched


def test_without_panel_trains(toy):
    plain = without_panel(subset(toy, np.arange(600)))
    torch.manual_seed(0)
    m = build_model(plain.schema, m2m_config())
    assert m.panel is None
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    first = None
    for _ in range(30):
        loss = sum(task_losses(plain.schema.spec.tasks, m(plain.batch), plain.batch["labels"], plain.batch["weight"]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < first


def test_run_directory_round_trip_on_plain_data(tiny_dir, tmp_path):
    """The whole `msmt train` path on data with no panel and no scenario attributes, then load_run."""
    from msmt.experiments.run import run_experiment
    from msmt.rundir.layout import load_run
    from msmt.scoring.predict import predict_batches
    from msmt.spec.config import load_experiment

    cfg = load_experiment(
        tiny_dir / "experiment.yaml",
        ["model.name=m2m", "model.hidden_dims=[16]", "train.epochs=1", "train.progress=false", "model.m2m.num_experts=2"],
    )
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["val"]["overall"]["click"]["rows"] > 0
    run = load_run(tmp_path / "run")
    from msmt.data.loading import load_splits
    from msmt.data.tensorize import encode_frame

    val = load_splits(cfg.dataset)["validation"]
    preds = predict_batches(run.model, encode_frame(val, run.schema))
    assert np.isfinite(preds["dwell"]).all() and ((preds["click"] > 0) & (preds["click"] < 1)).all()


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_encoder_layer_equals_torch_transformer_layer(norm_first):
    """The hand-written attention layer computes exactly nn.TransformerEncoderLayer (relu), in the
    post-norm form of msmt 0.1's encoder and the pre-norm form of the recency encoder."""
    from torch import nn

    from msmt.layers.sequence import EncoderLayer

    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(16, 2, 24, 0.0, batch_first=True, norm_first=norm_first).eval().double()
    mine = EncoderLayer(16, 2, 24, 0.0, norm_first=norm_first).eval().double()
    with torch.no_grad():
        mine.qkv.weight.copy_(ref.self_attn.in_proj_weight)
        mine.qkv.bias.copy_(ref.self_attn.in_proj_bias)
    for a, b in [(mine.out, ref.self_attn.out_proj), (mine.ff1, ref.linear1), (mine.ff2, ref.linear2), (mine.norm1, ref.norm1), (mine.norm2, ref.norm2)]:
        a.load_state_dict(b.state_dict())
    x = torch.randn(6, 7, 16, dtype=torch.float64)
    ignore = torch.rand(6, 7) < 0.4
    ignore[:, -1] = False  # at least one key per row
    with torch.no_grad():
        torch.testing.assert_close(mine(x, ignore), ref(x, src_key_padding_mask=ignore), atol=1e-10, rtol=0)


def test_recency_encoder_reads_the_last_step_directly_and_raw_levels(toy):
    """The last step reaches the output without being averaged: changing only yesterday's raw
    level moves the encoding by more than changing an older step's does; ``mean_pool`` (0.1's
    encoder) reads no raw levels at all."""
    from msmt.layers.sequence import PanelEncoder

    torch.manual_seed(0)
    panel = toy.schema.panel
    batch = rows(toy, range(200))
    full = batch["seq.mask"].all(1)
    assert full.sum() > 10
    recency = PanelEncoder(panel, None, 16, 2, 1, 32, 0.0, True, "recency").eval()
    legacy = PanelEncoder(panel, None, 16, 2, 1, 32, 0.0, True, "mean_pool").eval()
    assert recency.out_dim == 64 and legacy.out_dim == 32

    def moved(encoder, step):
        changed = dict(batch)
        raw = batch["seq.raw"].clone()
        raw[:, step] = raw[:, step] * 5 + 50
        changed["seq.raw"] = raw
        with torch.no_grad():
            return (encoder(changed) - encoder(batch))[full].norm(dim=1).mean()

    assert moved(recency, -1) > 0 and moved(legacy, -1) == 0
    assert moved(recency, -1) > 1.5 * moved(recency, 0)  # the last step counts more than the oldest


def test_shared_model_options_take_effect_in_m2m(toy):
    """model.tower_dims, model.use_scenario_feature and model.history_summary change M2M (0.1 ignored them)."""
    torch.manual_seed(0)
    base = dict(name="m2m", embedding_dim=8, hidden_dims=[32], m2m={"profile_features": PROFILE})

    def size(**over):
        model = build_model(toy.schema, ModelConfig(**{**base, **over}))
        return sum(p.numel() for p in model.parameters()), model

    n_plain, plain = size(tower_dims=[], use_scenario_feature=False, history_summary=False)
    assert not hasattr(plain, "towers") and hasattr(plain, "out_weight")
    n_towers, towers = size(tower_dims=[8], use_scenario_feature=False, history_summary=False)
    assert set(towers.towers) == set(toy.schema.spec.task_names) and n_towers != n_plain
    n_scenario, _ = size(tower_dims=[], use_scenario_feature=True, history_summary=False)
    n_summary, _ = size(tower_dims=[], use_scenario_feature=False, history_summary=True)
    assert len({n_plain, n_scenario, n_summary}) == 3
    # the scenario id then reaches the output: two rows differing only in their scenario index
    _, with_id = size(tower_dims=[], use_scenario_feature=True, history_summary=False)
    batch = rows(toy, range(1))
    other = dict(batch, scenario=batch["scenario"] % toy.schema.num_scenarios + 1)
    with torch.no_grad():
        assert not torch.allclose(with_id.inputs(batch)[0], with_id.inputs(other)[0])
        assert torch.allclose(plain.inputs(batch)[0], plain.inputs(other)[0])


def test_profile_feeds_the_experts_unless_told_not_to(toy):
    torch.manual_seed(0)
    batch = rows(toy, range(50))
    changed = dict(batch)
    changed["dense"] = batch["dense"] + 1.0  # budget_level: a profile feature
    for in_experts in (True, False):
        model = build_model(toy.schema, m2m_config(profile_in_experts=in_experts)).eval()
        with torch.no_grad():
            f0, a0 = model.inputs(batch)
            f1, a1 = model.inputs(changed)
        assert not torch.allclose(a0, a1)  # always in S̃'s input
        assert torch.allclose(f0, f1) != in_experts
