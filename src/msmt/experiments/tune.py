"""``msmt tune CONFIG --trials N``: hyper-parameter search over declared config keys (Optuna).

The search space is a YAML file beside the config (``<config stem>.tune.yaml`` by default), one
entry per dotted config key, the keys ``--set`` takes::

    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}          # a float range (log-uniform)
    train.batch_size: {low: 256, high: 2048, step: 256}       # an int range (the key's value is an int)
    model.hidden_dims: {choices: [[64, 32], [128, 64]]}       # one of these values

A range is an int range when ``type: int`` says so, or else when the config's value of the key is
an int (``train.batch_size``); otherwise a float range. The whole space is checked before any
trial: every value a trial could get at the ends of a range, and every choice, must be accepted by
the config (so an unknown key or a value out of bounds is one line naming the space file and key).

Each trial is an ordinary run directory ``STUDY/trials/<n>/`` (``msmt train`` with the trial's
values as ``--set``). Its objective is the run's monitored validation value (``train.monitor``:
the loss is minimised, a measure like ``click.auc`` maximised as the task-kind table says), the
best over its epochs, as the training loop keeps the best epoch's weights. After each epoch the
value is reported to the trial, and Optuna's median pruner stops a trial whose curve is below the
median of the finished trials at that epoch (:class:`EpochReporter`).

Seeds and resuming: the study lives in ``STUDY/study.db`` (SQLite); running the command again
continues it up to N finished trials in all: complete, pruned, or failed because its training
diverged (``FAIL``). A trial stopped by an interrupt or an error (left ``RUNNING`` or marked failed
by Optuna) is ``INTERRUPTED``: it does not count, and the next run draws it again. The
``k``-th finished trial is sampled by a TPE sampler seeded from (``seed``, ``k``), and TPE reads only
the complete and pruned trials, so a study resumed after any number of trials, or after an
interrupted one, draws what an uninterrupted study draws.

Outputs in ``STUDY/``: ``best.yaml`` (the resolved config with the best trial's values: ``msmt
train STUDY/best.yaml`` runs it; its header states the budget), ``trials.csv`` (number, state,
value, seconds, one column per key, run directory) and ``trials.png`` (objective per trial and
best so far).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from msmt.data.io import atomic_write, atomic_write_text, write_table
from msmt.evaluation.figures import integer_ticks, pyplot
from msmt.experiments.run import run_experiment
from msmt.spec.config import ExperimentConfig, dump_yaml, experiment_from_dict, load_experiment, read_yaml_mapping
from msmt.spec.errors import ConfigError, DivergedError
from msmt.spec.task_kinds import higher_is_better

SPACE_SUFFIX = ".tune.yaml"
STUDY_DB = "study.db"
BEST = "best.yaml"
TRIALS_CSV = "trials.csv"
TRIALS_PLOT = "trials.png"
STUDY_NAME = "msmt"
RANGE_KEYS = {"low", "high", "log", "step", "type"}


def default_space(config: Path) -> Path:
    """``configs/movielens.yaml`` -> ``configs/movielens.tune.yaml``."""
    return config.with_name(config.stem + SPACE_SUFFIX)


def is_space_file(path: Path) -> bool:
    """A search-space file (not an experiment config) among ``configs/*.yaml``."""
    return path.name.endswith(SPACE_SUFFIX)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("msmt tune needs Optuna: pip install 'msmt[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # msmt logs one line per trial itself
    return optuna


# --------------------------------------------------------------------------- the search space


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _lookup(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class Param:
    """One searched key: an int or float range, or a list of choices."""

    key: str
    kind: str  # "int" | "float" | "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def values_to_check(self) -> list:
        """The values the config must accept: a range's ends, every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def suggest(self, trial) -> Any:
        """This trial's value (lists among the choices travel through Optuna as JSON text)."""
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        if all(_is_scalar(c) for c in self.choices):
            return trial.suggest_categorical(self.key, list(self.choices))
        return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))

    def decode(self, stored: Any) -> Any:
        """A value as Optuna stored it -> the config value."""
        if self.kind == "choice" and not all(_is_scalar(c) for c in self.choices):
            return json.loads(stored)
        return stored


def _param(key: str, decl: Any, current: Any, where: str) -> Param:
    """One entry of the space file, checked for form (not yet against the config)."""
    shape = "{low, high[, log, step, type]} or {choices: [...]}"
    if not isinstance(decl, dict) or not decl:
        raise ConfigError(f"{where}: expected {shape}, got {decl!r}")
    if "choices" in decl:
        if set(decl) != {"choices"}:
            raise ConfigError(f"{where}: 'choices' takes no other settings (got {sorted(set(decl) - {'choices'})})")
        choices = decl["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value")
        return Param(key, "choice", choices=tuple(choices))
    unknown = sorted(set(decl) - RANGE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown} (expected {shape})")
    if "low" not in decl or "high" not in decl:
        raise ConfigError(f"{where}: a range needs low and high")
    low, high, log, step = decl["low"], decl["high"], decl.get("log", False), decl.get("step")
    if not _is_number(low) or not _is_number(high):
        raise ConfigError(f"{where}: low and high must be finite numbers (got {low!r}, {high!r})")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0 (got {low})")
    if step is not None and (not _is_number(step) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive number (got {step!r})")
    if log and step is not None:
        raise ConfigError(f"{where}: a range takes log or step, not both")
    kind = decl.get("type")
    if kind is None:
        kind = "int" if isinstance(current, int) and not isinstance(current, bool) else "float"
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: type must be int or float (got {kind!r})")
    if kind == "int":
        if not all(isinstance(v, int) for v in (low, high)) or (step is not None and not isinstance(step, int)):
            raise ConfigError(f"{where}: an int range needs integer low, high and step (got {low!r}, {high!r}, {step!r})")
        return Param(key, "int", int(low), int(high), log, step)
    return Param(key, "float", float(low), float(high), log, None if step is None else float(step))


def load_space(path: Path, base: dict, fixed: Sequence[str] = ()) -> list[Param]:
    """The search space of ``path`` checked against the resolved config ``base`` (its
    ``to_dict()``): form, then every value a trial could get, through the config's own
    validation. ``fixed``: the ``--set`` overrides, whose keys may not be searched too."""
    shape = "expected a mapping of config keys to ranges or choices, e.g. 'train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}'"
    raw = read_yaml_mapping(path, "no such search-space file (write it beside the config, or give --space)", shape)
    if not raw:
        raise ConfigError(f"{path}: {shape}")
    fixed_keys = {text.partition("=")[0].strip() for text in fixed}
    params = []
    for key, decl in raw.items():
        key = str(key)
        where = f"{path}: {key}"
        if key in fixed_keys:
            raise ConfigError(f"{where}: is both searched and set with --set; drop one")
        param = _param(key, decl, _lookup(base, key), where)
        for value in param.values_to_check():
            try:
                experiment_from_dict(base, [f"{key}={json.dumps(value)}"])
            except ConfigError as exc:
                reason = str(exc).removeprefix("config: ")
                if "unknown key" in reason or "not a section" in reason:
                    raise ConfigError(f"{where}: not a config key ({reason})") from None
                raise ConfigError(f"{where}: value {json.dumps(value)} is refused by the config ({reason})") from None
        params.append(param)
    return params


# --------------------------------------------------------------------------- trials


class EpochReporter:
    """The training loop's ``on_epoch``: reports each epoch's monitored validation value to the
    trial, keeps the best, and stops the trial (``optuna.TrialPruned``) when the pruner says so."""

    def __init__(self, trial, higher: bool, pruned: type[Exception]):
        self.trial, self.higher, self.pruned = trial, higher, pruned
        self.best = math.nan

    def __call__(self, epoch: int, value: float) -> None:
        if math.isnan(value):
            return
        if math.isnan(self.best) or (value > self.best if self.higher else value < self.best):
            self.best = value
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise self.pruned(f"pruned after epoch {epoch} ({value:.4g})")


def default_pruner(optuna):
    """Stop a trial whose value at an epoch is worse than the median of the finished trials at
    that epoch, once 5 trials have finished, from the second epoch on (the first is noisy)."""
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)  # steps are epochs, from 1


def monitor_direction(cfg: ExperimentConfig) -> tuple[str, bool]:
    """(Optuna direction, higher is better) of ``train.monitor``: the loss is minimised, a measure
    goes the way the task-kind table says (auc up; logloss, nmae, smape... down)."""
    monitor = cfg.train.monitor
    higher = monitor != "loss" and higher_is_better(monitor.partition(".")[2])
    return ("maximize" if higher else "minimize"), higher


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for the ``number``-th finished trial: depends on nothing else, so resuming changes nothing."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def trial_state(trial) -> str:
    """COMPLETE, PRUNED, FAIL (training diverged: it counts) or INTERRUPTED (killed, Ctrl-C, an
    error: Optuna leaves it RUNNING or marks it FAIL; it does not count and is drawn again)."""
    state = trial.state.name
    if state == "RUNNING" or (state == "FAIL" and "error" not in trial.user_attrs):
        return "INTERRUPTED"
    return state


def _finished(study) -> int:
    return sum(trial_state(t) in ("COMPLETE", "PRUNED", "FAIL") for t in study.get_trials(deepcopy=False))


@dataclass
class TuneResult:
    """What :func:`tune` wrote and found."""

    study_dir: Path
    trials: pd.DataFrame  # one row per trial: number, state, value, seconds, one column per key, run_dir
    best_config: Path | None = None  # STUDY/best.yaml (None while no trial has completed)
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    monitor: str = "loss"

    @property
    def seconds(self) -> float:
        return float(self.trials["seconds"].sum()) if len(self.trials) else 0.0

    def budget(self) -> str:
        """``20 trials × 31.2 s mean = 624 s (10.4 min)``: what the search cost."""
        done = self.trials.dropna(subset=["seconds"])
        if not len(done):
            return "no trial finished"
        mean = float(done["seconds"].mean())
        total = float(done["seconds"].sum())
        return f"{len(done)} trials × {mean:.1f} s mean = {total:.0f} s ({total / 60:.1f} min)"


def tune(
    config: str | Path,
    trials: int,
    study_dir: str | Path,
    space: str | Path | None = None,
    seed: int = 0,
    timeout: float | None = None,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
    pruner=None,
) -> TuneResult:
    """Run (or continue) the study in ``study_dir`` until it holds ``trials`` finished trials or
    ``timeout`` seconds have passed (a started trial finishes); write ``best.yaml``,
    ``trials.csv`` and ``trials.png``. ``overrides``: ``--set`` strings applied to every trial.
    ``pruner``: an Optuna pruner (default: :func:`default_pruner`)."""
    optuna = _optuna()
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {trials})")
    config, study_dir = Path(config), Path(study_dir)
    space = Path(space) if space is not None else default_space(config)
    base_cfg = load_experiment(config, list(overrides))
    base = base_cfg.to_dict()
    params = load_space(space, base, overrides)
    direction, higher = monitor_direction(base_cfg)
    if study_dir.exists() and not study_dir.is_dir():
        raise ConfigError(f"--study-dir {study_dir}: exists and is not a folder")
    search = json.dumps({"config": base, "space": [p.__dict__ | {"choices": list(p.choices)} for p in params], "direction": direction}, sort_keys=True, default=str)

    study_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{(study_dir / STUDY_DB).resolve()}",
        direction=direction,
        load_if_exists=True,
        pruner=pruner or default_pruner(optuna),
    )
    recorded = study.user_attrs.get("search")
    if recorded is None:
        study.set_user_attr("search", search)
        study.set_user_attr("monitor", base_cfg.train.monitor)
    elif recorded != search:
        raise ConfigError(f"--study-dir {study_dir}: holds a study of another config, --set or search space; choose another --study-dir")

    def objective(trial) -> float:
        sets = [f"{p.key}={json.dumps(p.suggest(trial))}" for p in params]
        cfg = experiment_from_dict(base, [*sets, "train.progress=false"])
        run_dir = study_dir / "trials" / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        reporter = EpochReporter(trial, higher, optuna.TrialPruned)
        start = time.perf_counter()
        try:
            run_experiment(cfg, run_dir, overwrite=True, on_epoch=reporter)
        except DivergedError as exc:  # these values diverge: a failed trial (NaN), not a failed study
            trial.set_user_attr("error", str(exc))
            return math.nan
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
        if math.isnan(reporter.best):  # a counted failure, not an interruption drawn again and again
            trial.set_user_attr("error", f"validation {base_cfg.train.monitor} was NaN in every epoch")
        return reporter.best

    started = time.monotonic()
    while (done := _finished(study)) < trials:
        if timeout is not None and time.monotonic() - started >= timeout:
            log(f"--timeout {timeout:g} s reached after {done} of {trials} trials; run again to continue")
            break
        study.sampler = optuna.samplers.TPESampler(seed=trial_seed(seed, done))  # the done-th finished trial
        study.optimize(objective, n_trials=1)
        last = study.get_trials(deepcopy=False)[-1]
        value = f" {base_cfg.train.monitor} {last.value:.4f}" if last.value is not None else ""
        why = f": {last.user_attrs['error']}" if "error" in last.user_attrs else ""
        log(f"trial {last.number}: {trial_state(last).lower()}{value} ({last.user_attrs.get('seconds', 0):.1f} s){why}")
    return write_outputs(study, optuna, params, base, study_dir, base_cfg.train.monitor, log)


# --------------------------------------------------------------------------- outputs


def trials_frame(study, params: Sequence[Param]) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = trial_state(t)
        row = {
            "number": t.number,
            "state": state,
            "value": t.value,
            "seconds": t.user_attrs.get("seconds") if state != "INTERRUPTED" else None,  # the budget: finished trials
        }
        for p in params:
            row[p.key] = json.dumps(p.decode(t.params[p.key])) if p.key in t.params and p.kind == "choice" else t.params.get(p.key)
        row["run_dir"] = t.user_attrs.get("run_dir")
        rows.append(row)
    return pd.DataFrame(rows, columns=["number", "state", "value", "seconds", *(p.key for p in params), "run_dir"])


def plot_trials(frame: pd.DataFrame, study, higher: bool, monitor: str, path: Path) -> None:
    """Objective per trial (pruned trials at their last reported value) and the best so far."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = frame[frame["state"] == "COMPLETE"]
    ax.plot(complete["number"], complete["value"], "o", color="tab:blue", label="complete")
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in study.get_trials(deepcopy=False)
              if t.state.name == "PRUNED" and t.intermediate_values]
    if pruned:
        xs, ys = zip(*pruned)
        ax.plot(xs, ys, "x", color="tab:gray", label="pruned (last epoch reported)")
    if len(complete):
        best = complete["value"].cummax() if higher else complete["value"].cummin()
        ax.step(complete["number"], best, where="post", color="tab:orange", label="best so far")
    integer_ticks(ax.xaxis)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {monitor}")
    ax.set_title(f"{len(frame)} trials")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def write_outputs(study, optuna, params: Sequence[Param], base: dict, study_dir: Path, monitor: str, log) -> TuneResult:
    frame = trials_frame(study, params)
    write_table(frame, study_dir / TRIALS_CSV)
    higher = study.direction == optuna.study.StudyDirection.MAXIMIZE
    plot_trials(frame, study, higher, monitor, study_dir / TRIALS_PLOT)
    result = TuneResult(study_dir, frame, monitor=monitor)
    counts = frame["state"].value_counts().to_dict()
    log(f"{len(frame)} trials ({', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items()))}); budget: {result.budget()}")
    if counts.get("COMPLETE", 0) == 0:
        log(f"no trial completed: no {BEST}; wrote {study_dir / TRIALS_CSV}, {study_dir / TRIALS_PLOT}")
        return result
    best = study.best_trial
    result.best_params = {p.key: p.decode(best.params[p.key]) for p in params}
    result.best_value = float(best.value)
    cfg = experiment_from_dict(base, [f"{k}={json.dumps(v)}" for k, v in result.best_params.items()])
    header = (
        f"# msmt tune: trial {best.number} of {len(frame)}, validation {monitor} {best.value:.6g} (run: {best.user_attrs.get('run_dir')})\n"
        f"# budget: {result.budget()}\n"
        f"# searched: {', '.join(f'{k}={json.dumps(v)}' for k, v in result.best_params.items())}\n"
        f"# train it: msmt train {study_dir / BEST}\n"
    )
    result.best_config = study_dir / BEST
    atomic_write_text(result.best_config, header + dump_yaml(cfg.to_dict()))
    log(f"best: trial {best.number}, validation {monitor} {best.value:.4f}: {', '.join(f'{k}={json.dumps(v)}' for k, v in result.best_params.items())}")
    log(f"wrote {result.best_config}, {study_dir / TRIALS_CSV}, {study_dir / TRIALS_PLOT}")
    return result
