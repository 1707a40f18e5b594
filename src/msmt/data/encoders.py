"""Encoders fitted on the training split only and saved as ``schema.json``.

Index conventions (shared by every layer):

* categorical vocabularies: 0 = padding, 1 = out-of-vocabulary, 2.. = values seen in training
  (at least ``min_count`` times);
* scenarios: 0 = unknown scenario, 1..P = training scenarios in sorted order;
* dense features: ``(transform(x) - mean) / std`` with training statistics; missing -> 0 (the mean).

``train``, ``evaluate``, ``predict`` and ``serve`` all encode through :class:`FittedSchema`,
so scoring can never encode differently from training (FuxiCTR's ``feature_map.json`` idea).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from msmt.data.io import atomic_write_text
from msmt.data.validate import numeric_column
from msmt.spec.dataset import DatasetSpec, DenseFeature, MultiSparseFeature, SparseFeature
from msmt.spec.errors import ConfigError

PAD, OOV = 0, 1
UNKNOWN_SCENARIO = 0
SCHEMA_VERSION = 1


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna("<NA>")


def split_multi(series: pd.Series, separator: str) -> pd.Series:
    return series.astype("string").fillna("").str.split(separator)


@dataclass(frozen=True)
class Vocabulary:
    """Category -> index, with 0 for padding and 1 for anything unseen."""

    values: tuple[str, ...]
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({v: i + 2 for i, v in enumerate(self.values)})

    @classmethod
    def fit(cls, tokens: pd.Series, min_count: int = 1) -> Vocabulary:
        counts = tokens.value_counts()
        kept = sorted(str(v) for v, c in counts.items() if c >= min_count and str(v) != "")
        return cls(tuple(kept))

    @property
    def size(self) -> int:
        """Rows of the embedding table: values + padding + OOV."""
        return len(self.values) + 2

    def encode(self, tokens: pd.Series) -> np.ndarray:
        index = self._index
        return np.fromiter((index.get(t, OOV) for t in tokens), dtype=np.int64, count=len(tokens))

    def to_json(self) -> list[str]:
        return list(self.values)


@dataclass(frozen=True)
class HashedVocabulary(Vocabulary):
    """Category -> 2 + stable_hash(category) mod ``buckets``: no fitting, constant memory.

    The hash is pandas' SipHash with its fixed key, so every process (training ranks, a later
    ``predict``, the scoring service) maps a value to the same row. Index 1 (OOV) is unused.
    """

    buckets: int = 1

    @property
    def size(self) -> int:
        return self.buckets + 2

    def encode(self, tokens: pd.Series) -> np.ndarray:
        values = np.asarray(tokens, dtype=object)
        if not len(values):
            return np.zeros(0, dtype=np.int64)
        hashed = pd.util.hash_array(values, categorize=False)
        return (hashed % np.uint64(self.buckets)).astype(np.int64) + 2

    def to_json(self) -> dict[str, int]:
        return {"hash_buckets": self.buckets}


def vocabulary_from_json(data: list[str] | dict[str, int]) -> Vocabulary:
    if isinstance(data, dict):
        return HashedVocabulary((), buckets=int(data["hash_buckets"]))
    return Vocabulary(tuple(data))


@dataclass(frozen=True)
class DenseStats:
    mean: float
    std: float
    transform: str = "none"

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.transform == "log1p":
            x = np.log1p(np.clip(x, 0.0, None))
        z = (x - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, transform: str) -> DenseStats:
        if transform == "log1p":
            x = np.log1p(np.clip(x, 0.0, None))
        x = x[~np.isnan(x)]
        mean = float(x.mean()) if len(x) else 0.0
        std = float(x.std()) if len(x) else 1.0
        return cls(mean, std if std > 1e-12 else 1.0, transform)


@dataclass(frozen=True)
class FittedSchema:
    """The dataset spec plus every fitted encoder: what a model is built from and scored with."""

    spec: DatasetSpec
    scenarios: tuple[str, ...]
    vocabularies: dict[str, Vocabulary]
    dense: dict[str, DenseStats]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. panel-sequence encoders

    # -- sizes used to build layers ---------------------------------------------------
    @property
    def num_scenarios(self) -> int:
        """Known scenarios; index 0 is reserved for unknown ones."""
        return len(self.scenarios)

    def vocab_sizes(self, features: tuple[SparseFeature | MultiSparseFeature, ...]) -> list[int]:
        return [self.vocabularies[f.name].size for f in features]

    def scenario_index(self, value: str) -> int:
        try:
            return self.scenarios.index(str(value)) + 1
        except ValueError:
            return UNKNOWN_SCENARIO

    # -- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "dataset": self.spec.model_dump(mode="json"),
            "scenarios": list(self.scenarios),
            "vocabularies": {k: v.to_json() for k, v in self.vocabularies.items()},
            "dense": {k: {"mean": v.mean, "std": v.std, "transform": v.transform} for k, v in self.dense.items()},
            "extra": self.extra,
        }

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedSchema:
        if data.get("version") != SCHEMA_VERSION:
            raise ConfigError(f"schema.json: unsupported version {data.get('version')!r}")
        return cls(
            spec=DatasetSpec.model_validate(data["dataset"]),
            scenarios=tuple(data["scenarios"]),
            vocabularies={k: vocabulary_from_json(v) for k, v in data["vocabularies"].items()},
            dense={k: DenseStats(**v) for k, v in data["dense"].items()},
            extra=data.get("extra", {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> FittedSchema:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file (is this a run directory?)") from None


def fit_schema(train: pd.DataFrame, spec: DatasetSpec) -> FittedSchema:
    """Fit vocabularies, dense statistics and the scenario list on the training split."""
    vocabs: dict[str, Vocabulary] = {}
    dense: dict[str, DenseStats] = {}
    feature_sets = (spec.features, spec.scenario.attributes)
    for fs in feature_sets:
        for f in fs.sparse:
            if f.hash_buckets is not None:
                vocabs[f.name] = HashedVocabulary((), buckets=f.hash_buckets)
            else:
                vocabs[f.name] = Vocabulary.fit(_text(train[f.column]), f.min_count)
        for f in fs.multi_sparse:
            tokens = split_multi(train[f.column], f.separator).explode()
            vocabs[f.name] = Vocabulary.fit(tokens.dropna(), f.min_count)
        for f in fs.dense:
            dense[f.name] = DenseStats.fit(numeric_column(train, f.column), f.transform)
    scenarios = tuple(sorted(_text(train[spec.scenario.column]).unique().tolist()))
    extra: dict[str, Any] = {}
    if spec.panel is not None:
        from msmt.data.panel import fit_panel

        extra["panel"] = fit_panel(train, spec.panel)
    return FittedSchema(spec, scenarios, vocabs, dense, extra)


def encode_sparse(frame: pd.DataFrame, schema: FittedSchema, feats: tuple[SparseFeature, ...]) -> np.ndarray:
    """[N, len(feats)] int64 indices."""
    cols = [schema.vocabularies[f.name].encode(_text(frame[f.column])) for f in feats]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0), dtype=np.int64)


def encode_dense(frame: pd.DataFrame, schema: FittedSchema, feats: tuple[DenseFeature, ...]) -> np.ndarray:
    """[N, len(feats)] float32, standardised."""
    cols = [schema.dense[f.name].apply(numeric_column(frame, f.column)) for f in feats]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0), dtype=np.float32)


def encode_multi(frame: pd.DataFrame, schema: FittedSchema, feat: MultiSparseFeature) -> np.ndarray:
    """[N, max_length] int64 indices, right-padded with 0."""
    vocab = schema.vocabularies[feat.name]
    out = np.zeros((len(frame), feat.max_length), dtype=np.int64)
    index = vocab._index
    for row, tokens in enumerate(split_multi(frame[feat.column], feat.separator)):
        ids = [index.get(t, OOV) for t in tokens if t][: feat.max_length]
        out[row, : len(ids)] = ids
    return out


def encode_scenarios(frame: pd.DataFrame, schema: FittedSchema) -> np.ndarray:
    """[N] int64 scenario indices, 0 for scenarios unseen in training."""
    lookup = {s: i + 1 for i, s in enumerate(schema.scenarios)}
    values = _text(frame[schema.spec.scenario.column])
    return np.fromiter((lookup.get(v, UNKNOWN_SCENARIO) for v in values), dtype=np.int64, count=len(values))
