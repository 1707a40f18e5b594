"""``msmt bench``: models × datasets × seeds, one leaderboard.

Every cell is an ordinary ``msmt train`` run (``--set model.name=M --set train.seed=S``) in
``OUT/runs/<dataset>/<model>/seed<S>``; a finished cell is reused when it was trained with the same
overrides, the same resolved config (config files and dataset files' paths included; a hash of it in the
cell's ``bench.json``) and the same code (its ``provenance.json`` source hash, :mod:`msmt.rundir.provenance`),
so an interrupted or extended grid only runs what is missing, and a code or config change retrains every cell.
The leaderboard reports the *test* split when the runs have one (else validation): mean ± std over seeds per scenario × task and
overall, plus the oracle where the data carry ``true_<task>`` columns.

A dataset is a config path, a name meaning ``configs/<name>.yaml``, or ``NAME=PATH`` (two
simulators both write ``experiment.yaml``: the name keeps their cells apart). ``cell_overrides``
adds settings per dataset and model (``{"advertiser_sim": {"m2m": [...]}}``, ``"*"`` = every
model); each cell records its overrides in ``bench.json`` and is retrained when they change.

Besides the registry, the model name :data:`TREES` (``lightgbm``) is a cell of gradient-boosted
trees on the same features and splits (:mod:`msmt.experiments.lightgbm_baseline`, one model per
task, early-stopped on validation): the baseline a network has to beat besides logistic regression
and item popularity. Without the optional ``lightgbm`` package it is an n/a cell naming the extra.

A model that does not apply to a dataset is a **n/a** cell with a one-line reason, never a silent
gap: either the model class says so before any training (``MultiTaskModel.not_applicable``, e.g.
ESMM without a ``product_of`` task) or the run raises :class:`ConfigError` before training (e.g.
the model builder rejecting a setting); the reason is kept in ``OUT/runs/<dataset>/<model>/
not_applicable.json``. ``jobs`` > 1 trains that many cells at once in worker processes.

Outputs: ``OUT/leaderboard.csv`` (long form), ``OUT/not_applicable.csv`` (dataset, model, reason),
``OUT/leaderboard.md``, ``OUT/plots/*.png``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from msmt.data.io import atomic_write, atomic_write_text, write_table
from msmt.evaluation.figures import pyplot
from msmt.experiments.run import run_experiment
from msmt.experiments.tables import pm
from msmt.models.registry import model_class
from msmt.rundir import provenance
from msmt.rundir.layout import CONFIG, METRICS
from msmt.rundir.provenance import same_code
from msmt.spec.config import ExperimentConfig, dump_yaml, load_experiment, per_model_settings
from msmt.spec.errors import ConfigError
from msmt.spec.task_kinds import rules

ORACLE = "oracle"
CELL_RECORD = "bench.json"  # in a cell's run directory: its overrides, resolved config's hash and training seconds
NOT_APPLICABLE = "not_applicable.json"  # in OUT/runs/<dataset>/<model>/
TREES = "lightgbm"  # a bench model besides the registry: msmt.experiments.lightgbm_baseline


def bench_models() -> list[str]:
    """The model names ``bench`` runs: every registered model, then :data:`TREES`."""
    from msmt.models import model_names

    return [*model_names(), TREES]


@dataclass(frozen=True)
class Cell:
    dataset: str
    config: Path
    model: str
    seed: int
    extra: tuple[str, ...] = field(default=())  # per-dataset / per-model overrides

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.dataset / self.model / f"seed{self.seed}"

    def overrides(self, common: Sequence[str]) -> list[str]:
        """The ``--set`` overrides of the cell's run (the trees keep the config's ``model``: they ignore it)."""
        model = [] if self.model == TREES else [f"model.name={self.model}"]
        return [*model, f"train.seed={self.seed}", "train.progress=false", *common, *self.extra]


def resolve_dataset(name: str, configs_dir: Path = Path("configs")) -> Path:
    """A config path, or a name meaning ``configs/<name>.yaml``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{path}: no such config file")
        return path
    candidate = configs_dir / f"{name}.yaml"
    if not candidate.exists():
        raise ConfigError(f"dataset '{name}': no config {candidate}")
    return candidate


def model_cell_overrides(items: Sequence[str], models: Sequence[str]) -> dict[str, list[str]]:
    """``{model: [KEY=VALUE, ...]}`` from ``msmt bench --model-set MODEL:KEY=VALUE`` items: overrides
    for one benched model's cells only (its row keeps the model's name)."""
    return prefixed_overrides(items, models, "--model-set", "MODEL", "model '{name}' is not benched (--models: {names})")


def prefixed_overrides(items: Sequence[str], names: Sequence[str], option: str, label: str, unknown: str) -> dict[str, list[str]]:
    """``{NAME: [KEY=VALUE, ...]}`` from ``NAME:KEY=VALUE`` items of ``option``, in order; a malformed item, or
    a NAME not in ``names`` (``unknown``, formatted with ``name`` and ``names``), is a ConfigError naming it."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise ConfigError(f"{option} '{item}': expected {label}:KEY=VALUE")
        if name not in names:
            raise ConfigError(f"{option} '{item}': " + unknown.format(name=name, names=list(names)))
        out.setdefault(name, []).append(setting)
    return out


def resolve_datasets(datasets: Sequence[str], configs_dir: Path = Path("configs")) -> dict[str, Path]:
    """``{name: config}`` from config paths, config names or ``NAME=PATH``; names must be unique."""
    configs: dict[str, Path] = {}
    for item in datasets:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = (Path(item).stem if Path(item).suffix else item), item
        if not name:
            raise ConfigError(f"--datasets '{item}': empty dataset name")
        if name in configs:
            raise ConfigError(f"--datasets: two datasets are called '{name}'; name them NAME=PATH")
        configs[name] = resolve_dataset(path, configs_dir)
    return configs


def task_kinds(configs: Mapping[str, Path]) -> dict[str, dict[str, str]]:
    """``{dataset: {task: kind}}`` of each dataset's config, tasks in config order."""
    return {name: {t.name: t.kind.value for t in load_experiment(cfg).dataset.tasks} for name, cfg in configs.items()}


def not_applicable(cfg, model: str | None = None) -> str | None:
    """Why ``model`` (default ``cfg.model.name``) cannot run on ``cfg.dataset`` (None: it can), from
    the model class; the trees apply to every dataset."""
    if model == TREES:
        return None
    return model_class(cfg.model.name).not_applicable(cfg.dataset)


def _na_path(cell: Cell, out: Path) -> Path:
    return cell.run_dir(out).parent / NOT_APPLICABLE


def cell_not_applicable(cell: Cell, out: Path, common: Sequence[str], cfg: ExperimentConfig | None = None) -> str | None:
    """The recorded n/a reason of a cell (any seed), if it was recorded with the same overrides,
    config (seed aside) and code. ``cfg``: the cell's resolved config, when already loaded."""
    path = _na_path(cell, out)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("overrides") != _seedless(cell.overrides(common)):
        return None
    cfg = cfg or load_experiment(cell.config, cell.overrides(common))
    return record["reason"] if record.get("key") == config_digest(cfg, seedless=True) else None


def _seedless(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("train.seed=")]


def config_digest(cfg: ExperimentConfig, seedless: bool = False) -> str:
    """SHA-256 of ``cfg`` resolved (the text ``config.yaml`` of its run holds): the content of the
    experiment and dataset config files and the overrides together. ``seedless``: without
    ``train.seed`` and with the code's :func:`~msmt.rundir.provenance.source_hash`, what an n/a verdict
    (valid for every seed) depends on."""
    data = cfg.to_dict()
    if seedless:
        data["train"].pop("seed", None)
    return hashlib.sha256((dump_yaml(data) + (provenance.source_hash() if seedless else "")).encode()).hexdigest()


def finished(run_dir: Path, overrides: Sequence[str], cfg: ExperimentConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg`` (the experiment config with ``overrides``
    applied) made by the same code (msmt.rundir.provenance); if not, the run is to be trained again.
    Both the overrides and the resolved config must match its :data:`CELL_RECORD`: the same overrides
    over an edited config file are another run."""
    return retrain_reason(run_dir, overrides, cfg) is None


def retrain_reason(run_dir: Path, overrides: Sequence[str], cfg: ExperimentConfig) -> str | None:
    """None when ``run_dir`` is :func:`finished` for ``cfg``; else why it is to be trained: ``"new"`` (no
    finished run there), ``"other code"`` (another source hash), ``"other overrides"``, or ``"other config"``
    followed by the first keys whose values differ between the kept run's ``config.yaml`` and ``cfg``
    (e.g. ``model.unseen_scenario_correction 0.75 → 1.0``: two studies sharing a work folder and
    training the same run directory differently replace each other's runs)."""
    record = run_dir / CELL_RECORD
    if not (run_dir / METRICS).exists() or not record.exists():
        return "new"
    if not same_code(run_dir):
        return "other code"
    kept = json.loads(record.read_text())
    if kept.get("overrides") != list(overrides):
        return "other overrides"
    if kept.get("config_sha256") != config_digest(cfg):
        return "other config" + config_changes(run_dir / CONFIG, cfg)
    return None


def config_changes(kept: Path, cfg: ExperimentConfig, shown: int = 3) -> str:
    """``": KEY OLD → NEW, …"`` for the first ``shown`` dotted keys whose values differ between the
    resolved config in ``kept`` (a run's ``config.yaml``) and ``cfg``; ``""`` where ``kept`` is unreadable."""
    try:
        old = yaml.safe_load(kept.read_text())
    except (OSError, yaml.YAMLError):
        return ""
    new = yaml.safe_load(dump_yaml(cfg.to_dict()))  # the same rendering as the kept file's
    changes = [f"{key} {old_value} → {new_value}" for key, old_value, new_value in _differences(old, new)]
    more = f" (+{len(changes) - shown} more)" if len(changes) > shown else ""
    return (": " + ", ".join(changes[:shown]) + more) if changes else ""


def _differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old, new) of every leaf where two nested dicts differ (a key on one side only: None on the other)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in dict.fromkeys([*old, *new])
                for d in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def read_metrics(run_dir: Path) -> dict:
    """The run's ``metrics.json``: ``{"val": M[, "test": M]}``."""
    return json.loads((run_dir / METRICS).read_text())


def train_recorded(cfg, run_dir: Path, overrides: Sequence[str]) -> tuple[dict, float]:
    """Train ``cfg`` into ``run_dir`` and record ``overrides`` and the seconds taken next to it
    (:data:`CELL_RECORD`, read by :func:`finished`); returns (metrics, seconds)."""
    start = time.perf_counter()
    metrics = run_experiment(cfg, run_dir, overwrite=True)  # a cell trained with other overrides, config or code is replaced
    return metrics, _record(run_dir, overrides, cfg, start)


def _record(run_dir: Path, overrides: Sequence[str], cfg: ExperimentConfig, start: float) -> float:
    """Write the cell's :data:`CELL_RECORD` (its overrides, :func:`config_digest` and the seconds since
    ``start``); returns the seconds."""
    seconds = time.perf_counter() - start
    record = {"overrides": list(overrides), "config_sha256": config_digest(cfg), "seconds": round(seconds, 2)}
    atomic_write_text(run_dir / CELL_RECORD, json.dumps(record, indent=1))
    return seconds


def train_trees_recorded(cfg, run_dir: Path, overrides: Sequence[str]) -> float:
    """The :data:`TREES` cell: LightGBM on ``cfg``'s features and splits (seed ``train.seed``,
    ``train.num_threads`` threads) into ``run_dir/metrics.json`` with the provenance and
    :data:`CELL_RECORD` of a trained cell; returns the seconds. Raises :class:`ConfigError`
    without lightgbm."""
    from msmt.experiments.lightgbm_baseline import TreeSettings, lightgbm_baseline

    start = time.perf_counter()
    lightgbm_baseline(cfg, TreeSettings(threads=cfg.train.num_threads or 1, seed=cfg.train.seed), out=run_dir)
    provenance.write(run_dir)
    return _record(run_dir, overrides, cfg, start)


def run_or_reuse(config: Path, overrides: Sequence[str], run_dir: Path, log=print) -> dict:
    """The metrics of ``config`` with ``overrides`` trained in ``run_dir``: read back when that run
    is :func:`finished`, else trained now (and recorded)."""
    cfg = load_experiment(config, list(overrides))
    reason = retrain_reason(run_dir, overrides, cfg)
    if reason is None:
        return read_metrics(run_dir)
    log(f"training {run_dir} ({reason})")
    return train_recorded(cfg, run_dir, overrides)[0]


def train_overrides(config: Path, overrides: Sequence[str], run_dir: Path) -> float:
    """Train ``config`` with ``overrides`` into ``run_dir`` (recorded); returns the seconds. Also the
    worker-process entry point of :func:`train_missing`."""
    return train_recorded(load_experiment(config, list(overrides)), run_dir, overrides)[1]


def train_missing(config: Path, runs: Sequence[tuple[Sequence[str], Path]], jobs: int = 1, log=print) -> list[Path]:
    """Train every (overrides, run directory) of ``runs`` that is not :func:`finished`, in the given
    order, ``jobs`` at a time (worker processes; give each run ``train.num_threads`` so that jobs ×
    threads fit the cores). A run's result does not depend on ``jobs``. With one job each run is
    checked just before its turn, so processes sharing the run directories skip what another finished.
    A run that fails raises its error once the runs already started have ended; the others are not
    started. Returns the run directories trained."""

    def reason_of(overrides: Sequence[str], run_dir: Path) -> str | None:
        return retrain_reason(run_dir, overrides, load_experiment(config, list(overrides)))

    if jobs > 1:
        todo = [(list(o), d, r) for o, d in runs if (r := reason_of(o, d)) is not None]
        if len(todo) > 1:
            log(f"{len(todo)} runs to train, {jobs} at a time ({_reasons_summary([(d, r) for _, d, r in todo])})")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(train_overrides, config, overrides, run_dir): run_dir for overrides, run_dir, _ in todo}
                try:
                    for done, future in enumerate(as_completed(futures), 1):
                        log(f"[{done}/{len(todo)}] trained {futures[future]} in {future.result():.0f} s")
                except BaseException:  # a failed run (or Ctrl-C): the runs not started are dropped, the error raised once the started ones end
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            return [d for _, d, _ in todo]
        runs = [(o, d) for o, d, _ in todo]
    trained = []
    for overrides, run_dir in runs:
        reason = reason_of(overrides, run_dir)
        if reason is not None:
            log(f"training {run_dir} ({reason})")
            train_overrides(config, overrides, run_dir)
            trained.append(run_dir)
    return trained


def _reasons_summary(stale: Sequence[tuple[Path, str]]) -> str:
    """``"n new; m other config, e.g. DIR: other config: …"``: how many runs each kind of
    :func:`retrain_reason` trains, with the first run of each kind but ``new``."""
    kinds: dict[str, list[str]] = {}
    for run_dir, reason in stale:
        kinds.setdefault(reason.split(":")[0], []).append(f"{run_dir}: {reason}")
    return "; ".join(f"{len(v)} {kind}" + ("" if kind == "new" else f", e.g. {v[0]}") for kind, v in kinds.items())


def train_cell(cell: Cell, out: Path, common: Sequence[str]) -> tuple[str, str | None, float]:
    """Run one cell; returns ("trained" | "n/a", reason, seconds). Also the worker-process entry point."""
    overrides = cell.overrides(common)
    cfg = load_experiment(cell.config, overrides)  # a bad override is a bench error, not an n/a
    start = time.perf_counter()
    reason = not_applicable(cfg, cell.model)
    if reason is None:
        try:
            if cell.model == TREES:
                return "trained", None, train_trees_recorded(cfg, cell.run_dir(out), overrides)
            return "trained", None, train_recorded(cfg, cell.run_dir(out), overrides)[1]
        except ConfigError as exc:  # raised before training: this model × data cannot run
            reason = str(exc)
    seconds = time.perf_counter() - start
    record = {"reason": reason.splitlines()[0], "overrides": _seedless(overrides), "key": config_digest(cfg, seedless=True)}
    _na_path(cell, out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_na_path(cell, out), json.dumps(record, indent=1))
    return "n/a", record["reason"], seconds


def run_cells(cells: list[Cell], out: Path, overrides: list[str], log=print, jobs: int = 1) -> dict[tuple[str, str], str]:
    """Train what is missing; returns ``{(dataset, model): reason}`` for the n/a cells.

    Cells run seed-major (every model's first seed first), so an interrupted grid is usable.
    """
    na: dict[tuple[str, str], str] = {}
    todo: list[Cell] = []
    why: dict[tuple[str, str, int], str] = {}  # a cell to train: retrain_reason's answer, logged with its result
    order = sorted(cells, key=lambda c: c.seed)  # stable: datasets and models keep their order
    for i, cell in enumerate(order, 1):
        key = (cell.dataset, cell.model)
        reason = na.get(key)
        done = False
        if reason is None:
            cfg = load_experiment(cell.config, cell.overrides(overrides))  # once per cell: it reads the config files
            reason = cell_not_applicable(cell, out, overrides, cfg)
            if reason is None:
                stale = retrain_reason(cell.run_dir(out), cell.overrides(overrides), cfg)
                done = stale is None
                if not done:
                    reason = not_applicable(cfg, cell.model)  # cheap: no data read
                    why[(cell.dataset, cell.model, cell.seed)] = stale
        if reason is not None:
            na[key] = reason
            log(f"[{i}/{len(cells)}] {cell.dataset} {cell.model} seed {cell.seed}: n/a ({reason})")
        elif done:
            log(f"[{i}/{len(cells)}] {cell.dataset} {cell.model} seed {cell.seed}: done, reused")
        else:
            todo.append(cell)

    def report(cell: Cell, result: tuple[str, str | None, float], prefix: str = "") -> None:
        status, reason, seconds = result
        if status == "n/a":
            na[(cell.dataset, cell.model)] = reason
            log(f"{prefix}{cell.dataset} {cell.model} seed {cell.seed}: n/a ({reason})")
        else:
            log(f"{prefix}{cell.dataset} {cell.model} seed {cell.seed}: trained in {seconds:.0f} s "
                f"({why[(cell.dataset, cell.model, cell.seed)]})")

    if jobs <= 1:
        for j, cell in enumerate(todo, 1):
            if (cell.dataset, cell.model) in na:
                continue
            log(f"[{j}/{len(todo)} to train] {cell.dataset} {cell.model} seed {cell.seed}: training")
            report(cell, train_cell(cell, out, overrides))
    elif todo:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(train_cell, cell, out, list(overrides)): cell for cell in todo}
            log(f"{len(todo)} cell(s) to train, {jobs} at a time")
            for done, future in enumerate(as_completed(futures), 1):
                report(futures[future], future.result(), f"[{done}/{len(todo)}] ")
    return na


def _records(cell: Cell, metrics: dict) -> list[dict]:
    split = "test" if "test" in metrics else "val"
    M = metrics[split]
    rows = []
    for source, block in ((cell.model, M), (ORACLE, M.get(ORACLE))):
        if block is None:
            continue
        groups = {"overall": block["overall"], **block["scenarios"], **block.get("cohorts", {})}
        for scen, tasks in groups.items():
            for task, values in tasks.items():
                for metric, value in values.items():
                    if metric == "rows" or value is None:
                        continue
                    rows.append(
                        dict(dataset=cell.dataset, model=source, seed=cell.seed, split=split, scenario=scen,
                             task=task, metric=metric, value=float(value), rows=values["rows"])
                    )
    return rows


def collect(cells: list[Cell], out: Path) -> pd.DataFrame:
    """Long-form per-seed records; the oracle appears once per seed as model ``oracle``."""
    records = []
    for cell in cells:
        if not (cell.run_dir(out) / METRICS).exists():  # n/a
            continue
        records += _records(cell, read_metrics(cell.run_dir(out)))
    frame = pd.DataFrame(records)
    oracle = frame["model"] == ORACLE
    return pd.concat([frame[~oracle], frame[oracle].drop_duplicates(["dataset", "seed", "scenario", "task", "metric"])])


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    keys = ["dataset", "split", "model", "scenario", "task", "metric"]
    agg = per_seed.groupby(keys, sort=False).agg(
        mean=("value", "mean"), std=("value", lambda v: float(np.std(v))), seeds=("seed", "nunique"), rows=("rows", "first")
    )
    return agg.reset_index()


def _settings_list(title: str, settings: Mapping[str, Sequence[str]]) -> list[str]:
    """The leaderboard's lines naming each model's own ``KEY=VALUE`` settings under ``title`` (none without any)."""
    own = {m: list(o) for m, o in settings.items() if o}
    if not own:
        return []
    return [title, "", *[f"* `{m}`: " + ", ".join(f"`{o}`" for o in items) for m, items in own.items()], ""]


def markdown(summary: pd.DataFrame, kinds: dict[str, dict[str, str]], models: list[str],
             na: Mapping[tuple[str, str], str] | None = None,
             cell_overrides: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
             per_model: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> str:
    """The leaderboard page: per dataset, a table per task and primary metric (a row per model and
    the oracle, a column per scenario); the n/a cells and each model's own overrides named, those of
    ``msmt bench --model-set`` (``cell_overrides``) and those of the config's ``per_model`` entries
    (``per_model``: {dataset: {model: [KEY=VALUE, ...]}})."""
    na = dict(na or {})
    lines = ["# Leaderboard", "", "Mean ± std over seeds; split = test when the dataset has one. "
             "`oracle` = the data's true expected values used as predictions (the best achievable).", ""]
    for dataset in kinds:
        part = summary[summary["dataset"] == dataset] if len(summary) else summary
        dataset_na = [(m, r) for (d, m), r in na.items() if d == dataset]
        if part.empty:
            lines += [f"## {dataset} (no results)", ""]
        else:
            seeds = int(part["seeds"].max())
            lines += [f"## {dataset} ({part['split'].iloc[0]} split, {seeds} seed(s))", ""]
        lines += _settings_list("Overrides of some models' cells only:", (cell_overrides or {}).get(dataset, {}))
        entries = {m: o for m, o in (per_model or {}).get(dataset, {}).items() if m in models}
        lines += _settings_list("The config's `per_model` settings (each model's own):", entries)
        if dataset_na:
            lines += ["Not applicable:", "", *[f"* `{m}`: n/a — {r}" for m, r in dataset_na], ""]
        if part.empty:
            continue
        scenarios = ["overall", *[s for s in part["scenario"].unique() if s != "overall"]]
        for task, kind in kinds[dataset].items():
            for metric in rules(kind).primary:
                sub = part[(part["task"] == task) & (part["metric"] == metric)]
                if sub.empty:
                    continue
                lines += [f"**{task} — {metric}**", "", "| model | " + " | ".join(scenarios) + " |",
                          "|" + "---|" * (len(scenarios) + 1)]
                for model in [*models, ORACLE]:
                    msub = sub[sub["model"] == model].set_index("scenario")
                    if msub.empty:
                        continue
                    cells = [_cell(msub.loc[s]) if s in msub.index else "–" for s in scenarios]
                    lines.append(f"| {model} | " + " | ".join(cells) + " |")
                lines.append("")
    return "\n".join(lines)


def _cell(row: pd.Series) -> str:
    """``mean ± std`` over seeds; one seed: the value alone (no ``± 0.0000``)."""
    return pm(row["mean"], row["std"]) if row["seeds"] > 1 else f"{row['mean']:.4f}"


def plot(summary: pd.DataFrame, kinds: dict[str, dict[str, str]], out: Path) -> list[Path]:
    """Per dataset and task: the primary metric per scenario (overall first), one marker per model
    with its std over seeds as an error bar. Markers, not bars: the value axis is zoomed to the
    differences, which bars drawn from a cut-off baseline would exaggerate."""
    plt = pyplot()
    paths = []
    for dataset, part in summary.groupby("dataset", sort=False):
        for task, kind in kinds[dataset].items():
            metric = rules(kind).primary[0]
            sub = part[(part["task"] == task) & (part["metric"] == metric)]
            if sub.empty:
                continue
            scenarios = ["overall", *[x for x in sub["scenario"].unique() if x != "overall"]]
            models = list(dict.fromkeys(sub["model"]))
            seeds = int(sub["seeds"].max())
            fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(scenarios) * max(1, len(models)) / 2), 3.4))
            width = 0.8 / len(models)
            for i, model in enumerate(models):
                msub = sub[sub["model"] == model].set_index("scenario").reindex(scenarios)
                x = np.arange(len(scenarios)) - 0.4 + width * (i + 0.5)
                ax.errorbar(x, msub["mean"], yerr=msub["std"] if seeds > 1 else None, fmt="o", capsize=4, label=model)
            ax.set_xticks(np.arange(len(scenarios)), scenarios, rotation=20)
            spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed: no error bars"
            ax.set_title(f"{dataset}: {task} {metric} per scenario ({spread})", fontsize="medium")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize="small", ncol=min(len(models), 4))
            fig.tight_layout()
            path = out / "plots" / f"{dataset}_{task}_{metric}.png"
            atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100))
            plt.close(fig)
            paths.append(path)
    return paths


def bench(
    datasets: list[str],
    models: list[str],
    seeds: list[int],
    out: Path,
    overrides: list[str] | None = None,
    log=print,
    cell_overrides: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run (or reuse) the grid and write the leaderboard files; returns the summary table.

    ``summary.attrs["not_applicable"]`` holds ``{(dataset, model): reason}``.
    """
    overrides = list(overrides or [])
    cell_overrides = dict(cell_overrides or {})
    configs = resolve_datasets(datasets)
    unknown = sorted(set(cell_overrides) - set(configs))
    if unknown:
        raise ConfigError(f"cell overrides for unknown dataset(s) {unknown} (datasets: {list(configs)})")

    def extra(dataset: str, model: str) -> tuple[str, ...]:
        per = cell_overrides.get(dataset, {})
        return (*per.get("*", ()), *per.get(model, ()))

    cells = [Cell(name, cfg, m, s, extra(name, m)) for name, cfg in configs.items() for m in models for s in seeds]
    na = run_cells(cells, out, overrides, log, jobs)
    records = collect(cells, out)
    summary = summarise(records) if len(records) else pd.DataFrame(columns=["dataset", "split", "model", "scenario", "task", "metric", "mean", "std", "seeds", "rows"])
    kinds = task_kinds(configs)
    write_table(summary, out / "leaderboard.csv")
    na_rows = [dict(dataset=d, model=m, reason=r) for (d, m), r in na.items()]
    write_table(pd.DataFrame(na_rows, columns=["dataset", "model", "reason"]), out / "not_applicable.csv")
    plots = plot(summary, kinds, out)
    entries = {name: per_model_settings(cfg) for name, cfg in configs.items()}
    text = markdown(summary, kinds, models, na, cell_overrides, entries)
    text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots) + "\n"
    atomic_write_text(out / "leaderboard.md", text)
    summary.attrs["not_applicable"] = na
    return summary
