"""The cold-start prior: each ID table's out-of-vocabulary row, what an ID never seen in training
reads. ``model.oov_init: mean`` starts it as the mean of the seen rows (a batch of unseen IDs then
scores like the average seen ID), and a sparse feature's ID ``dropout`` trains it (its gradient is
non-zero in training with dropout > 0, exactly zero without)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import model_config
from msmt.data.fit import fit_schema
from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.spec.dataset import DatasetSpec
from msmt.spec.fitted import OOV
from msmt.training.losses import task_losses

ITEMS = [f"i{k}" for k in range(15)]


def fitted(item_dropout: float = 0.0):
    spec = DatasetSpec.model_validate(
        {
            "files": {"train": "in-memory"},
            "scenario": {"column": "scenario"},
            "features": {"sparse": [{"name": "item_id", "column": "item_id", "dropout": item_dropout}, "colour"], "dense": ["x"]},
            "tasks": [{"name": "click", "label": "click", "kind": "binary"}, {"name": "plays", "label": "plays", "kind": "count"}],
        }
    )
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "scenario": rng.choice(["a", "b"], n), "item_id": rng.choice(ITEMS, n), "colour": rng.choice(["red", "blue"], n),
            "x": rng.normal(size=n), "click": rng.integers(0, 2, n).astype(float), "plays": rng.poisson(2.0, n).astype(float),
        }
    )
    schema = fit_schema(frame, spec)
    return schema, frame, encode_frame(frame, schema)


def with_item(batch, ids: torch.Tensor) -> dict:
    """Row 0 of ``batch`` repeated once per item index in ``ids`` (everything else held fixed)."""
    rows = {k: v[:1].expand(len(ids), *v.shape[1:]).clone() for k, v in batch.items()}
    rows["sparse"][:, 0] = ids
    return rows


def seen_and_unseen(schema, batch):
    V = schema.vocab_sizes(schema.spec.features.sparse)[0]
    return with_item(batch, torch.arange(OOV + 1, V)), with_item(batch, torch.tensor([OOV]))


def test_mean_init_embeds_an_unseen_id_as_the_average_seen_id():
    schema, _, batch = fitted()
    torch.manual_seed(0)
    model = build_model(schema, model_config("mmoe", oov_init="mean")).eval()
    seen, unseen = seen_and_unseen(schema, batch)
    enc = model.encoder
    with torch.no_grad():
        torch.testing.assert_close(enc(unseen)[0], enc(seen).mean(0), rtol=0, atol=1e-7)
        scores, new = model(seen), model(unseen)
    for t in scores:  # the network is non-linear: its score of the mean embedding is near the mean score
        spread = scores[t].std()
        assert abs(new[t][0] - scores[t].mean()) < 0.05 * spread, t


def test_random_init_does_not():
    schema, _, batch = fitted()
    torch.manual_seed(0)
    model = build_model(schema, model_config("mmoe")).eval()
    seen, unseen = seen_and_unseen(schema, batch)
    with torch.no_grad():
        assert (model.encoder(unseen)[0] - model.encoder(seen).mean(0)).abs().max() > 1e-2


def test_a_linear_model_scores_unseen_ids_exactly_as_the_average_seen_id():
    schema, _, batch = fitted()
    model = build_model(schema, model_config("logistic_regression", oov_init="mean")).eval()
    with torch.no_grad():
        model.encoder.table.weight.normal_()  # any weights: the prior is set from them
        model.encoder.set_oov_to_mean()
        seen, unseen = seen_and_unseen(schema, batch)
        scores, new = model(seen), model(unseen)
    for t in scores:
        torch.testing.assert_close(new[t][0], scores[t].mean(), rtol=0, atol=1e-5)


def oov_row_gradient(item_dropout: float, train: bool = True) -> torch.Tensor:
    """The gradient of the item feature's OOV row after one backward pass on rows whose items
    were all seen in training (so only ID dropout can route a row to the OOV row)."""
    schema, _, batch = fitted(item_dropout)
    assert bool((batch["sparse"][:, 0] > OOV).all())
    torch.manual_seed(0)
    model = build_model(schema, model_config("mmoe", oov_init="mean")).train(train)
    out = model(batch)
    sum(task_losses(schema.spec.tasks, out, batch["labels"], batch["weight"]).values()).backward()
    start = int(model.encoder.offsets[0])
    return model.encoder.table.weight.grad[start + OOV]


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_id_dropout_trains_the_oov_row(rate):
    assert oov_row_gradient(rate).abs().sum() > 0


def test_without_id_dropout_or_outside_training_the_oov_row_gets_no_gradient():
    assert torch.equal(oov_row_gradient(0.0), torch.zeros(4))
    assert torch.equal(oov_row_gradient(0.5, train=False), torch.zeros(4))
