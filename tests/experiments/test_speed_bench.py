"""msmt.experiments.speed (the msmt side of benchmarks/speed.py): data, models, FLOP counting,
the lever variants and the timing arithmetic.

No timing assertions here (speed targets live in the benchmark); torch-rechub is not needed.
"""

from __future__ import annotations

import numpy as np
import torch

from msmt.experiments.speed import data as sd
from msmt.experiments.speed import levers, limit, models, timing


def test_data_is_seeded_and_shaped():
    a, schemas = sd.make_data(3000, seed=1)
    b, _ = sd.make_data(3000, seed=1)
    c, _ = sd.make_data(3000, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["labels"], c["labels"])
    assert a["sparse"].shape == (3000, len(sd.FIELDS)) and int(a["sparse"].min()) >= 2  # 0 padding, 1 OOV
    assert int(a["sparse"].max()) < max(v.size for v in schemas["plain"].vocabularies.values())
    click, purchase = a["labels"][:, 0], a["labels"][:, 1]
    assert bool((purchase <= click).all()) and 0.05 < float(click.mean()) < 0.95
    assert set(a["scenario"].tolist()) == {schemas["plain"].scenario_index(s) for s in sd.SCENARIOS}
    cols = sd.feature_columns(a)
    assert set(cols) == {*sd.FIELDS, "scenario"} and all(v.shape == (3000,) for v in cols.values())
    assert torch.equal(cols["brand"], a["sparse"][:, list(sd.FIELDS).index("brand")])
    assert [t.product_of for t in schemas["esmm"].spec.tasks] == [(), ("click", "cvr")]
    assert [t.product_of for t in schemas["plain"].spec.tasks] == [(), ()]


def test_split_and_batches():
    data, _ = sd.make_data(3000, seed=0)
    train, test = sd.split(data)
    assert train["scenario"].shape[0] == 2400 and test["scenario"].shape[0] == 300
    assert torch.equal(test["sparse"], data["sparse"][2700:])
    batches = sd.full_batches(train, 5, batch_size=1000)  # 2400 rows
    assert len(batches) == 2 and all(b["labels"].shape == (1000, 2) for b in batches)  # the partial batch is dropped
    again = sd.full_batches(train, 1, batch_size=1000)
    assert torch.equal(again[0]["sparse"], batches[0]["sparse"])  # seeded shuffle
    assert sd.head(data, 7)["weight"].shape == (7,)


def test_every_model_trains_and_counts_flops():
    data, schemas = sd.make_data(2 * sd.BATCH, seed=0)
    batch = sd.full_batches(data, 1)[0]
    train, test = sd.split(data)
    for name in models.MODELS:
        model = models.speed_model(name, schemas)
        assert limit.train_flops(model, batch) > 0
        assert all(p.grad is None for p in model.parameters())  # FLOP counting leaves no gradient behind
        models.train_epochs(model, train, 1)
        click_auc, purchase_auc = models.held_out_auc(model, test)
        assert 0.0 <= click_auc <= 1.0 and 0.0 <= purchase_auc <= 1.0


def test_flops_per_sample_do_not_depend_on_the_batch_size():
    data, schemas = sd.make_data(sd.BATCH, seed=0)
    model = models.speed_model("shared_bottom", schemas)
    assert abs(limit.train_flops(model, sd.head(data, 256)) - limit.train_flops(model, data)) < 1e-6 * limit.train_flops(model, data)


def test_lever_variants_keep_outputs():
    """Every lever trains, and the previous layouts (the A/B of ExpertBank, of the one-lookup
    encoder and of in-place ReLU) compute the adopted model's function from the same weights."""
    data, schemas = sd.make_data(sd.BATCH, seed=0)
    batch = sd.full_batches(data, 1)[0]
    for name in ("shared_bottom", "mmoe", "m2m"):
        for lever, precision in levers.LEVERS[name]:
            if lever == "torch.compile" and (name, precision) != ("mmoe", "fp32"):
                continue  # compiled once already; another compile only costs test time
            torch.manual_seed(0)
            reference = models.speed_model(name, schemas).eval()
            torch.manual_seed(0)
            model, opt = levers.lever_variant(models.speed_model(name, schemas), lever)
            if lever in levers.SAME_FUNCTION:
                with torch.no_grad():
                    want, got = reference(batch), model.eval()(batch)
                for task in want:
                    torch.testing.assert_close(got[task], want[task], atol=1e-5, rtol=1e-5)
            model.train()
            models.train_step(model, opt, schemas["plain"].spec.tasks, bf16=precision == "bf16")(batch)
            out = model(batch)
            assert set(out) == {"click", "purchase"} and out["click"].shape == (sd.BATCH,)
            assert levers.split_impl(levers.lever_impl(lever, precision)) == ("msmt" if precision == "fp32" else models.BF16, lever)


def test_sparse_lever_steps_the_table_with_sparse_adam():
    data, schemas = sd.make_data(sd.BATCH, seed=0)
    model, opt = levers.lever_variant(models.speed_model("mmoe", schemas), "sparse embedding grads")
    assert [type(o).__name__ for o in opt.optimizers] == ["AdamW", "SparseAdam"]
    table = model.encoder.table.weight
    before = table.detach().clone()
    models.train_step(model, opt, schemas["plain"].spec.tasks)(data)
    assert table.grad is None or table.grad.is_sparse
    assert not torch.equal(before, table.detach())


def test_onnx_runner_scores_like_the_eager_model():
    """The ONNX inference column times what msmt.scoring.export writes: same outputs as eager msmt."""
    data, schemas = sd.make_data(2 * sd.BATCH, seed=0)
    batch = sd.full_batches(data, 1)[0]
    for name in ("mmoe", "esmm"):
        run = models.onnx_runner(name, schemas, batch, threads=1)
        torch.manual_seed(0)
        model = models.speed_model(name, schemas).eval()  # the runner's model: same seed, same weights
        with torch.no_grad():
            eager = model(batch)
        got = run(batch)
        for task, value in eager.items():
            np.testing.assert_allclose(got[task], value.numpy(), atol=1e-5, rtol=0)


def test_effective_gemm_rate_is_the_flop_weighted_harmonic_mean():
    """Two layers, one 3× the FLOPs of the other, at 100 and 10 GFLOP/s: back to back they take
    3f/100 + f/10 per (3f + f) FLOPs -> 4 / (0.03 + 0.1) GFLOP/s, not the plain mean 55."""
    rates = {(300, 1): [100e9] * 3, (100, 1): [10e9] * 3}
    got = limit.effective_rate([(300, 1), (100, 1)], rates)
    assert abs(got - 4 / (3 / 100 + 1 / 10) * 1e9) < 1e-3 * got
    shapes = limit.linear_shapes(models.speed_model("mmoe", sd.make_data(10, seed=0)[1]))
    d_in = len(sd.FIELDS) * models.EMB + models.EMB
    assert (d_in, models.EXPERTS * models.HIDDEN[0]) in shapes  # all experts' first layers: one GEMM (ExpertBank)
    assert shapes.count((models.HIDDEN[0], models.HIDDEN[1])) == models.EXPERTS  # then one per expert
    assert set(limit.gemm_rates({(8, 4)}, seconds=0.003, batch_size=16)) == {(8, 4)}


def test_timing_arithmetic():
    calls = []
    wall, cpu = timing.timed(calls.append, list(range(5)), warmup=2, batch_size=10)
    assert calls == [0, 1, 0, 1, 2, 3, 4] and wall > 0 and cpu > 0
    assert timing.med([(1.0, 9.0), (3.0, 7.0), (2.0, 8.0)], 0) == 2.0 and np.isnan(timing.med([]))
    # the median of per-repeat ratios, not the ratio of medians
    assert timing.ratio([(2.0, 1.0), (9.0, 1.0), (4.0, 1.0)], [(1.0, 1.0), (3.0, 1.0), (1.0, 1.0)]) == 3.0
    assert timing.ratio([4.0, 6.0], [2.0, 2.0]) == 2.5
    data, _ = sd.make_data(2 * sd.BATCH, seed=0)
    assert timing.loader_alone(data) > 0
