"""benchmarks/speed.py's msmt side: data, models, FLOP counting and the lever variants.

No timing assertions here (speed targets live in the benchmark); torch-rechub is not needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from msmt.training.losses import task_losses

SPEC = importlib.util.spec_from_file_location("speed_bench", Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py")
speed = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(speed)


def _loss(model, batch):
    return sum(task_losses(model.schema.spec.tasks, model(batch), batch["labels"], batch["weight"]).values())


def test_data_is_seeded_and_shaped():
    a, schemas = speed.make_data(3000, seed=1)
    b, _ = speed.make_data(3000, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["sparse"].shape == (3000, len(speed.FIELDS))
    assert int(a["sparse"].max()) < max(v.size for v in schemas["plain"].vocabularies.values())
    click, purchase = a["labels"][:, 0], a["labels"][:, 1]
    assert bool((purchase <= click).all()) and 0.05 < float(click.mean()) < 0.95
    cols = speed.rechub_inputs(a)
    assert set(cols) == {*speed.FIELDS, "scenario"} and all(v.shape == (3000,) for v in cols.values())


def test_every_model_trains_and_counts_flops():
    data, schemas = speed.make_data(2 * speed.BATCH, seed=0)
    batch = speed.msmt_batches(data, 1)[0]
    for name in speed.MODELS:
        model = speed.msmt_model(name, schemas)
        assert speed.train_flops(model, batch, _loss) > 0
        train, test = speed.split(data)
        speed.train_epochs("msmt", name, model, train, 1, schemas)
        click_auc, purchase_auc = speed.test_auc("msmt", name, model, test)
        assert 0.0 <= click_auc <= 1.0 and 0.0 <= purchase_auc <= 1.0


def test_lever_variants_keep_outputs():
    """Every lever trains, and the previous layouts (the A/B of ExpertBank, of the one-lookup
    encoder and of in-place ReLU) compute the adopted model's function from the same weights."""
    data, schemas = speed.make_data(speed.BATCH, seed=0)
    batch = speed.msmt_batches(data, 1)[0]
    for name in ("shared_bottom", "mmoe", "m2m"):
        for lever, precision in speed.LEVERS[name]:
            if lever == "torch.compile" and (name, precision) != ("mmoe", "fp32"):
                continue  # compiled once already; another compile only costs test time
            torch.manual_seed(0)
            reference = speed.msmt_model(name, schemas).eval()
            torch.manual_seed(0)
            model, opt = speed.lever_variant(speed.msmt_model(name, schemas), lever)
            if lever in ("separate expert MLPs", "stacked experts", "two embedding lookups", "out-of-place ReLU"):
                with torch.no_grad():
                    want, got = reference(batch), model.eval()(batch)
                for task in want:
                    torch.testing.assert_close(got[task], want[task], atol=1e-5, rtol=1e-5)
            model.train()
            speed.msmt_step(model, opt, schemas["plain"].spec.tasks, bf16=precision == "bf16")(batch)
            out = model(batch)
            assert set(out) == {"click", "purchase"} and out["click"].shape == (speed.BATCH,)
            assert speed.split_impl(speed.lever_impl(lever, precision)) == ("msmt" if precision == "fp32" else speed.BF16, lever)


def test_onnx_runner_scores_like_the_eager_model():
    """The ONNX inference column times what msmt.scoring.export writes: same outputs as eager msmt."""
    data, schemas = speed.make_data(2 * speed.BATCH, seed=0)
    batch = speed.msmt_batches(data, 1)[0]
    for name in ("mmoe", "esmm"):
        run = speed.onnx_runner(name, schemas, batch, threads=1)
        torch.manual_seed(0)
        model = speed.msmt_model(name, schemas).eval()  # the runner's model: same seed, same weights
        with torch.no_grad():
            eager = model(batch)
        got = run(batch)
        for task, value in eager.items():
            np.testing.assert_allclose(got[task], value.numpy(), atol=1e-5, rtol=0)


def test_effective_gemm_rate_is_the_flop_weighted_harmonic_mean():
    """Two layers, one 3× the FLOPs of the other, at 100 and 10 GFLOP/s: back to back they take
    3f/100 + f/10 per (3f + f) FLOPs -> 4 / (0.03 + 0.1) GFLOP/s, not the plain mean 55."""
    rates = {(300, 1): [100e9] * 3, (100, 1): [10e9] * 3}
    got = speed.effective_rate([(300, 1), (100, 1)], rates)
    assert abs(got - 4 / (3 / 100 + 1 / 10) * 1e9) < 1e-3 * got
    shapes = speed.linear_shapes(speed.msmt_model("mmoe", speed.make_data(10, seed=0)[1]))
    d_in = len(speed.FIELDS) * speed.EMB + speed.EMB
    assert (d_in, speed.EXPERTS * speed.HIDDEN[0]) in shapes  # all experts' first layers: one GEMM (ExpertBank)
    assert shapes.count((speed.HIDDEN[0], speed.HIDDEN[1])) == speed.EXPERTS  # then one per expert
