"""ID warm-up (Meta-Embedding): unseen IDs get a generated embedding; warm-up trains only the generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import model_config
from msmt.data.tensorize import encode_frame
from msmt.meta.warmup import warm_up_ids, warmup_encoder
from msmt.models import build_model
from msmt.spec.config import MetaConfig
from msmt.spec.fitted import OOV

WARM = {"item_id": ["item_category", "price"]}


def _batch(tiny_train, tiny_schema):
    return encode_frame(tiny_train, tiny_schema)


def test_unseen_ids_read_the_generator_not_the_oov_row(tiny_train, tiny_schema):
    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("mmoe", id_warmup=WARM)).eval()
    batch = {k: v[:64] for k, v in _batch(tiny_train, tiny_schema).items() if k not in ("labels", "weight")}
    field = tiny_schema.spec.features.names.index("item_id")
    new = dict(batch, sparse=batch["sparse"].clone())
    new["sparse"][:, field] = OOV
    encoder = warmup_encoder(model)
    oov_row = int(encoder.offsets[field]) + OOV
    with torch.no_grad():
        before = model(new)
        encoder.table.weight[oov_row] += 5.0  # the shared OOV row no longer matters
        after = model(new)
        known = model(batch)
        encoder.generators["item_id"].net[-1].bias += 1.0  # the generator does
        moved = model(new)
        known_again = model(batch)
    for t in before:
        torch.testing.assert_close(after[t], before[t])
        assert not torch.allclose(moved[t], after[t])
        torch.testing.assert_close(known_again[t], known[t])  # seen IDs never read the generator


def test_warm_up_trains_only_the_generator_and_moves_only_unseen_ids(tiny_train, tiny_schema):
    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("mmoe", id_warmup=WARM))
    data = _batch(tiny_train, tiny_schema)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = {k: v[:200] for k, v in data.items() if k not in ("labels", "weight")}
    field = tiny_schema.spec.features.names.index("item_id")
    new = dict(inputs, sparse=inputs["sparse"].clone())
    new["sparse"][:, field] = OOV
    model.eval()
    with torch.no_grad():
        seen0, new0 = model(inputs), model(new)
    history = warm_up_ids(model, MetaConfig(warmup_steps=20, warmup_rows=4, warmup_lr=1e-2), data)
    assert len(history) >= 2 and all(np.isfinite([h["cold_loss"], h["warm_loss"]]).all() for h in history)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoder.generators.") for k in changed)
    assert all(p.requires_grad for p in model.parameters())  # the freeze is undone
    model.eval()
    with torch.no_grad():
        seen1, new1 = model(inputs), model(new)
    for t in seen0:
        torch.testing.assert_close(seen1[t], seen0[t])
        assert not torch.allclose(new1[t], new0[t])


def test_a_run_with_id_warmup_stores_and_uses_its_generator(tiny_dir, tmp_path):
    from msmt.experiments.run import run_experiment
    from msmt.rundir.layout import load_run
    from msmt.scoring.predict import predict
    from msmt.spec.config import load_experiment

    cfg = load_experiment(tiny_dir / "experiment.yaml", [
        "model.name=mmoe", "train.epochs=1", "train.progress=false", "model.id_warmup={item_id: [item_category, price]}",
        "meta.warmup_steps=5", "meta.warmup_rows=3",
    ])
    run_experiment(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "warmup_history.csv").exists()
    run = load_run(tmp_path / "run")
    assert warmup_encoder(run.model) is not None
    frame = __import__("pandas").read_csv(tiny_dir / "test.csv").head(20)
    frame["item_id"] = [f"never-seen-{i}" for i in range(len(frame))]
    scores = predict(run.model, encode_frame(frame, run.schema, with_labels=False)).values
    assert all(np.isfinite(v).all() for v in scores.values())


def test_warm_up_step_is_the_meta_embedding_objective(tiny_train, tiny_schema, monkeypatch):
    """One warm-up step against the objective written out here: with A and B copies of one row
    (any draw gives the same batches), L_cold = L(A as new), e' = e − η ∇_e L_cold, L_warm = L(B as
    new; e'), and the generator moves by −lr ∇ of a·L_cold + (1 − a)·L_warm (the optimiser swapped
    for plain SGD, so the step is the gradient itself)."""
    import msmt.meta.warmup as warmup

    monkeypatch.setattr(warmup, "make_optimizer", lambda params, name, lr: torch.optim.SGD(params, lr=lr))
    from msmt.spec.batch import take
    from msmt.training.losses import model_losses, weighted_total

    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("mmoe", id_warmup=WARM))
    data = _batch(tiny_train, tiny_schema)
    field = tiny_schema.spec.features.names.index("item_id")
    row = int(torch.nonzero(data["sparse"][:, field] > OOV)[0])
    k, a, eta, lr = 3, 0.2, 5.0, 1e-2
    copies = take(data, torch.full((2 * k,), row, dtype=torch.long))
    new = take(copies, torch.arange(k))
    new["sparse"] = new["sparse"].clone()
    new["sparse"][:, field] = OOV
    generator = warmup_encoder(model).generators["item_id"]
    model.eval()

    def loss(batch):
        return weighted_total(tiny_schema.spec.tasks, model_losses(model, batch))

    captured = []
    hook = generator.register_forward_hook(lambda module, inputs, output: captured.append(output))
    cold = loss(new)  # the OOV rows read the generated embedding
    hook.remove()
    per_row = captured[0]  # [k, dim], equal rows
    e = per_row.mean(0)
    grad_e = torch.autograd.grad(cold, per_row, create_graph=True)[0].sum(0)  # e is every row's embedding
    warmed = e - eta * grad_e
    warm = loss({**new, "warm.item_id": warmed.expand(k, -1)})
    params = list(generator.parameters())
    grads = torch.autograd.grad(a * cold + (1 - a) * warm, params)
    before = [p.detach().clone() for p in params]
    cold, warm = float(cold.detach()), float(warm.detach())
    assert warm != pytest.approx(cold, rel=1e-4)  # the warm step matters on these rows
    history = warm_up_ids(model, MetaConfig(warmup_steps=1, warmup_rows=k, warmup_mix=a, warmup_lr=lr, warmup_step_size=eta), copies)
    assert history[0]["cold_loss"] == pytest.approx(cold, rel=1e-5)
    assert history[0]["warm_loss"] == pytest.approx(warm, rel=1e-5)
    for p, start, g in zip(params, before, grads):
        torch.testing.assert_close(p.detach() - start, -lr * g, rtol=1e-3, atol=1e-7)
