"""The fitted schema: the dataset spec plus every encoder fitted on the training split.

Saved as ``schema.json`` in a run directory and read by ``evaluate``, ``predict`` and ``serve``,
so scoring can never encode differently from training (FuxiCTR's ``feature_map.json`` idea).
Fitting lives in :mod:`msmt.data.fit`; these are the values it produces.

Index conventions (shared by every layer):

* categorical vocabularies: 0 = padding, 1 = out-of-vocabulary, 2.. = values seen in training
  (at least ``min_count`` times);
* scenarios: 0 = unknown scenario, 1..P = training scenarios in sorted order;
* dense features: ``(transform(x) - mean) / std`` with training statistics; missing -> 0 (the mean).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from msmt.spec.dataset import DatasetSpec, MultiSparseFeature, SparseFeature
from msmt.spec.errors import ConfigError

PAD, OOV = 0, 1
UNKNOWN_SCENARIO = 0
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Vocabulary:
    """Category -> index, with 0 for padding and 1 for anything unseen."""

    values: tuple[str, ...]
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({v: i + 2 for i, v in enumerate(self.values)})

    @classmethod
    def from_counts(cls, counts: dict, min_count: int = 1) -> Vocabulary:
        """The values seen at least ``min_count`` times (the empty string never), sorted."""
        return cls(tuple(sorted(str(v) for v, c in counts.items() if c >= min_count and str(v) != "")))

    @property
    def size(self) -> int:
        """Rows of the embedding table: values + padding + OOV."""
        return len(self.values) + 2

    def encode(self, tokens) -> np.ndarray:
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

    def encode(self, tokens) -> np.ndarray:
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
    """Standardisation of one dense column: ``(transform(x) - mean) / std``; missing -> 0."""

    mean: float
    std: float
    transform: str = "none"

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.transform == "log1p":
            x = np.log1p(np.clip(x, 0.0, None))
        z = (x - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)


@dataclass(frozen=True)
class PanelEncoding:
    """How a panel's trailing history is encoded (``seq.*`` batch keys; :mod:`msmt.data.panel`).

    ``metric_stats[m]`` holds the training ``mean`` and ``std`` of ``log1p(max(m, 0))``;
    ``events`` the event vocabulary (index 0 = no row that step, 1 = unseen event, 2.. = these).
    """

    window: int
    metrics: tuple[str, ...]
    events: tuple[str, ...] = ()
    metric_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    time: str = ""
    event: str | None = None
    group_keys: tuple[str, ...] = ()  # PanelSpec.group_keys: () = no group channel
    cross_section_keys: tuple[str, ...] = ()  # PanelSpec.cross_section_keys: () = no cross-section channel

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "metrics": list(self.metrics),
            "metric_stats": self.metric_stats,
            "events": list(self.events),
            "keys": list(self.keys),
            "time": self.time,
            "event": self.event,
            "group_keys": list(self.group_keys),
            "cross_section_keys": list(self.cross_section_keys),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PanelEncoding:
        return cls(
            window=int(data["window"]),
            metrics=tuple(data["metrics"]),
            events=tuple(data.get("events", ())),
            metric_stats={k: dict(v) for k, v in data.get("metric_stats", {}).items()},
            keys=tuple(data.get("keys", ())),
            time=data.get("time", ""),
            event=data.get("event"),
            group_keys=tuple(data.get("group_keys", ())),
            cross_section_keys=tuple(data.get("cross_section_keys", ())),
        )


@dataclass(frozen=True)
class FittedSchema:
    """The dataset spec plus every fitted encoder: what a model is built from and scored with."""

    spec: DatasetSpec
    scenarios: tuple[str, ...]
    vocabularies: dict[str, Vocabulary]
    dense: dict[str, DenseStats]
    panel: PanelEncoding | None = None
    # per task: training-label "mean" and "var", and "scenario_mean" per scenario (schema order);
    # the naive forecasts' prior and the loss scale (absent in runs written before 0.2)
    task_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ``dataset.behaviour``: each summarised task's training mean, the m of its smoothed rate (msmt.data.behaviour)
    behaviour_priors: dict[str, float] = field(default_factory=dict)

    # -- sizes used to build layers ---------------------------------------------------
    @property
    def num_scenarios(self) -> int:
        """Known scenarios; index 0 is reserved for unknown ones."""
        return len(self.scenarios)

    def vocab_sizes(self, features: tuple[SparseFeature | MultiSparseFeature, ...]) -> list[int]:
        return [self.vocabularies[f.name].size for f in features]

    def label_stat(self, task: str, key: str, default: float = 1.0) -> float:
        """A training-label statistic of ``task`` ("mean", "var"); ``default`` for older runs."""
        return float(self.task_stats.get(task, {}).get(key, default))

    def scenario_tasks(self) -> list[list[bool]]:
        """[P][T]: whether training scenario p (index p + 1) has task t (``tasks.<name>.scenarios``)."""
        return [[t.exists_in(s) for t in self.spec.tasks] for s in self.scenarios]

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
            "extra": {
                **({"panel": self.panel.to_dict()} if self.panel is not None else {}),
                **({"behaviour_priors": self.behaviour_priors} if self.behaviour_priors else {}),
            },
            "task_stats": self.task_stats,
        }

    def to_json(self) -> str:
        """The text of ``schema.json`` (written by :mod:`msmt.rundir.layout`)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedSchema:
        if data.get("version") != SCHEMA_VERSION:
            raise ConfigError(f"schema.json: unsupported version {data.get('version')!r}")
        panel = (data.get("extra") or {}).get("panel")
        return cls(
            spec=DatasetSpec.model_validate(data["dataset"]),
            scenarios=tuple(data["scenarios"]),
            vocabularies={k: vocabulary_from_json(v) for k, v in data["vocabularies"].items()},
            dense={k: DenseStats(**v) for k, v in data["dense"].items()},
            panel=PanelEncoding.from_dict(panel) if panel else None,
            task_stats=data.get("task_stats", {}),
            behaviour_priors=(data.get("extra") or {}).get("behaviour_priors", {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> FittedSchema:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file (is this a run directory?)") from None
