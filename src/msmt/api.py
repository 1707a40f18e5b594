"""The Python API: what the command line does, from Python, through the same code.

::

    import msmt

    run = msmt.train("experiment.yaml", data=frame, out="runs/mine", overrides={"model.name": "mmoe"})
    run.metrics                                   # {"val": M, "test": M}, as in metrics.json
    scored = run.predict(new_rows)                # the rows + one pred_<task> column per task
    M = run.evaluate(labelled_rows)               # what `msmt evaluate --out` writes
    run = msmt.load("runs/mine")                  # a finished run directory
    personal = run.adapt(rows, out="runs/mine_personal")   # personal blocks per group
    run.export("onnx", "model.onnx")              # parity-checked against eager PyTorch
    study = msmt.tune("experiment.yaml", trials=20)   # msmt tune: Optuna over experiment.tune.yaml
    run = msmt.train(study.best_config)           # the best trial's config (study.budget(): its cost)

``msmt.train`` writes the run directory ``msmt train`` writes (``run_experiment``); ``Run``
loads it as ``evaluate``/``predict``/``serve`` do (``load_run``) and scores through the one
scoring path (``msmt.scoring.predict.predict``). The ``msmt evaluate``/``predict``/``adapt``
commands call the functions below, so a number from Python equals the command's.

Tables are DataFrames or paths (CSV/Parquet). A DataFrame given to ``msmt.train`` is first
written to ``RUN_DIR/data/<split>.csv`` so that the run's ``config.yaml`` reproduces the run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from msmt.data.io import source_of, write_table
from msmt.data.loading import frame_as_read, read_data
from msmt.experiments.run import run_experiment
from msmt.rundir.layout import HISTORY, METRICS, LoadedRun, load_run, write_json
from msmt.spec.config import ExperimentConfig, experiment_from_dict, load_experiment
from msmt.spec.errors import ConfigError

if TYPE_CHECKING:
    from msmt.experiments.tune import TuneResult

Table = pd.DataFrame | str | Path
Note = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


# --------------------------------------------------------------------------- training


def _overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"model.name": "mmoe"}`` or ``["model.name=mmoe"]`` -> ``--set`` strings (values as JSON, which is YAML)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def resolve_config(config: ExperimentConfig | Mapping | str | Path, overrides=None) -> ExperimentConfig:
    """An experiment config from a YAML path, a mapping (relative paths from the working
    directory) or a config object, with ``overrides`` applied (``--set`` semantics)."""
    sets = _overrides(overrides)
    if isinstance(config, (str, Path)):
        return load_experiment(config, sets)
    if isinstance(config, ExperimentConfig):
        return experiment_from_dict(config.to_dict(), sets)
    if isinstance(config, Mapping):
        return experiment_from_dict(dict(config), sets, base=Path.cwd())
    raise ConfigError(f"config: expected a YAML path, a mapping or an ExperimentConfig, got {type(config).__name__}")


def _with_data(cfg: ExperimentConfig, data: Table | Mapping[str, Table], out: Path) -> ExperimentConfig:
    """``cfg`` reading ``data`` instead of its dataset's files; DataFrames written to ``out/data/``."""
    splits = dict(data) if isinstance(data, Mapping) else {"train": data}
    unknown = sorted(set(splits) - {"train", "validation", "test"})
    if unknown or "train" not in splits:
        raise ConfigError(f"data: expected a table or a mapping with 'train' (and 'validation', 'test'); got keys {sorted(splits)}")
    files = {}
    for name, table in splits.items():
        if isinstance(table, pd.DataFrame):
            path = out / "data" / f"{name}.csv"
            # categoricals as text first, as scoring a DataFrame reads them (a float id 12.0 -> "12")
            write_table(frame_as_read(table, cfg.dataset), path)
            table = path
        files[name] = str(Path(table).resolve())
    data_dict = cfg.to_dict()
    data_dict["dataset"]["files"] = files
    return experiment_from_dict(data_dict)


def train(
    config: ExperimentConfig | Mapping | str | Path,
    data: Table | Mapping[str, Table] | None = None,
    out: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    quiet: bool = True,
) -> Run:
    """Train and write a run directory, exactly as ``msmt train CONFIG --out OUT --set ...``.

    Args:
        config: experiment YAML path, a mapping with the same keys, or an ``ExperimentConfig``.
        data: the training table (DataFrame or CSV/Parquet path) replacing the dataset's files
            (validation/test are then split off by ``dataset.split``), or a mapping
            ``{"train": ..., "validation": ..., "test": ...}``. None: the config's files.
        out: the run directory (default ``runs/<config file name>``, or ``runs/<dataset.name>``).
        overrides: ``{"model.name": "mmoe", "train.epochs": 3}`` or ``["model.name=mmoe"]``.
        quiet: no progress bar or per-epoch lines (``--quiet``).
    Returns:
        the finished :class:`Run`.
    """
    from msmt.experiments.run import check_run_dir

    cfg = resolve_config(config, overrides)
    if out is None:
        out = Path("runs") / (Path(config).stem if isinstance(config, (str, Path)) else cfg.dataset.name)
    out = Path(out)
    check_run_dir(out, overwrite=False)  # before the data is written into it
    if data is not None:
        cfg = _with_data(cfg, data, out)
    if quiet:
        cfg.train.progress = False
    run_experiment(cfg, out, inputs=("data",) if data is not None else ())
    return Run(out)


def tune(
    config: str | Path,
    trials: int,
    study_dir: str | Path | None = None,
    space: str | Path | None = None,
    seed: int = 0,
    timeout: float | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    quiet: bool = True,
) -> TuneResult:
    """Search hyper-parameters, exactly as ``msmt tune CONFIG --trials N ...`` (needs ``msmt[tune]``).

    Args:
        config: experiment YAML path; the search space is ``<config stem>.tune.yaml`` beside it
            unless ``space`` names another file (:mod:`msmt.experiments.tune` shows the format).
        trials: finished trials the study should hold; a study already in ``study_dir`` continues.
        study_dir: the study's folder (default ``runs/tune-<config stem>``).
        seed: the sampler's seed; timeout: start no trial after this many seconds.
        overrides: settings of every trial, as for :func:`train`.
        quiet: no line per trial.
    Returns:
        a :class:`~msmt.experiments.tune.TuneResult`: ``best_config`` (``best.yaml``, which
        :func:`train` runs), ``best_value``, ``best_params``, ``trials`` (a DataFrame), ``budget()``.
    """
    from msmt.experiments.tune import tune as run_tune

    config = Path(config)
    study_dir = Path(study_dir) if study_dir is not None else Path("runs") / f"tune-{config.stem}"
    log = (lambda message: None) if quiet else _stderr
    return run_tune(config, trials, study_dir, space=space, seed=seed, timeout=timeout, overrides=_overrides(overrides), log=log)


def load(run_dir: str | Path) -> Run:
    """A finished run directory (``msmt train`` or ``msmt adapt`` wrote it)."""
    run = Run(run_dir)
    run.loaded  # noqa: B018  (fail here, naming the directory, when it is not a run)
    return run


# --------------------------------------------------------------------------- scoring


def read_table_for(run: LoadedRun, table: Table) -> pd.DataFrame:
    """A table to score, typed as the run reads files (categoricals as text)."""
    if isinstance(table, pd.DataFrame):
        return frame_as_read(table, run.schema.spec)
    return read_data(table, run.schema.spec)


def read_context(run: LoadedRun, context: Table | Sequence[Table] | None) -> pd.DataFrame | None:
    """Rows used only for panel history: one table or several (concatenated)."""
    if context is None:
        return None
    tables = [context] if isinstance(context, (pd.DataFrame, str, Path)) else list(context)
    if not tables:
        return None
    frames = [read_table_for(run, t) for t in tables]
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    out.attrs["source"] = " + ".join(f.attrs.get("source", "<data>") for f in frames)
    return out


def check_history(run: LoadedRun, frame: pd.DataFrame, context: pd.DataFrame | None, note: Note = _stderr) -> int:
    """Warn when rows to score have a panel history window the given rows do not cover (their
    history would be silently shorter than in training); returns how many rows."""
    spec = run.schema.spec
    if spec.panel is None:
        return 0
    from msmt.data.encoders import encode_scenarios
    from msmt.data.panel import short_history

    exempt = None
    if spec.scenario.column in spec.panel.keys:  # a (unit, new scenario) pair has no past before launch
        exempt = encode_scenarios(frame, run.schema) == 0
    rows, first = short_history(frame, spec.panel, context, exempt)
    if rows:
        what = "the data and --context" if context is not None else "the data (no --context given)"
        note(
            f"warning: {rows} of {len(frame)} rows have a {spec.panel.window}-step history window that starts before "
            f"the first {spec.panel.time} in {what} ({first}); their history is incomplete and their predictions differ "
            f"from what the full history gives. Pass the {spec.panel.window} steps before the data with --context FILE "
            "(several files allowed), e.g. the training and validation files."
        )
    return rows


def encode_for_scoring(run: LoadedRun, data: Table, context=None, with_labels: bool = False, note: Note = _stderr):
    """``(frame, encoded batch)`` of a table to score, panel history from ``context`` (checked)."""
    from msmt.data.tensorize import encode_frame
    from msmt.data.validate import check_scenarios

    frame = read_table_for(run, data)
    ctx = read_context(run, context)
    encoded = encode_frame(frame, run.schema, with_labels=with_labels, context=ctx)  # validates the columns
    check_scenarios(frame, run.schema)  # the one rule for scenarios unseen in training
    check_history(run, frame, ctx, note)
    return frame, encoded


def score(
    run: LoadedRun, frame: pd.DataFrame, encoded, batch_size: int = 8192, precision: str = "fp32",
    compiled: bool = False, autotune: bool = False, note: Note = _stderr,
) -> dict[str, np.ndarray]:
    """Predictions of the run in user units: base + each row's group block when the run has
    blocks (eager, fp32; the block set checked: its base, each file's hash, shapes, finite
    values), else the base model, eager or compiled. A non-finite prediction is an input error."""
    from msmt.meta.episodes import group_values
    from msmt.rundir.blocks import open_blocks
    from msmt.scoring.predict import predict

    blocks, groups, group = open_blocks(run), None, run.schema.spec.group
    if blocks.orphans:
        note(f"note: {len(blocks.orphans)} block file(s) in {run.path / 'blocks'} are not in its index (an interrupted msmt adapt); not used")
    if group and len(blocks):
        if group in frame.columns:
            groups = group_values(frame, group, allow_missing=True)
            if compiled or precision != "fp32":
                note("note: personal blocks are scored eagerly in fp32 (--precision/--compile apply to the base only)")
        else:
            note(f"note: no group column '{group}' in the data: every row is scored by the base")
    if compiled:
        note(
            f"compiling the model with TorchInductor ({'max-autotune, ' if autotune else ''}frozen weights, {precision}; "
            "one graph per batch shape): the first batch takes tens of seconds" + (", autotuning minutes" if autotune else "")
        )
    start = time.perf_counter()
    scores = predict(run.model, encoded, batch_size, precision=precision, compiled=compiled, autotune=autotune, groups=groups, blocks=blocks)
    if compiled:
        note(f"scored {len(frame)} rows in {time.perf_counter() - start:.1f} s, compilation included")
    if groups is not None:
        note(f"{scores.personal_rows} of {len(frame)} rows scored with their group's block, the rest by the base")
    check_predictions(scores.values, source_of(frame))
    return scores.values


def check_predictions(values: dict, source: str) -> None:
    """Never a silent NaN or inf in the output: such a row's inputs are beyond what the model
    scores (``predict``, ``evaluate`` and the service's answers; ``source``: the file or ``request``)."""
    from msmt.spec.errors import DataError

    for task, column in values.items():
        bad = ~np.isfinite(np.asarray(column, dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                source, None,
                f"non-finite prediction of '{task}' (inputs beyond what the model can score; {int(bad.sum())} such row(s))",
                row=row,
            )


def evaluate_frame(run: LoadedRun, frame: pd.DataFrame, encoded, preds: dict, batch_size: int = 8192) -> dict:
    """The metrics ``M`` (DESIGN.md) of ``preds`` on ``frame``."""
    from msmt.evaluation.evaluate import evaluate_model

    return evaluate_model(run.model, frame, encoded, batch_size, preds=preds, point=run.point)


def prediction_columns(run: LoadedRun, frame: pd.DataFrame, preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ``predict`` adds to the rows: ``pred_<task>`` per task (probability / expected value) and,
    for a run with a point forecast (``train.point_forecast: scaled | median``), ``point_<task>`` per count task."""
    from msmt.evaluation.evaluate import scenario_names

    columns = {f"pred_{task}": values for task, values in preds.items()}
    if run.point is not None:
        points = run.point.apply(preds, scenario_names(frame, run.schema.spec.scenario.column))
        columns.update({f"point_{task}": values for task, values in points.items()})
    return columns


def adapt_run(
    run: LoadedRun, data: Table, out: str | Path, steps: int | None = None, lr: float | None = None,
    context: Table | Sequence[Table] | None = None, backtrack: int | None = None,
) -> dict:
    """Personal blocks for every group of ``data`` written to ``out`` (the base copied there once
    when ``out`` is another directory) and ``out/adapt.json``; returns that summary. ``context``:
    earlier rows for panel history; a Meta-SGD run adapts with its learned rates unless ``lr``.
    ``steps``, ``lr``, ``backtrack``: the run's ``meta.inner_steps``, ``meta.inner_lr`` and
    ``meta.inner_backtrack`` unless given.

    Checked before anything is written: ``lr``, ``out`` (RUN_DIR itself, or a new / empty folder),
    the run's current block set (carried into the new one), the group column, the scenarios (the
    one rule), every adapted block finite; the new set is published atomically."""
    import math

    from msmt.data.tensorize import encode_frame
    from msmt.data.validate import check_scenarios, require_columns
    from msmt.meta import adapt_groups, split_parameters
    from msmt.rundir.blocks import copy_base, open_blocks, save_blocks
    from msmt.rundir.layout import WEIGHTS, load_meta_rates
    from msmt.rundir.manifest import sha256_file

    spec, out = run.schema.spec, Path(out)
    if lr is not None and (not math.isfinite(lr) or lr <= 0):
        raise ConfigError(f"--lr: must be a finite number > 0, got {lr}")
    same = out.exists() and out.resolve() == Path(run.path).resolve()
    if not same and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: not empty; adapt writes a new run directory (or RUN_DIR itself)")
    open_blocks(run)  # its current block set too: it is carried into the new one
    if not spec.group:
        raise ConfigError(f"{run.path / 'config.yaml'}: dataset.group is not set; msmt adapt needs a group column")
    meta = run.config.meta.model_copy()
    if steps is not None:
        meta.inner_steps = steps
    if lr is not None:
        meta.inner_lr = lr
    if backtrack is not None:
        meta.inner_backtrack = backtrack
    frame = read_table_for(run, data)
    require_columns(frame, [spec.group])
    encoded = encode_frame(frame, run.schema, with_labels=True, context=read_context(run, context))
    check_scenarios(frame, run.schema)
    split = split_parameters(run.model, meta)
    rates = None if lr is not None else load_meta_rates(run.path)  # Meta-SGD's learned rates, unless an lr is given
    blocks, stats = adapt_groups(run.model, split, frame, encoded, spec.group, spec.tasks, meta, rates)  # every block checked finite
    if not same:
        copy_base(run.path, out)
    save_blocks(out, blocks, sha256_file(Path(run.path) / WEIGHTS))
    summary = {
        **stats.summary(),
        "data": str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>",
        "personal_parameters": list(split.personal),
        "inner_steps": meta.inner_steps,
        "inner_lr": "meta-sgd rates" if rates is not None else meta.inner_lr,
        "inner_backtrack": meta.inner_backtrack,
    }
    write_json(out / "adapt.json", summary)
    return summary


class Run:
    """A run directory: its config, schema, model, metrics and history, and what can be done with it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._loaded: LoadedRun | None = None

    def __repr__(self) -> str:
        return f"msmt.Run({str(self.path)!r})"

    @property
    def loaded(self) -> LoadedRun:
        if self._loaded is None:
            self._loaded = load_run(self.path)
        return self._loaded

    @property
    def config(self) -> ExperimentConfig:
        return self.loaded.config

    @property
    def model(self):
        return self.loaded.model

    @property
    def schema(self):
        return self.loaded.schema

    @property
    def tasks(self) -> list[str]:
        return self.loaded.schema.spec.task_names

    @property
    def metrics(self) -> dict:
        """``{"val": M[, "test": M]}`` of ``metrics.json``."""
        return json.loads((self.path / METRICS).read_text())

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch losses and validation metrics (``history.csv``)."""
        return pd.read_csv(self.path / HISTORY)

    def predict(
        self, data: Table, context: Table | Sequence[Table] | None = None, *, batch_size: int = 8192,
        precision: str = "fp32", compiled: bool = False, autotune: bool = False,
    ) -> pd.DataFrame:
        """The rows of ``data`` (a DataFrame keeps its index and columns as given) plus one
        ``pred_<task>`` column per task: probabilities for binary tasks, expected values for
        count and regression tasks. ``context``: earlier rows (one table or several) used only
        for panel history."""
        run = self.loaded
        frame, encoded = encode_for_scoring(run, data, context, with_labels=False)
        preds = score(run, frame, encoded, batch_size, precision, compiled, autotune)
        result = data.copy() if isinstance(data, pd.DataFrame) else frame.copy()
        for name, values in prediction_columns(run, frame, preds).items():
            result[name] = values
        return result

    def evaluate(
        self, data: Table, context: Table | Sequence[Table] | None = None, *, batch_size: int = 8192,
        out: str | Path | None = None,
    ) -> dict:
        """Metrics per scenario x task on labelled rows (next to the oracle when ``true_<task>``
        columns exist): what ``msmt evaluate --out`` writes (to ``out`` too, when given)."""
        run = self.loaded
        frame, encoded = encode_for_scoring(run, data, context, with_labels=True)
        M = evaluate_frame(run, frame, encoded, score(run, frame, encoded, batch_size), batch_size)
        if out is not None:
            write_json(Path(out), M)
        return M

    def adapt(self, data: Table, out: str | Path | None = None, steps: int | None = None, lr: float | None = None) -> Run:
        """A personal block per group of ``data`` (``msmt adapt``); ``out`` defaults to this
        run's directory. Returns the run that holds the blocks (its ``predict`` uses them)."""
        target = Path(out) if out is not None else self.path
        adapt_run(self.loaded, data, target, steps, lr)
        return Run(target)

    def export(self, format: str = "onnx", out: str | Path | None = None, data: Table | None = None,
               rows: int = 512, tolerance: float = 1e-5):
        """Export the model (``onnx`` or ``torchscript``, dynamic batch) to ``out`` (default
        ``RUN_DIR/model.onnx`` / ``model.pt``), written only after its outputs match eager PyTorch
        within ``tolerance`` on ``rows`` rows of ``data`` (default: the run's validation split).
        Returns the :class:`~msmt.scoring.export.ExportResult` (path, inputs, max abs diff)."""
        from msmt.data.tensorize import encode_frame
        from msmt.scoring.export import export_model, validation_batch

        run = self.loaded
        out = Path(out) if out is not None else self.path / f"model.{'onnx' if format == 'onnx' else 'pt'}"
        if data is not None:
            batch = encode_frame(read_table_for(run, data).iloc[:rows], run.schema, with_labels=False)
        else:
            batch = validation_batch(run, rows)
        return export_model(run.model, batch, format, out, tolerance)
