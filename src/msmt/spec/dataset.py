"""Dataset specification: features, tasks and scenarios as frozen, validated values.

A dataset config (YAML) is parsed into a :class:`DatasetSpec`. Every spec is immutable
(``frozen=True``) and rejects unknown keys (``extra="forbid"``), so a typo in a YAML file
is an error that names the key. Specs never own tensors or ``nn.Module`` objects: the
fitted encoders live in :mod:`msmt.data.encoders` and the layers in :mod:`msmt.layers`.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Spec(BaseModel):
    """Base for every spec: immutable and strict about keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TaskKind(str, Enum):
    """What a task predicts; decides its output, loss and metrics."""

    BINARY = "binary"  # output: logit; loss: BCE; metrics: auc, logloss
    COUNT = "count"  # output: log-rate; loss: Poisson NLL; metrics: smape, nmae, mape, rmse, deviance
    REGRESSION = "regression"  # output: value; loss: MSE; metrics: smape, nmae, mape, rmse


class Task(Spec):
    """One prediction target.

    ``product_of`` declares a task whose probability is the product of other binary tasks'
    probabilities (ESMM's CTCVR = CTR x CVR); such a model composes it itself and the trainer
    needs no special case.

    ``distribution`` (count tasks): ``poisson`` (the default, M2M's) or ``negative_binomial``
    (NB2: Var = λ + αλ², a learned dispersion α per task, or per task and scenario with
    ``dispersion: scenario``) for over-dispersed counts.

    ``history`` (panel datasets): the panel metric whose past values forecast this task — the
    naive forecasts (last value, trailing mean, same weekday last week) and the offset of
    forecast-aware models read it. Default: the task's label when it is a panel metric. For a
    binary task the history is read as an indicator (value > 0), e.g. ``active`` from ``cost``.

    ``scenarios``: the scenario values in which this task exists (default: every scenario). In
    any other scenario the task has no label (its column may be empty there), no loss and no
    metric; a first-level page with ``stay`` and a second-level page with ``like`` is
    ``stay: {scenarios: [first]}``, ``like: {scenarios: [second]}``.

    ``weight_column``: a per-row loss weight of this task alone, multiplied with the dataset's
    ``sample_weight`` (which weighs every task of a row).
    """

    name: str  # the task's name (output pred_<name>)
    label: str  # label column
    kind: TaskKind
    weight: float = Field(default=1.0, ge=0.0)  # weight of this task's loss
    product_of: tuple[str, ...] = ()  # binary tasks (or auxiliary outputs) whose probabilities multiply to this one (ESMM)
    distribution: Literal["poisson", "negative_binomial"] = "poisson"
    dispersion: Literal["task", "scenario"] = "task"
    history: str | None = None  # panel metric whose past forecasts this task (default: the label when it is a panel metric)
    scenarios: tuple[str, ...] | None = None  # scenario values where this task exists (default: all); no label, loss or metric elsewhere
    weight_column: str | None = None  # per-row loss weight of this task alone, times sample_weight

    @field_validator("scenarios", mode="before")
    @classmethod
    def _scenario_values(cls, value: object) -> object:
        """Scenario values as text, as the scenario column is read (``[1, 2]`` ≡ ``["1", "2"]``)."""
        if value is None:
            return None
        if isinstance(value, str | int):
            value = [value]
        values = [str(v) for v in value]
        if not values:
            raise ValueError("an empty list: a task must exist in at least one scenario (omit the key for all)")
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate scenario values in {values}")
        return tuple(values)

    def exists_in(self, scenario: str) -> bool:
        """Whether this task exists in scenario ``scenario`` (a value of the scenario column)."""
        return self.scenarios is None or str(scenario) in self.scenarios

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: object) -> object:
        allowed = [k.value for k in TaskKind]
        if isinstance(value, str) and value not in allowed:
            raise ValueError(f"unknown task kind '{value}' (expected one of {allowed})")
        return value


class AuxiliaryOutput(Spec):
    """A model output with no training label, used as a factor of a ``product_of`` task.

    ESMM's CVR tower is the example: pCVR is never fitted on its own (only through
    pCTCVR = pCTR x pCVR over all impressions) but is a prediction users want. A model
    returns these through ``auxiliary_outputs(batch)``, never from ``forward`` (whose keys
    are exactly the tasks). ``label`` optionally names an evaluation-only column (e.g. the
    simulator's counterfactual conversion of every impression); it is never a feature.
    """

    name: str  # output name
    kind: TaskKind = TaskKind.BINARY
    label: str | None = None  # evaluation-only label column (never a feature)


class SparseFeature(Spec):
    """A categorical column, embedded through a vocabulary with an out-of-vocabulary index.

    ``hash_buckets``: instead of a vocabulary, hash each value into this many embedding rows
    (for vocabularies too large to hold; colliding values share a row). ``features.hash_buckets``
    sets it for every sparse feature that does not set its own.

    ``dropout``: in training, each row's value is replaced by the out-of-vocabulary index with
    this probability (ID dropout), so the OOV row is trained as the population's embedding (what
    a value never seen in training gets) and an ID embedding cannot memorise every row alone.
    """

    name: str  # feature name (default: the column)
    column: str  # column in the data
    min_count: int = Field(default=1, ge=1)  # values seen fewer times in training share the out-of-vocabulary row
    hash_buckets: int | None = Field(default=None, ge=1)  # hash values into this many rows instead of a vocabulary
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # share of training rows whose value is replaced by out-of-vocabulary (ID dropout)


class DenseFeature(Spec):
    """A numeric column, standardised with training-split statistics (optionally after log1p)."""

    name: str  # feature name (default: the column)
    column: str  # column in the data
    transform: Literal["none", "log1p"] = "none"


class MultiSparseFeature(Spec):
    """A multi-valued categorical column ("Comedy Romance"), mean-pooled over its values."""

    name: str  # feature name (default: the column)
    column: str  # column in the data
    separator: str = " "  # between the values in a cell
    max_length: int = Field(default=8, ge=1)  # values kept per row
    min_count: int = Field(default=1, ge=1)  # values seen fewer times share the out-of-vocabulary row


def _named(items: list, kind: str) -> list:
    """Accept ``[col, ...]`` as shorthand for ``[{name: col, column: col}, ...]``.

    A bare string (``dense: price``) is an error naming the key: iterating it would read the
    name letter by letter."""
    if items is None:
        return []
    if not isinstance(items, (list, tuple)):
        hint = f" (write [{items}])" if isinstance(items, str) else ""
        raise ValueError(f"'{kind}' must be a list of columns, got the {type(items).__name__} {items!r}{hint}")
    out = []
    for item in items:
        if isinstance(item, str):
            out.append({"name": item, "column": item})
        elif isinstance(item, dict) and "column" in item and "name" not in item:
            out.append({**item, "name": item["column"]})
        elif isinstance(item, dict) and "name" in item and "column" not in item:
            out.append({**item, "column": item["name"]})
        else:
            out.append(item)
    return out


class FeatureSet(Spec):
    """Feature columns grouped by kind."""

    sparse: tuple[SparseFeature, ...] = ()  # categorical columns (embedded)
    dense: tuple[DenseFeature, ...] = ()  # numeric columns (standardised)
    multi_sparse: tuple[MultiSparseFeature, ...] = ()  # multi-valued categorical columns (mean-pooled embeddings)
    hash_buckets: int | None = Field(default=None, ge=1)  # default for every sparse feature

    @model_validator(mode="after")
    def _default_buckets(self) -> FeatureSet:
        if self.hash_buckets is not None:
            filled = tuple(
                f if f.hash_buckets is not None else f.model_copy(update={"hash_buckets": self.hash_buckets})
                for f in self.sparse
            )
            object.__setattr__(self, "sparse", filled)
        return self

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        if isinstance(data, dict):
            data = dict(data)
            for kind in ("sparse", "dense", "multi_sparse"):
                if kind in data:
                    data[kind] = _named(data[kind], kind)
        return data

    @property
    def columns(self) -> list[str]:
        return [f.column for f in (*self.sparse, *self.dense, *self.multi_sparse)]

    @property
    def names(self) -> list[str]:
        return [f.name for f in (*self.sparse, *self.dense, *self.multi_sparse)]


class ScenarioSpec(Spec):
    """The scenario column and, optionally, the attributes that describe each scenario.

    Attributes (traffic volume, ad format, ...) are what M2M builds its scenario knowledge
    from; they also let a model score a scenario it never saw in training.
    """

    column: str  # column naming each row's scenario
    attributes: FeatureSet = FeatureSet()  # features that describe a scenario (same for all its rows)


class SplitSpec(Spec):
    """How to carve validation/test splits out of the training file when they are not given."""

    method: Literal["random", "time"] = "random"  # random rows, or the latest rows by time_column
    time_column: str | None = None  # column ordering the rows (numbers or dates) for method: time
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)  # share of rows for validation
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)  # share of rows for test
    seed: int = 0  # seed of the random split
    # rolling-origin backtest (Tashman, 2000): fold k > 0 drops the latest k test-sized blocks of rows first, so
    # fold 1's test split is the rows just before the real test split: choose settings there, never on the test
    backtest_fold: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _time_needs_column(self) -> SplitSpec:
        if self.method == "time" and not self.time_column:
            raise ValueError("split.method 'time' needs split.time_column")
        if self.backtest_fold and (self.method != "time" or not self.test_fraction):
            raise ValueError("split.backtest_fold: a backtest fold needs split.method 'time' and split.test_fraction > 0")
        return self


class FileSet(Spec):
    """Data files (CSV or Parquet). Paths are resolved relative to the dataset config."""

    train: str  # CSV or Parquet with the training rows
    validation: str | None = None  # validation rows (default: split off train by `split`)
    test: str | None = None  # test rows (optional)


class PanelSpec(Spec):
    """Trailing-window history of an (entity, time) panel: what M2M's sequences are built from.

    Each row is one entity (``keys``) at one time step (``time``: integer steps, or dates read
    as days). Its history is the ``window`` steps before its own step: the ``metrics`` columns
    (log1p, then standardised with training statistics) and the categorical ``event`` column,
    with a mask for steps the entity has no row for. A row's own step is never part of it.
    """

    keys: tuple[str, ...]  # columns identifying an entity (e.g. advertiser_id, scenario)
    time: str  # time step column: integers or dates (days)
    window: int = Field(default=14, ge=1, le=366)  # past steps in each row's history
    metrics: tuple[str, ...] = ()  # numeric columns whose past values form the history
    event: str | None = None  # categorical column whose past values form the history
    group_keys: tuple[str, ...] = ()  # a coarser entity in keys (e.g. [advertiser_id]): each row also gets its group's other units' metrics per past step
    # the cross-section (e.g. [scenario]): each row also gets the other units of its scenario summed per
    # past step (seq.cross_*), so a new scenario's level is read off its first days' other advertisers
    cross_section_keys: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _something_to_track(self) -> PanelSpec:
        if not self.keys:
            raise ValueError("panel.keys: at least one entity key column is required")
        if not self.metrics and not self.event:
            raise ValueError("panel: declare 'metrics' and/or 'event'")
        if self.time in self.keys:
            raise ValueError(f"panel.time '{self.time}' must not also be a key column")
        for name in ("group_keys", "cross_section_keys"):
            chosen = getattr(self, name)
            outside = [k for k in chosen if k not in self.keys]
            if outside:
                raise ValueError(f"panel.{name}: {outside} not in panel.keys {list(self.keys)}")
            if chosen and set(chosen) == set(self.keys):
                raise ValueError(f"panel.{name} must be a strict subset of panel.keys (a group of several units)")
        return self

    @property
    def columns(self) -> list[str]:
        return [*self.keys, self.time, *self.metrics, *([self.event] if self.event else [])]


BEHAVIOUR_PREFIX = "behaviour."  # names of the dense features a `behaviour:` section derives


class BehaviourSpec(Spec):
    """What a key (a user) did before each row: the outcome rates of its earlier rows.

    For each row, the rows of the same ``key`` with a strictly earlier ``time`` (at most the
    latest ``length`` of them; rows at the same time never see each other) give, per task in
    ``tasks``, the smoothed rate ``(sum of labels + prior · m) / (n + prior)`` with ``m`` the
    task's training mean, and the number of earlier rows ``n``. They become dense features named
    ``behaviour.<task>_rate`` and ``behaviour.events`` (log1p), standardised like any dense
    feature, so every model reads them. Earlier rows are the training rows for the training
    split, and for a later split or a file to score also the rows before it (``--context`` and
    the file's own labelled rows): a user new to the model is known by what they did so far.
    """

    key: str  # column of the entity whose earlier rows count (e.g. user_id)
    time: str  # column ordering the rows (numbers or dates); only strictly earlier rows count
    tasks: tuple[str, ...]  # tasks whose earlier labels are summarised (binary or count)
    length: int = Field(default=100, ge=1, le=100_000)  # the latest earlier rows summarised per row
    prior: float = Field(default=5.0, ge=0.0)  # pseudo-rows of the task's training mean in each rate

    @property
    def feature_names(self) -> list[str]:
        """The derived dense features, in order: one rate per task, then the event count."""
        return [f"{BEHAVIOUR_PREFIX}{t}_rate" for t in self.tasks] + [f"{BEHAVIOUR_PREFIX}events"]


class DatasetSpec(Spec):
    """Everything msmt needs to know about a dataset: files, scenario, features, tasks."""

    name: str = "dataset"  # a name for reports
    files: FileSet  # the data files
    split: SplitSpec = SplitSpec()  # how validation/test are carved out of files.train when not given
    scenario: ScenarioSpec  # the scenario column and its attributes
    features: FeatureSet = FeatureSet()  # feature columns by kind
    tasks: tuple[Task, ...]  # what to predict: at least one
    auxiliary: tuple[AuxiliaryOutput, ...] = ()  # label-free outputs used as factors of a product_of task (ESMM's CVR)
    sample_weight: str | None = None  # column of per-row loss weights
    group: str | None = None  # column of the unit of meta-learning and personal blocks (user, advertiser)
    panel: PanelSpec | None = None  # trailing history of an (entity, time) panel (advertiser data)
    behaviour: BehaviourSpec | None = None  # each row's key's earlier outcomes as dense features (a user's history)

    @model_validator(mode="after")
    def _behaviour_features(self) -> DatasetSpec:
        """Declare the dense features ``behaviour`` derives (once: a spec read back from a run's
        schema already lists them); any other ``behaviour.*`` dense name is refused."""
        derived = self.behaviour.feature_names if self.behaviour is not None else []
        dense = list(self.features.dense)
        stray = [f.name for f in dense if f.name.startswith(BEHAVIOUR_PREFIX) and f.name not in derived]
        if stray:
            raise ValueError(f"features.dense: {stray}: names starting with '{BEHAVIOUR_PREFIX}' are derived by the behaviour section")
        have = {f.name for f in dense}
        for name in derived:
            if name not in have:
                dense.append(DenseFeature(name=name, column=name, transform="log1p" if name == derived[-1] else "none"))
        if len(dense) != len(self.features.dense):
            object.__setattr__(self, "features", self.features.model_copy(update={"dense": tuple(dense)}))
        return self

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if not self.tasks:
            raise ValueError("tasks: at least one task is required")
        if self.split.backtest_fold and (self.files.validation or self.files.test):
            raise ValueError("split.backtest_fold: files.validation / files.test are given, so no split is carved out to move earlier")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: duplicate task names in {names}")
        aux = [a.name for a in self.auxiliary]
        if len(set(names + aux)) != len(names) + len(aux):
            raise ValueError(f"auxiliary: names must differ from each other and from the tasks ({aux})")
        by_name = {t.name: t for t in self.tasks}
        for task in self.tasks:
            for part in task.product_of:
                if part not in names and part not in aux:
                    raise ValueError(f"tasks.{task.name}.product_of: unknown task or auxiliary output '{part}'")
                if part == task.name or (part in by_name and by_name[part].product_of):
                    raise ValueError(f"tasks.{task.name}.product_of: '{part}' must be a plain (non-product) output")
                if part in by_name and by_name[part].kind != TaskKind.BINARY:
                    raise ValueError(f"tasks.{task.name}.product_of: '{part}' is not a binary task")
            if task.product_of and task.kind != TaskKind.BINARY:
                raise ValueError(f"tasks.{task.name}.product_of: only binary tasks can be products of probabilities")
        for a in self.auxiliary:
            if a.kind != TaskKind.BINARY:
                raise ValueError(f"auxiliary.{a.name}.kind: only binary auxiliary outputs are supported")
        for task in self.tasks:
            if task.distribution != "poisson" and task.kind != TaskKind.COUNT:
                raise ValueError(f"tasks.{task.name}.distribution: only count tasks have a distribution ({task.kind.value} task)")
            if task.history is not None:
                metrics = self.panel.metrics if self.panel else ()
                if task.history not in metrics:
                    raise ValueError(f"tasks.{task.name}.history: '{task.history}' is not a panel metric (panel.metrics: {list(metrics)})")
        feature_names = self.features.names + self.scenario.attributes.names
        if len(set(feature_names)) != len(feature_names):
            raise ValueError(f"features: duplicate feature names in {feature_names}")
        labels = {t.label for t in self.tasks} | {a.label for a in self.auxiliary if a.label}
        leaked = labels & set(self.features.columns + self.scenario.attributes.columns)
        if leaked:
            raise ValueError(f"features: label column(s) {sorted(leaked)} must not be features")
        if self.behaviour is not None:
            b = self.behaviour
            for name in b.tasks:
                if name not in by_name:
                    raise ValueError(f"behaviour.tasks: unknown task '{name}' (tasks: {names})")
                if by_name[name].kind not in (TaskKind.BINARY, TaskKind.COUNT):
                    raise ValueError(f"behaviour.tasks: '{name}' is a {by_name[name].kind.value} task; only binary and count tasks are summarised")
            if not b.tasks:
                raise ValueError("behaviour.tasks: at least one task is required")
            if self.panel is not None:
                raise ValueError("behaviour: not with a panel section (a panel's history already is each unit's past)")
            if b.key in labels or b.time in labels:
                raise ValueError("behaviour.key / behaviour.time: must not be a label column")
        inputs = set(self.features.columns + self.scenario.attributes.columns + [self.scenario.column])
        for task in self.tasks:
            if task.weight_column is not None and (task.weight_column in inputs or task.weight_column in labels):
                raise ValueError(f"tasks.{task.name}.weight_column: '{task.weight_column}' is a feature, scenario or label column")
        return self

    @property
    def derived_columns(self) -> set[str]:
        """The ``behaviour.*`` dense features: computed from earlier rows, never read from data or requests."""
        return set(self.behaviour.feature_names) if self.behaviour is not None else set()

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def history_of(self, task: Task) -> str | None:
        """The panel metric that forecasts ``task`` (``task.history``, else its label when that is
        a panel metric), or None (no panel, or nothing to read)."""
        if self.panel is None:
            return None
        if task.history is not None:
            return task.history
        return task.label if task.label in self.panel.metrics else None

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def required_columns(self, with_labels: bool = True) -> list[str]:
        """Columns a data file must hold (labels only where they are to be scored)."""
        derived = self.derived_columns
        cols = [self.scenario.column, *self.scenario.attributes.columns, *(c for c in self.features.columns if c not in derived)]
        if self.behaviour is not None:
            cols += [self.behaviour.key, self.behaviour.time]
        if with_labels:
            cols += [t.label for t in self.tasks]
            cols += [t.weight_column for t in self.tasks if t.weight_column]
            if self.sample_weight:
                cols.append(self.sample_weight)
        if self.panel:  # metrics/event columns may be absent from unlabelled data to score
            cols += [*self.panel.keys, self.panel.time]
        return list(dict.fromkeys(cols))
