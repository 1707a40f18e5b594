"""The one schema fitter: vocabularies, dense statistics, the scenario list and the panel encoding.

:class:`SchemaFitter` accumulates sufficient statistics chunk by chunk — category counts, and
per dense column (count, mean, sum of squared deviations) merged with Chan et al.'s parallel
update — so the same code fits a table in memory (one chunk, :func:`fit_schema`) and a Parquet
file row group by row group (:func:`msmt.data.streaming.fit_schema_streaming`). With one chunk
the statistics are exactly NumPy's ``mean`` and ``std`` of the column. The vocabulary rule (values
seen at least ``min_count`` times, the empty string never, sorted) is
:meth:`msmt.spec.fitted.Vocabulary.from_counts`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from msmt.data.encoders import split_multi, text
from msmt.data.panel import metric_values, panel_events, time_steps
from msmt.data.validate import numeric_column, require_columns, task_rows
from msmt.spec.dataset import DatasetSpec, PanelSpec
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import DenseStats, FittedSchema, HashedVocabulary, PanelEncoding, Vocabulary


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of a stream of numbers (NaN ignored)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: np.ndarray) -> None:
        x = x[~np.isnan(x)]
        if not len(x):
            return
        mean = x.mean()
        m2 = ((x - mean) ** 2).sum()
        n = self.n + len(x)
        delta = mean - self.mean
        self.mean = self.mean + delta * len(x) / n if self.n else float(mean)
        self.m2 = self.m2 + float(m2) + (delta * delta * self.n * len(x) / n if self.n else 0.0)
        self.n = n

    def stats(self) -> tuple[float, float]:
        """(mean, std) with std 1 for a constant or empty column (nothing to scale)."""
        if not self.n:
            return 0.0, 1.0
        std = float(np.sqrt(self.m2 / self.n))
        return float(self.mean), std if std > 1e-12 else 1.0


def _transformed(x: np.ndarray, transform: str) -> np.ndarray:
    return np.log1p(np.clip(x, 0.0, None)) if transform == "log1p" else x


class PanelFitter:
    """The panel part of the fitter: statistics of ``log1p(max(metric, 0))`` and the event set."""

    def __init__(self, panel: PanelSpec):
        self.panel = panel
        self.moments = {m: Moments() for m in panel.metrics}
        self.events: set[str] = set()

    def update(self, frame: pd.DataFrame) -> PanelFitter:
        panel = self.panel
        require_columns(frame, panel.columns)
        time_steps(frame, panel.time)  # an unreadable time column fails here, before training
        values = metric_values(frame, panel)
        for j, name in enumerate(panel.metrics):
            self.moments[name].update(_transformed(values[:, j], "log1p"))
        if panel.event:
            self.events.update(panel_events(frame, panel).dropna().tolist())
        return self

    def finish(self) -> PanelEncoding:
        panel = self.panel
        stats = {}
        for name, m in self.moments.items():
            mean, std = m.stats()
            stats[name] = {"mean": mean, "std": std}
        return PanelEncoding(
            window=int(panel.window),
            metrics=tuple(panel.metrics),
            events=tuple(sorted(self.events - {""})),
            metric_stats=stats,
            keys=tuple(panel.keys),
            time=panel.time,
            event=panel.event,
            group_keys=tuple(panel.group_keys),
            cross_section_keys=tuple(panel.cross_section_keys),
        )


class SchemaFitter:
    """Feed training rows with :meth:`update` (one or many chunks), then :meth:`finish`."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.feature_sets = (spec.features, spec.scenario.attributes)
        self.counts: dict[str, Counter] = {}
        self.moments: dict[str, Moments] = {}
        self.scenarios: set[str] = set()
        self.panel = PanelFitter(spec.panel) if spec.panel is not None else None
        self.labels: dict[str, Moments] = {t.name: Moments() for t in spec.tasks}
        self.scenario_labels: dict[str, dict[str, Moments]] = {t.name: {} for t in spec.tasks}

    def update(self, frame: pd.DataFrame) -> SchemaFitter:
        for fs in self.feature_sets:
            for f in fs.sparse:
                if f.hash_buckets is None:
                    self.counts.setdefault(f.name, Counter()).update(text(frame[f.column]).value_counts().to_dict())
            for f in fs.multi_sparse:
                tokens = split_multi(frame[f.column], f.separator).explode().dropna()
                self.counts.setdefault(f.name, Counter()).update(tokens.value_counts().to_dict())
            for f in fs.dense:
                self.moments.setdefault(f.name, Moments()).update(_transformed(numeric_column(frame, f.column), f.transform))
        codes, names = pd.factorize(text(frame[self.spec.scenario.column]))
        self.scenarios.update(names.tolist())
        for task in self.spec.tasks:
            if task.label in frame.columns:
                y = np.where(task_rows(frame, self.spec, task), numeric_column(frame, task.label), np.nan)  # its scenarios only
                self.labels[task.name].update(y)
                for code, scenario in enumerate(names):
                    self.scenario_labels[task.name].setdefault(scenario, Moments()).update(y[codes == code])
        if self.panel is not None:
            self.panel.update(frame)
        return self

    def finish(self) -> FittedSchema:
        vocabs: dict[str, Vocabulary] = {}
        dense: dict[str, DenseStats] = {}
        for fs in self.feature_sets:
            for f in (*fs.sparse, *fs.multi_sparse):
                if getattr(f, "hash_buckets", None) is not None:
                    vocabs[f.name] = HashedVocabulary((), buckets=f.hash_buckets)
                else:
                    vocabs[f.name] = Vocabulary.from_counts(self.counts.get(f.name, {}), f.min_count)
            for f in fs.dense:
                mean, std = self.moments.get(f.name, Moments()).stats()
                dense[f.name] = DenseStats(mean, std, f.transform)
        panel = self.panel.finish() if self.panel is not None else None
        scenarios = tuple(sorted(self.scenarios))
        for task in self.spec.tasks:  # a misspelt scenario would silently drop the task there
            unknown = sorted(set(task.scenarios or ()) - set(scenarios))
            if unknown:
                raise ConfigError(f"tasks.{task.name}.scenarios: {unknown} not among the training data's scenarios {list(scenarios)}")
        return FittedSchema(self.spec, scenarios, vocabs, dense, panel, self._task_stats(scenarios))

    def _task_stats(self, scenarios: tuple[str, ...]) -> dict[str, dict]:
        stats = {}
        for name, m in self.labels.items():
            if not m.n:
                continue
            per = self.scenario_labels[name]
            stats[name] = {
                "mean": float(m.mean),
                "var": float(m.m2 / m.n),
                "scenario_mean": [float(per[s].mean) if s in per and per[s].n else float(m.mean) for s in scenarios],
            }
        return stats


def fit_schema(train: pd.DataFrame, spec: DatasetSpec) -> FittedSchema:
    """Fit vocabularies, dense statistics, the scenario list and the panel encoding on the training
    split; with ``dataset.behaviour``, also the task means its rates shrink to and the statistics
    of its features over the training rows (each row's earlier training rows, :mod:`msmt.data.behaviour`)."""
    if spec.behaviour is None:
        return SchemaFitter(spec).update(train).finish()
    from msmt.data.behaviour import add_behaviour, behaviour_priors

    priors = behaviour_priors(train, spec)
    return replace(SchemaFitter(spec).update(add_behaviour(train, spec, priors)).finish(), behaviour_priors=priors)


def fit_panel(frame: pd.DataFrame, panel: PanelSpec) -> PanelEncoding:
    """The panel encoding alone (what :func:`fit_schema` stores as ``schema.panel``)."""
    return PanelFitter(panel).update(frame).finish()
