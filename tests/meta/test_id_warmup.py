"""ID warm-up (Meta-Embedding): unseen IDs get a generated embedding; warm-up trains only the generator."""

from __future__ import annotations

import numpy as np
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
