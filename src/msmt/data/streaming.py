"""Streaming Parquet: train on a file larger than memory, one row group at a time.

* :func:`fit_schema_streaming` fits every encoder in one pass over the row groups
  with the one fitter of :mod:`msmt.data.fit`; hashed features need no
  counting at all.
* :class:`ParquetStream` is an ``IterableDataset`` of encoded mini-batches. Row groups are the
  unit of sharding: group ``g`` of the epoch's (seeded) order goes to shard ``g mod S``, where
  the shards are (rank, data-loader worker) pairs, ``S = world * workers``. Each shard keeps a
  buffer of about ``buffer_rows`` encoded rows, shuffles it and emits full batches, so rows mix
  across row groups within the buffer's reach. The order is a pure function of (seed, epoch,
  rank, worker): re-reading an epoch reproduces it, which is how ``--resume`` finds its place.

Memory is bounded by one row group per worker plus the shuffle buffer, whatever the file size.
Validation and test splits are read into memory as usual (they are scored in full each epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from msmt.data.fit import SchemaFitter
from msmt.data.io import PARQUET_SUFFIXES, _as_text
from msmt.data.loading import string_columns
from msmt.data.tensorize import encode_frame
from msmt.data.validate import validate_frame
from msmt.spec.batch import Batch, num_rows, take
from msmt.spec.dataset import DatasetSpec
from msmt.spec.errors import ConfigError, DataError
from msmt.spec.fitted import FittedSchema


def open_parquet(path: str | Path) -> pq.ParquetFile:
    path = Path(path)
    if path.suffix.lower() not in PARQUET_SUFFIXES:
        raise ConfigError(f"{path}: train.streaming reads Parquet files only (.parquet / .pq)")
    if not path.exists():
        raise DataError(str(path), None, "no such file")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # not Parquet, truncated
        raise DataError(str(path), None, f"cannot read Parquet ({exc})") from None
    if pf.metadata.num_rows == 0:
        raise DataError(str(path), None, "empty file (no data rows)")
    return pf


def read_row_group(pf: pq.ParquetFile, index: int, spec: DatasetSpec, path: str) -> pd.DataFrame:
    frame = pf.read_row_group(index).to_pandas()
    for col in string_columns(spec):
        if col in frame.columns:
            frame[col] = _as_text(frame[col])
    frame.attrs["source"] = f"{path} (row group {index})"
    return frame


def check_streamable(spec: DatasetSpec) -> None:
    if spec.panel is not None:
        raise ConfigError("train.streaming: panel history needs the whole table; not available when streaming")
    if spec.behaviour is not None:
        raise ConfigError("train.streaming: dataset.behaviour needs the whole table (each row's earlier rows); not available when streaming")
    if not spec.files.validation:
        raise ConfigError("train.streaming: dataset.files.validation is required (a stream is not split)")


def fit_schema_streaming(path: str | Path, spec: DatasetSpec) -> FittedSchema:
    """The same encoders as :func:`~msmt.data.fit.fit_schema`, in one pass over row groups."""
    check_streamable(spec)
    pf = open_parquet(path)
    fitter = SchemaFitter(spec)
    for g in range(pf.num_row_groups):
        frame = read_row_group(pf, g, spec, str(path))
        validate_frame(frame, spec, with_labels=True)
        fitter.update(frame)
    return fitter.finish()


class ParquetStream(IterableDataset):
    """Encoded, shuffled mini-batches of one Parquet file; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        schema: FittedSchema,
        batch_size: int,
        buffer_rows: int = 65536,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
    ):
        super().__init__()
        self.path, self.schema, self.batch_size = str(path), schema, batch_size
        self.buffer_rows, self.seed, self.rank, self.world, self.workers = max(buffer_rows, batch_size), seed, rank, world, workers
        pf = open_parquet(path)
        self.num_row_groups, self.num_rows = pf.num_row_groups, pf.metadata.num_rows
        self.epoch = 1

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard, n_shards = self.rank * n_workers + worker, self.world * n_workers
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_row_groups)
        mine = order[shard::n_shards]
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, shard)) % (2**63))
        pf = pq.ParquetFile(self.path)
        buffer: list[Batch] = []
        held = 0
        for g in mine:
            chunk = encode_frame(read_row_group(pf, int(g), self.schema.spec, self.path), self.schema)
            buffer.append(chunk)
            held += num_rows(chunk)
            if held >= self.buffer_rows:
                rest = yield from self._drain(buffer, gen, keep_partial=True)
                buffer, held = ([rest], num_rows(rest)) if rest is not None else ([], 0)
        if buffer:
            yield from self._drain(buffer, gen, keep_partial=False)

    def _drain(self, buffer: list[Batch], gen: torch.Generator, keep_partial: bool):
        """Shuffle the buffer, yield full batches; return the leftover rows (or yield them last)."""
        merged = {k: torch.cat([b[k] for b in buffer]) for k in buffer[0]}
        n = num_rows(merged)
        order = torch.randperm(n, generator=gen)
        full = n - n % self.batch_size if keep_partial else n
        for start in range(0, full, self.batch_size):
            yield take(merged, order[start : start + self.batch_size])
        return take(merged, order[full:]) if keep_partial and full < n else None

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The epoch's batches for this rank (all its workers interleaved), from ``start_batch``.

        The DataLoader gets its own generator, seeded from (seed, epoch) by :meth:`_loader_generator`:
        without one, every pass over a DataLoader draws its base seed from the global torch RNG, and a
        mid-epoch ``--resume`` opens the interrupted epoch's loader once more than the uninterrupted
        run did, so that extra draw would shift the global RNG and with it every dropout mask after.
        """
        self.epoch = epoch
        loader = DataLoader(self, batch_size=None, num_workers=self.workers, generator=self._loader_generator(epoch))
        for i, batch in enumerate(loader):
            if i >= start_batch:
                yield batch

    def _loader_generator(self, epoch: int) -> torch.Generator:
        """A fresh generator for one epoch's DataLoader, a pure function of (seed, epoch).

        The loader draws its workers' base seed from it instead of from the global torch RNG, so
        opening a loader (once more on a resumed epoch) leaves the global RNG, and the dropout
        masks drawn from it, exactly as in an uninterrupted run.
        """
        return torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
