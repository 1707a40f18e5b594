"""Streaming Parquet: one-pass encoder fitting, sharded row groups, buffered shuffling, training."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from msmt.data.fit import fit_schema
from msmt.data.streaming import ParquetStream, fit_schema_streaming
from msmt.data.tensorize import encode_frame
from msmt.experiments.run import run_experiment
from msmt.spec.config import load_experiment
from msmt.spec.errors import ConfigError

FAST = ["train.epochs=2", "train.batch_size=128", "train.progress=false", "train.num_threads=1"]


@pytest.fixture(scope="module")
def parquet_dir(tiny_dir, tmp_path_factory):
    """The tiny dataset with train.parquet in row groups of 150 rows (11 groups)."""
    out = tmp_path_factory.mktemp("pq")
    frame = pd.read_csv(tiny_dir / "train.csv", dtype={"user_id": str, "item_id": str})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / "train.parquet", row_group_size=150)
    spec = yaml.safe_load((tiny_dir / "dataset.yaml").read_text())
    spec["files"] = {k: str(tiny_dir / v) for k, v in spec["files"].items()}
    spec["files"]["train"] = str(out / "train.parquet")
    (out / "dataset.yaml").write_text(yaml.safe_dump(spec))
    exp = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    (out / "experiment.yaml").write_text(yaml.safe_dump(exp))
    return out


def _rows(batch) -> np.ndarray:
    """Each row as one float vector (sparse ids, multi ids, dense, labels) for multiset comparison."""
    parts = [batch["sparse"].double(), batch["multi.tags"].double(), batch["dense"].double(), batch["labels"].double()]
    m = torch.cat(parts, dim=1).numpy()
    return m[np.lexsort(m.T[::-1])]


def test_streaming_fit_equals_in_memory_fit(parquet_dir, tiny_train, tiny_spec):
    cfg = load_experiment(parquet_dir / "experiment.yaml", [])
    streamed = fit_schema_streaming(parquet_dir / "train.parquet", cfg.dataset)
    memory = fit_schema(tiny_train, tiny_spec)
    assert streamed.scenarios == memory.scenarios
    assert {k: v.values for k, v in streamed.vocabularies.items()} == {k: v.values for k, v in memory.vocabularies.items()}
    for name, stats in memory.dense.items():
        assert streamed.dense[name].mean == pytest.approx(stats.mean, rel=1e-9)
        assert streamed.dense[name].std == pytest.approx(stats.std, rel=1e-7)


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 0), (1, 2), (2, 2)])
def test_shards_cover_every_row_once_and_shuffle_per_epoch(parquet_dir, tiny_train, tiny_spec, world, workers):
    schema = fit_schema(tiny_train, tiny_spec)
    expected = _rows(encode_frame(tiny_train, schema))
    streams = [ParquetStream(parquet_dir / "train.parquet", schema, 64, buffer_rows=400, seed=3, rank=r, world=world, workers=workers) for r in range(world)]
    epoch1 = [b for s in streams for b in s.batches(1)]
    got = {k: torch.cat([b[k] for b in epoch1]) for k in epoch1[0]}
    np.testing.assert_array_equal(_rows(got), expected)  # every row exactly once over all shards
    assert all(len(b["scenario"]) <= 64 for b in epoch1)
    again = [b for s in streams for b in s.batches(1)]
    assert all(torch.equal(a["dense"], b["dense"]) for a, b in zip(epoch1, again))  # reproducible
    epoch2 = [b for s in streams for b in s.batches(2)]
    assert not torch.equal(epoch1[0]["dense"], epoch2[0]["dense"])  # a new order each epoch
    skipped = list(streams[0].batches(1, start_batch=3))  # resuming mid-epoch
    assert torch.equal(skipped[0]["dense"], [b for b in streams[0].batches(1)][3]["dense"])


def _keys(batch) -> list[bytes]:
    parts = [batch["sparse"].double(), batch["multi.tags"].double(), batch["dense"].double(), batch["labels"].double()]
    return [row.tobytes() for row in torch.cat(parts, dim=1).numpy()]


def _positions(batch, index: dict) -> list[int]:
    """The rows of ``batch`` by their position in the file (``index``: the rows no other row equals)."""
    return [index[key] for key in _keys(batch) if key in index]


def test_each_epoch_reads_the_row_groups_in_a_new_order_and_shuffles_rows_anew(parquet_dir, tiny_train, tiny_spec, tmp_path):
    """A buffer of 50 rows in batches of 50 (row groups of 150): an epoch's batches walk the row groups
    in the epoch's order (a new permutation each epoch); a file of one row group is reshuffled each epoch."""
    schema = fit_schema(tiny_train, tiny_spec)
    keys = _keys(encode_frame(tiny_train, schema))
    counts = Counter(keys)
    index = {key: i for i, key in enumerate(keys) if counts[key] == 1}
    assert len(index) > 0.99 * len(keys)
    stream = ParquetStream(parquet_dir / "train.parquet", schema, 50, buffer_rows=50, seed=3)
    orders = []
    for epoch in (1, 2):
        groups = [{p // 150 for p in _positions(b, index)} for b in stream.batches(epoch)]
        assert all(len(g) == 1 for g in groups)  # the buffer is drained after each row group
        orders.append(list(dict.fromkeys(g.pop() for g in groups)))
        assert sorted(orders[-1]) == list(range(stream.num_row_groups))
    assert orders[0] != orders[1]
    pq.write_table(pa.Table.from_pandas(tiny_train.iloc[:300], preserve_index=False), tmp_path / "one.parquet")
    one = ParquetStream(tmp_path / "one.parquet", schema, 50, buffer_rows=1000, seed=3)
    first, second = ([_positions(b, index) for b in one.batches(epoch)] for epoch in (1, 2))
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == sorted(i for i in index.values() if i < 300)
    assert first != second


def test_a_streamed_run_draws_its_batches_with_train_seed(parquet_dir):
    """``train.seed``, ``train.batch_size`` and ``train.shuffle_buffer`` reach the stream a run trains on."""
    from msmt.experiments.run import _load_streaming
    from msmt.training.distributed import Dist

    firsts = []
    for seed in (1, 2):
        cfg = load_experiment(parquet_dir / "experiment.yaml", [*FAST, "train.streaming=true", "train.shuffle_buffer=300", f"train.seed={seed}"])
        _, schema, encoded = _load_streaming(cfg, Dist())
        direct = ParquetStream(parquet_dir / "train.parquet", schema, 128, buffer_rows=300, seed=seed)
        got, want = next(encoded["train"].batches(1)), next(direct.batches(1))
        assert torch.equal(got["dense"], want["dense"]) and torch.equal(got["labels"], want["labels"])
        firsts.append(got["dense"])
    assert not torch.equal(*firsts)


def test_train_streaming_end_to_end(parquet_dir, tmp_path):
    sets = [*FAST, "train.streaming=true", "train.shuffle_buffer=500"]
    metrics = run_experiment(load_experiment(parquet_dir / "experiment.yaml", sets), tmp_path / "run")
    assert 0.5 < metrics["val"]["overall"]["click"]["auc"] < 1.0
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 2 and history["train_loss"].notna().all()


def test_a_closed_form_model_counts_the_stream_like_the_rows_in_memory(parquet_dir, tiny_dir, tmp_path):
    """popularity reads the training stream once (no gradient epoch) and counts what the in-memory run counts."""
    sets = [*FAST, "model.name=popularity"]
    memory = run_experiment(load_experiment(tiny_dir / "experiment.yaml", sets), tmp_path / "memory")
    streamed = run_experiment(load_experiment(parquet_dir / "experiment.yaml", [*sets, "train.streaming=true"]), tmp_path / "stream")
    assert streamed["val"] == memory["val"]
    assert len(pd.read_csv(tmp_path / "stream" / "history.csv")) == 1


def test_streaming_needs_parquet(tiny_dir, tmp_path):
    cfg = load_experiment(tiny_dir / "experiment.yaml", [*FAST, "train.streaming=true"])
    with pytest.raises(ConfigError, match="Parquet"):
        run_experiment(cfg, tmp_path / "run")
