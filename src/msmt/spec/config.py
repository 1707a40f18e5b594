"""Typed experiment config: YAML in, validated values out; unknown keys are errors.

Layering (lowest to highest): defaults < the YAML file < the file's ``per_model`` entry of the
selected model < ``--set key=value`` overrides.
The ``dataset`` key is either an inline dataset config or a path to one (resolved relative to
the experiment file); data file paths are resolved relative to the dataset config, and the
resolved, self-contained config is what a run directory stores as ``config.yaml``.

Model-specific hyperparameters live in a sub-section named after the model
(``model.mmoe.num_experts``); each model validates its own section (declared in
:mod:`msmt.spec.model_params`, no model code imported), so a misspelt key is reported with its full path.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from msmt.spec.dataset import DatasetSpec
from msmt.spec.errors import ConfigError
from msmt.spec.sections import model_names, model_section, strategy_names, strategy_section


class Strict(BaseModel):
    """Unknown keys are errors; numbers must be finite (``train.lr=.inf`` names the key)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


Dims = list[Annotated[int, Field(ge=1)]]  # layer widths: every entry a positive integer


def _validate_section(cls: type[BaseModel], value: Any, prefix: str) -> BaseModel:
    if isinstance(value, cls):
        return value
    try:
        return cls.model_validate(value or {})
    except ValidationError as err:
        raise ValueError(_format_validation_error(err, prefix)) from None


class ModelConfig(Strict):
    """Hyperparameters shared by every model; per-model sections are validated by the model."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    name: str = "shared_bottom"  # the registry name of the model (README.md lists them; e.g. mmoe, ple, m2m)
    embedding_dim: int = Field(default=16, ge=1)  # size of every sparse feature's embedding
    hidden_dims: Dims = Field(default_factory=lambda: [128, 64])  # layer widths of the shared network / each expert
    tower_dims: Dims = Field(default_factory=lambda: [32])  # layer widths of each task's tower ([] : a linear head)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # dropout rate in the MLPs
    activation: Literal["relu", "gelu", "silu"] = "relu"
    use_scenario_feature: bool = True  # embed the scenario id as one more input feature
    history_summary: bool = False  # append a summary of the panel history (datasets with `panel:`)
    # with history_summary: also each panel metric's live history (days since it was last positive / zero, its changes
    # of state between consecutive days, yesterday's positive flag; msmt.layers.history.HistorySummary)
    history_live: bool = False
    # count heads as log(naive forecast + ε) + f(x) on panel data (msmt.layers.naive.ForecastOffset):
    # auto = per count task with a history, the naive forecast with the least training-split absolute error;
    # blend = per row a learnt softmax mix of those naive forecasts (data that changes regime); blend_backtest =
    # the blend whose gate also reads each naive forecast's error over the row's last backtest_days days; none = plain heads
    forecast: Literal["auto", "blend", "blend_backtest", "none", "last", "mean", "weekday"] = "auto"
    # blend_backtest: the days at the end of each row's window on which every naive forecast is scored (≤ the panel window)
    backtest_days: int = Field(default=7, ge=1)
    # w, the share of the network's correction a count head with a forecast offset keeps on a row whose scenario
    # training never saw and that has its own history: log λ = log(b + ε) + w·f(x) there (msmt.layers.naive.ForecastOffset);
    # 1 = all of it. Scoring only: no training row has an unseen scenario
    unseen_scenario_correction: float = Field(default=1.0, ge=0.0, le=1.0)
    # share of training rows whose panel history is removed (msmt.models.base.drop_history), so
    # that units without history (new advertisers, a new scenario's first days) are learnt too
    history_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # share of training rows whose history is cut to a block of earlier days ending g >= 1 days
    # before the row (msmt.models.base.drop_history): units scored days after the only history
    # they have, e.g. a new scenario's units with K days of context
    history_gap_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Meta-Embedding ID warm-up (msmt.meta.warmup): {ID feature: [features it is generated from]};
    # a value unseen in training gets the embedding generated from its row's attributes
    id_warmup: dict[str, list[str]] = Field(default_factory=dict)
    # cold-start prior: each ID table's out-of-vocabulary row starts as the mean of its seen rows
    # (mean) or is drawn like them (random); a feature's `dropout` then trains it (msmt.layers.embedding)
    oov_init: Literal["random", "mean"] = "random"

    @model_validator(mode="after")
    def _validate_sections(self) -> ModelConfig:
        if self.name not in model_names():
            raise ValueError(f"unknown model '{self.name}' (registered: {model_names()})")
        if self.history_live and not self.history_summary:
            raise ValueError("model.history_live: adds to the history summary, so it needs model.history_summary: true")
        for key, value in (self.model_extra or {}).items():
            if key not in model_names():
                raise ValueError(f"unknown key 'model.{key}'")
            self.model_extra[key] = _validate_section(model_section(key), value, f"model.{key}.")
        return self

    def params(self) -> BaseModel:
        """The validated section of the selected model (defaults when absent)."""
        section = (self.model_extra or {}).get(self.name)
        return section if section is not None else model_section(self.name)()


# ``train.device`` values (resolved to a torch.device, CUDA availability checked, by msmt.runtime.device)
DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?")


class TrainConfig(Strict):
    seed: int = 0  # seeds torch, numpy and Python (same seed, same run)
    epochs: int = Field(default=10, ge=1)  # most passes over the training rows (early stopping may end sooner)
    batch_size: int = Field(default=1024, ge=1)  # rows per optimiser step
    lr: float = Field(default=1e-3, gt=0.0)  # AdamW learning rate
    # per optimiser step: "constant" (lr throughout) or "cosine" (from lr down to lr_min over
    # train.epochs' steps, Loshchilov & Hutter's SGDR without restarts; msmt.training.optim.build_schedulers)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min: float = Field(default=0.0, ge=0.0)  # where the cosine schedule ends (at most lr)
    weight_decay: float = Field(default=1e-5, ge=0.0)  # AdamW weight decay
    patience: int = Field(default=3, ge=1)  # epochs without improvement of `monitor` before stopping; the best epoch's weights are kept
    monitor: str = "loss"  # "loss" or "<task>.<metric>", e.g. "click.auc"
    max_grad_norm: float | None = Field(default=None, gt=0.0)  # clip the gradient norm to this (null: no clipping)
    num_threads: int | None = Field(default=None, ge=1)  # CPU threads per process (null: the physical cores, shared by torchrun's local processes)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (msmt.runtime.device.resolve_device)
    progress: bool = True  # progress bar and per-epoch lines (msmt train --quiet: false)
    tensorboard: bool = False  # per-epoch losses, validation metrics and loss weights as TensorBoard scalars in RUN_DIR/tensorboard (needs msmt[tensorboard])
    eval_batch_size: int = Field(default=8192, ge=1)  # rows per forward pass when evaluating
    checkpoint_every: int | None = Field(default=None, ge=1)  # optimiser steps between checkpoints
    streaming: bool = False  # read the training Parquet file by row group (msmt.data.streaming)
    shuffle_buffer: int = Field(default=65536, ge=1)  # rows shuffled together when streaming
    num_workers: int = Field(default=0, ge=0)  # data-loader worker processes when streaming
    sparse_embeddings: bool = False  # sparse gradients + SparseAdam for embedding tables (msmt.training.optim)
    # "bf16": forward passes of training under torch.autocast(bfloat16) — matmuls in bfloat16,
    # weights, gradients, losses and the optimiser in float32 (docs/speed.md for speed and AUC)
    precision: Literal["fp32", "bf16"] = "fp32"
    # the point forecast of count tasks for absolute errors (msmt.scoring.point): "mean" (the expected
    # count) or "scaled": c·mean, c per count task and scenario fitted after training on the validation
    # split to minimise NMAE, a task's factors kept only if, fitted on the split's earlier half, they lower
    # its later half's NMAE (else 1); "median": the median of Poisson(c·mean), an integer, checked the same
    # way; nmae / smape / mape score it, predict and the service add point_<task>
    point_forecast: Literal["mean", "scaled", "median"] = "mean"
    # after early stopping on the validation split, train a fresh model (same seed) on the training and
    # validation rows together for the best epoch's number of epochs and keep it: the refit before
    # forecasting a later period (msmt.experiments.refit); metrics.json "val" and the point forecast's
    # factors stay the first fit's (out of sample), "test" scores the refit; refit_history.csv its epochs
    refit: bool = False
    # validate, select and store an exponential moving average of the weights whose time constant is this
    # many epochs (decay per step 1 − 1/(ema_epochs × steps per epoch); msmt.training.averaging); the
    # optimiser still steps the weights as trained. null: the weights as trained. The naive forecasters keep
    # their fitted scale as it is (a fit of a few epochs, which the average would drag back to its start)
    ema_epochs: float | None = Field(default=None, gt=0.0)

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"'{value}' is not a device (use cpu, cuda, cuda:N or auto)")
        return value

    @model_validator(mode="after")
    def _check_lr_min(self) -> TrainConfig:
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min ({self.lr_min}) is above lr ({self.lr}): the cosine schedule decays from lr to lr_min")
        return self

    @field_validator("tensorboard")
    @classmethod
    def _check_tensorboard(cls, value: bool) -> bool:
        if value and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("true needs the tensorboard package (pip install 'msmt[tensorboard]')")
        return value


class LossConfig(Strict):
    """How task losses are combined (see :mod:`msmt.training.losses`)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    strategy: str = "fixed"  # how task losses are combined: fixed (task weights), uncertainty, gradnorm, pcgrad, dwa
    # divide each task's loss by its label scale (count: training-label mean; regression: variance;
    # binary: 1; msmt.spec.task_kinds) so that no hand-set task weights are needed
    normalise: bool = True

    @model_validator(mode="after")
    def _validate_strategy(self) -> LossConfig:
        if self.strategy not in strategy_names():
            raise ValueError(f"unknown loss strategy '{self.strategy}' (registered: {strategy_names()})")
        for key, value in (self.model_extra or {}).items():
            if key not in strategy_names():
                raise ValueError(f"unknown key 'loss.{key}'")
            self.model_extra[key] = _validate_section(strategy_section(key), value, f"loss.{key}.")
        return self

    def params(self) -> BaseModel:
        section = (self.model_extra or {}).get(self.strategy)
        return section if section is not None else strategy_section(self.strategy)()


class MetaConfig(Strict):
    """Meta-learning per group (see :mod:`msmt.meta_learning`): which parameters are personal,
    how episodes are drawn and how the inner and outer loops run. ``algorithm: none`` trains
    conventionally; ``msmt adapt`` still uses ``personal``, ``inner_steps`` and ``inner_lr``."""

    algorithm: Literal["none", "maml", "fomaml", "reptile", "metasgd"] = "none"
    # globs over parameter names; ["auto"]: the model's declared personal block (its task heads)
    personal: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    # moved by the outer loop besides φ's start; default none: the base θ stays what training made
    # it, so meta-learning cannot damage the forecast of a group without rows (K = 0)
    shared: list[str] = Field(default_factory=list)
    support_size: int = Field(default=10, ge=1)  # the largest support set of an episode
    # each episode draws its support size from [support_min, support_size]; 0 (default) lets some episodes score the
    # block's start unadapted (the forecast of a group without rows, K = 0) beside the adapted ones
    support_min: int = Field(default=0, ge=0)
    query_size: int = Field(default=20, ge=1)  # the most rows per group the adapted block is scored on
    # time: support = a group's rows before a cut, query = the rows after it (as deployment sees
    # them; the dataset's panel time or split time column orders them); random: a random split
    episode_split: Literal["time", "random"] = "time"
    groups_per_episode: int = Field(default=8, ge=1)  # groups per outer step
    episodes: int = Field(default=600, ge=0)  # outer steps (600 × 8 groups: 3-4 passes over the cold-start study's training rows)
    inner_steps: int = Field(default=3, ge=0)  # gradient steps of the inner loop (and of msmt adapt)
    inner_lr: float = Field(default=0.1, gt=0.0)  # learning rate of the inner loop (and of msmt adapt); Meta-SGD: the start of its rates
    inner_max_grad_norm: float | None = Field(default=5.0, gt=0.0)  # None: no clipping in the inner loop
    # halvings of an inner step that would raise the support loss, which is then skipped (0: plain steps; see
    # msmt.meta.params.inner_loop): clipped steps on Poisson heads otherwise overshoot some groups' rates by orders of magnitude
    inner_backtrack: int = Field(default=4, ge=0)
    outer_optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    outer_lr: float = Field(default=1e-3, gt=0.0)  # learning rate of the outer loop
    # each outer step's gradient over θ ∪ φ (∪ α) is rescaled to at most this global L2 norm (None: no clipping), so
    # that one episode whose groups the inner loop overshoots cannot throw the block's start far away (docs/results.md)
    outer_max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    seed: int = 0  # seed of the episode sampler
    # log meta_history.csv's finetune_query_loss: the same episodes' query loss after plain fine-tuning from the
    # block before meta-training (the curve's noise-free reference; costs 30-75% of meta-training's time)
    log_reference: bool = False
    warmup_steps: int = Field(default=200, ge=0)  # steps of the ID warm-up phase (model.id_warmup), base frozen
    warmup_rows: int = Field(default=8, ge=1)  # rows of an ID in each of the two warm-up batches (A, B)
    warmup_mix: float = Field(default=0.5, ge=0.0, le=1.0)  # a in a·L_cold(A) + (1 − a)·L_warm(B)
    warmup_lr: float = Field(default=1e-3, gt=0.0)  # the generator's learning rate
    warmup_step_size: float = Field(default=0.1, gt=0.0)  # the warm step on the generated embedding


class ExperimentConfig(Strict):
    dataset: DatasetSpec
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    meta: MetaConfig = Field(default_factory=MetaConfig)

    @model_validator(mode="after")
    def _point_forecast_has_counts(self) -> ExperimentConfig:
        """``train.point_forecast: scaled | median`` applies to count tasks: a dataset without one is told so."""
        if self.train.point_forecast == "mean":
            return self
        from msmt.spec.task_kinds import rules  # torch: only when the option is set

        if not any(rules(t).scaled_point for t in self.dataset.tasks):
            raise ValueError(
                f"train.point_forecast: '{self.train.point_forecast}' applies to count tasks and the dataset has none (use 'mean')"
            )
        return self

    @model_validator(mode="after")
    def _refit_in_memory(self) -> ExperimentConfig:
        """``train.refit`` retrains on the training and validation rows held in memory, conventionally."""
        if not self.train.refit:
            return self
        if self.train.streaming:
            raise ValueError("train.refit: needs the training rows in memory (set train.streaming=false)")
        if self.meta.algorithm != "none":
            raise ValueError(f"train.refit: not with meta.algorithm '{self.meta.algorithm}' (the refit trains conventionally; set one of them off)")
        return self

    @model_validator(mode="after")
    def _monitor_is_measured(self) -> ExperimentConfig:
        """``train.monitor`` names a task of the dataset and a measure of its kind (checked
        before any data is read, not after the first epoch)."""
        monitor = self.train.monitor
        if monitor == "loss":
            return self
        task_name, dot, measure = monitor.partition(".")
        tasks = {t.name: t for t in self.dataset.tasks}
        if not dot or task_name not in tasks:
            raise ValueError(f"train.monitor: '{monitor}' is neither 'loss' nor '<task>.<measure>' with a task of the dataset ({sorted(tasks)})")
        from msmt.spec.task_kinds import measure_names  # torch and scikit-learn: only when a measure is monitored

        known = measure_names(tasks[task_name])
        if measure not in known:
            raise ValueError(f"train.monitor: task '{task_name}' has no measure '{measure}' (its measures: {list(known)})")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every key with its value, defaults included: the selected model's section
        (``model.<name>``) and strategy's section (``loss.<strategy>``) too, so a run's
        ``config.yaml`` shows every setting it ran with."""
        data = self.model_dump(mode="json", exclude_none=False)
        data["model"][self.model.name] = self.model.params().model_dump(mode="json")
        data["loss"][self.loss.strategy] = self.loss.params().model_dump(mode="json")
        return data


# --------------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError, prefix: str = "") -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        loc = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            standalone = msg.startswith("unknown key") or msg.startswith(prefix or "\0") or msg.startswith(f"{loc}.")
            parts.append(msg if standalone or not loc else f"{loc}: {msg}")
    return "; ".join(parts)


def read_yaml_mapping(path: Path, missing: str = "no such config file", not_mapping: str = "expected a mapping at the top level") -> dict[str, Any]:
    """The YAML mapping in ``path``; a missing file, bad YAML or another top-level type is a
    :class:`ConfigError` naming the file (``missing`` / ``not_mapping``: the messages)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {not_mapping}")
    return data


def _resolve_files(dataset: dict[str, Any], base: Path) -> dict[str, Any]:
    files = dataset.get("files")
    if isinstance(files, dict):
        resolved = {}
        for key, value in files.items():
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, str) and not Path(value).is_absolute():
                value = str((base / value).resolve())
            resolved[key] = value
        dataset = {**dataset, "files": resolved}
    return dataset


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    """Read a dataset config YAML; file paths become absolute."""
    path = Path(path)
    return dataset_spec_from(read_yaml_mapping(path), path)


def dataset_spec_from(raw: dict[str, Any], path: Path) -> DatasetSpec:
    """The dataset spec of ``raw``, the YAML of a dataset config that is (or will be) ``path``:
    file paths relative to its folder become absolute; an error names ``path``."""
    raw = _resolve_files(raw, path.parent)
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {_format_validation_error(err)}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.name=mmoe"`` -> (["model", "name"], "mmoe"); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment YAML (dataset inline or by path), apply overrides, validate."""
    path = Path(path)
    return experiment_from_dict(read_yaml_mapping(path), overrides, base=path.parent, source=str(path))


def experiment_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, base: str | Path = ".", source: str = "config"
) -> ExperimentConfig:
    """An experiment config given as a mapping (what a YAML file holds): ``dataset`` inline or a
    path, relative paths resolved against ``base``; then the ``per_model`` entry of the model selected
    (:func:`split_per_model`), then overrides, then validation."""
    data = copy.deepcopy(data)
    base = Path(base)
    dataset = data.get("dataset")
    if isinstance(dataset, (str, Path)):
        ds_path = (base / dataset).resolve()
        data["dataset"] = _resolve_files(read_yaml_mapping(ds_path), ds_path.parent)
    elif isinstance(dataset, dict):
        data["dataset"] = _resolve_files(dataset, base)
    elif dataset is None:
        raise ConfigError(f"{source}: missing key 'dataset'")
    overrides = list(overrides or [])
    data, entries = split_per_model(data, source)
    name = selected_model(data, overrides)
    selected = entries.get(name, {}) if isinstance(name, str) else {}
    cfg = validate_experiment(apply_overrides(merged(data, selected), overrides), source=source)
    others = [text for text in overrides if parse_override(text)[0] != ["model", "name"]]
    for other, settings in entries.items():
        if other != name:  # checked too, so that a typo shows before the model is run
            entry = {**settings, "model": {**settings.get("model", {}), "name": other}}
            try:
                ExperimentConfig.model_validate(apply_overrides(merged(data, entry), others))
            except ValidationError as err:
                raise ConfigError(f"{source}: per_model.{other}: {_format_validation_error(err)}") from None
    return cfg


# the sections a ``per_model`` entry may change (the dataset is the config's, whatever the model)
PER_MODEL_SECTIONS = ("model", "train", "loss", "meta")


def merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` laid over it: mappings merge key by key, any other value of ``top`` replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else copy.deepcopy(value)
    return out


def flat_settings(sections: dict[str, Any], prefix: str = "") -> list[str]:
    """``{"train": {"ema_epochs": 3}}`` -> ``["train.ema_epochs=3"]``: nested settings as the ``KEY=VALUE``
    overrides that set them (values as JSON, which ``--set`` reads as YAML)."""
    out = []
    for key, value in sections.items():
        if isinstance(value, dict) and value:
            out += flat_settings(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def per_model_settings(path: str | Path) -> dict[str, list[str]]:
    """The ``per_model`` entries of the config file ``path`` as {model: [KEY=VALUE, ...]} (:func:`flat_settings`)."""
    return {model: flat_settings(entry) for model, entry in split_per_model(read_yaml_mapping(Path(path)), str(path))[1].items()}


def selected_model(data: dict[str, Any], overrides: list[str]) -> Any:
    """The ``model.name`` that ``data`` with ``overrides`` applied selects (the default when neither sets it)."""
    model = data.get("model")
    name = model.get("name", ModelConfig.model_fields["name"].default) if isinstance(model, dict) else None
    for text in overrides:
        path, value = parse_override(text)
        if path == ["model", "name"]:
            name = value
    return name


def split_per_model(data: dict[str, Any], source: str = "config") -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``data`` without its ``per_model`` key, and that key's entries (``{}`` without one).

    ``per_model: {m2m: {train: {ema_epochs: 3}}, apg: {...}}`` holds settings that differ per
    model (what each model's validation preferred, e.g. ``benchmarks/setting_choice.py``'s choice),
    so that one config trains every model of a benchmark with its own. :func:`experiment_from_dict`
    lays the entry of the model that the config and the overrides select (``model.name``) over the
    file's values (:func:`merged`) and under the overrides, and checks the other entries too. The
    config it returns has no ``per_model``: a run's ``config.yaml`` holds the settings it ran with.
    An entry must name a registered model and hold only the sections :data:`PER_MODEL_SECTIONS`,
    without ``model.name``; an error names ``per_model.<model>``."""
    entries = data.get("per_model")
    data = {k: v for k, v in data.items() if k != "per_model"}
    if entries is None:
        return data, {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{source}: per_model: expected a mapping of model name to its settings")
    for name, settings in entries.items():
        key = f"per_model.{name}"
        if name not in model_names():
            raise ConfigError(f"{source}: {key}: unknown model (registered: {model_names()})")
        if not isinstance(settings, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping of sections ({', '.join(PER_MODEL_SECTIONS)})")
        for section, value in settings.items():
            if section not in PER_MODEL_SECTIONS:
                raise ConfigError(f"{source}: {key}.{section}: not a section a model's settings may change ({', '.join(PER_MODEL_SECTIONS)})")
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key}.{section}: expected a mapping")
        if "name" in settings.get("model", {}):
            raise ConfigError(f"{source}: {key}.model.name: the entry's key names the model")
    return data, entries


def validate_experiment(data: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_validation_error(err)}") from None


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
