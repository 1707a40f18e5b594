"""Large vocabularies: hashed categorical features and sparse-gradient embedding tables."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from msmt.data.fit import fit_schema
from msmt.experiments.run import run_experiment
from msmt.rundir.layout import load_run
from msmt.spec.config import load_experiment
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema, HashedVocabulary
from msmt.training.optim import build_optimizers

FAST = ["train.epochs=1", "train.batch_size=128", "train.progress=false", "train.num_threads=1"]


def test_hashed_vocabulary_is_stable_and_in_range():
    vocab = HashedVocabulary((), buckets=7)
    tokens = pd.Series([f"user{i}" for i in range(1000)])
    ids = vocab.encode(tokens)
    assert ids.min() >= 2 and ids.max() <= 8 and vocab.size == 9
    assert len(np.unique(ids)) == 7  # 1,000 values spread over every bucket
    # the same ids in a fresh interpreter with another string-hash seed (Python's hash() would differ)
    code = "import pandas as pd;from msmt.spec.fitted import HashedVocabulary as H;print(H((),buckets=7).encode(pd.Series([f'user{i}' for i in range(1000)])).tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": "123", "PATH": ""}, check=True)
    assert json.loads(out.stdout) == ids.tolist()


def test_global_and_per_feature_buckets(tiny_spec, tiny_train):
    data = tiny_spec.model_dump(mode="json")
    data["features"]["hash_buckets"] = 16
    data["features"]["sparse"][0]["hash_buckets"] = 5  # its own setting wins
    spec = type(tiny_spec).model_validate(data)
    schema = fit_schema(tiny_train, spec)
    first, *rest = spec.features.sparse
    assert schema.vocabularies[first.name].size == 5 + 2
    assert all(schema.vocabularies[f.name].size == 16 + 2 for f in rest)
    loaded = FittedSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    for f in spec.features.sparse:
        col = tiny_train[f.column].astype("string")
        assert (loaded.vocabularies[f.name].encode(col) == schema.vocabularies[f.name].encode(col)).all()


def test_train_with_hashing_and_sparse_gradients(tiny_dir, tmp_path):
    sets = [*FAST, "dataset.features.hash_buckets=32", "train.sparse_embeddings=true"]
    metrics = run_experiment(load_experiment(tiny_dir / "experiment.yaml", sets), tmp_path / "run")
    assert 0.0 < metrics["val"]["overall"]["click"]["auc"] < 1.0
    run = load_run(tmp_path / "run")  # schema.json records the buckets; weights load strictly
    assert run.schema.vocabularies["user_id"].size == 34


def test_sparse_embeddings_use_sparse_adam_and_sparse_grads(tiny_dir, tiny_spec, tiny_train):
    from msmt.models import build_model

    cfg = load_experiment(tiny_dir / "experiment.yaml", [*FAST, "train.sparse_embeddings=true"])
    model = build_model(fit_schema(tiny_train, tiny_spec), cfg.model)
    opts = build_optimizers(model, [], cfg.train, distributed=False)
    assert [type(o).__name__ for o in opts] == ["AdamW", "SparseAdam"]
    emb = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))
    out = torch.nn.functional.embedding(torch.tensor([1, 2]), emb.weight, sparse=emb.sparse)
    out.sum().backward()
    assert emb.weight.grad.is_sparse
    cfg.train.max_grad_norm = 1.0
    with pytest.raises(ConfigError, match="max_grad_norm"):
        build_optimizers(model, [], cfg.train, distributed=False)
