"""``msmt train``: config in, complete run directory out."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from msmt.data.fit import fit_schema
from msmt.data.io import write_table
from msmt.data.loading import load_splits, read_data
from msmt.data.streaming import ParquetStream, fit_schema_streaming
from msmt.data.tensorize import encode_frame
from msmt.data.validate import validate_frame
from msmt.evaluation.baselines import naive_baselines
from msmt.evaluation.evaluate import evaluate_model, fit_point
from msmt.evaluation.report import write_report
from msmt.meta import meta_train, plan_meta
from msmt.meta.warmup import warm_up_ids
from msmt.models import build_model
from msmt.rundir import provenance
from msmt.rundir.layout import CONFIG, HISTORY, META_HISTORY, META_RATES, METRICS, REFIT_HISTORY, SCHEMA, WEIGHTS, save_meta_rates, save_schema, save_weights, write_config, write_json
from msmt.rundir.manifest import MANIFEST, write_manifest
from msmt.runtime.threads import choose_threads
from msmt.scoring.point import PointScales, save_point_scales
from msmt.scoring.predict import predict_batches
from msmt.spec.config import ExperimentConfig
from msmt.spec.errors import ConfigError, DivergedError
from msmt.spec.fitted import FittedSchema
from msmt.training.checkpoint import CHECKPOINT
from msmt.training.distributed import Dist, init_from_env, shutdown
from msmt.training.loop import FitResult, fit, seed_everything
from msmt.training.refit import refit


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    inputs: tuple[str, ...] = (),
    on_epoch: Callable[[int, float], None] | None = None,
    naive: dict | None = None,
) -> dict:
    """Train and evaluate; write the run directory; return ``{"val": M[, "test": M]}``.

    Under ``torchrun`` every process runs this; only rank 0 writes. ``resume``: continue from
    ``out_dir/checkpoint.pt`` (the data, schema and model are rebuilt deterministically from
    the config, then the checkpoint replaces weights, optimiser, RNG and data position).
    ``overwrite``: ``out_dir`` may hold an earlier run, which is removed (blocks, checkpoint,
    plots and all) once the data and the model have been checked; without it a non-empty
    ``out_dir`` is an error before anything is read. ``inputs``: entries of ``out_dir`` that are
    the run's own input (the Python API writes DataFrames to ``data/``), not an earlier run.
    ``on_epoch(epoch, value)``: told the monitored validation value after each epoch
    (:func:`msmt.training.loop.fit`); an exception it raises ends the run unfinished (no manifest).
    ``naive``: a dict the writing process fills with the report's naive forecasts, ``{split: {forecaster:
    M}}`` (:func:`msmt.evaluation.baselines.naive_baselines`; empty where none applies).

    The run directory is written in this order: ``provenance.json`` and ``config.yaml`` (so that
    a killed run can be resumed), then the results, and ``manifest.json`` last
    (:mod:`msmt.rundir.manifest`): a directory without a manifest is not a finished run. When
    training stops on a non-finite loss or gradient, the directory keeps the last good checkpoint
    (if ``train.checkpoint_every`` wrote one) or nothing.
    """
    out = Path(out_dir)
    if not resume:
        check_run_dir(out, overwrite, inputs)
    dist, joined = init_from_env(cfg.train.device)
    try:
        return _run(cfg, out, resume, dist, overwrite, on_epoch, naive)
    finally:
        if joined:
            shutdown()


RUN_MARKERS = (CONFIG, MANIFEST)  # a folder holding one of these is a run directory


def check_run_dir(out: Path, overwrite: bool, inputs: tuple[str, ...] = ()) -> None:
    """Before any work: ``out`` is new, empty (but for ``inputs``), or (with ``overwrite``) an
    earlier run directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder (--out names the run directory to write)")
    if not out.is_dir() or not any(p.name not in inputs for p in out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"{out}: not empty (an earlier run?); add --overwrite to replace it, or choose another --out")
    if not any((out / marker).exists() for marker in RUN_MARKERS):
        raise ConfigError(f"{out}: not empty and not a run directory (no {CONFIG}); --overwrite replaces only a run directory")


def clear_run_dir(out: Path) -> None:
    """Remove everything in an earlier run directory: a retrained base must not keep the old
    blocks, checkpoint, plots or metrics."""
    for entry in sorted(out.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def discard_unfinished(out: Path, created: bool) -> None:
    """After a failed run: keep the last good checkpoint (with the config that resumes it), or nothing."""
    if (out / CHECKPOINT).exists():
        return
    for name in (CONFIG, provenance.PROVENANCE):
        (out / name).unlink(missing_ok=True)
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def load_in_memory(spec) -> tuple[dict, FittedSchema, dict]:
    """The data of a run held in memory: ``(splits, schema, encoded)`` — the split frames
    ({"train", "validation"[, "test"]}), the schema fitted on the training split, and each split
    encoded as a batch (a later split's panel history may reach into earlier splits' rows)."""
    splits = load_splits(spec)
    validate_frame(splits["train"], spec, with_labels=True)  # before fitting anything
    schema = fit_schema(splits["train"], spec)
    encoded = {}
    for i, (name, frame) in enumerate(splits.items()):
        # panel history and behaviour of a later split may come from earlier splits' rows (still strictly earlier)
        earlier = list(splits.values())[:i]
        context = pd.concat(earlier, ignore_index=True) if earlier and (spec.panel or spec.behaviour) else None
        encoded[name] = encode_frame(frame, schema, context=context)
    return splits, schema, encoded


def training_setup(cfg: ExperimentConfig, dist: Dist) -> dict:
    """How this run trains: processes, backend, device, CPU threads (``train.num_threads``, else
    the physical cores shared by this machine's processes), precision; ``provenance.json`` keeps it."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world)) if dist.active else 1
    threads, why = choose_threads(cfg.train.num_threads, local)
    backend = None
    if dist.active:
        import torch.distributed as tdist

        backend = tdist.get_backend()
    return {
        "world_size": dist.world,
        "backend": backend,
        "device": str(dist.device),
        "threads": threads,
        "threads_from": why,
        "precision": cfg.train.precision,
        "streaming": cfg.train.streaming,
    }


def describe_setup(setup: dict) -> str:
    """One line for the training log."""
    procs = f"{setup['world_size']} processes (torchrun, {setup['backend']})" if setup["world_size"] > 1 else "1 process"
    return (
        f"training on {setup['device']}: {procs}, {setup['threads']} CPU threads per process ({setup['threads_from']}), "
        f"precision {setup['precision']}" + (", streaming" if setup["streaming"] else "")
    )


def _load_streaming(cfg: ExperimentConfig, dist: Dist) -> tuple[dict, FittedSchema, dict]:
    """Training rows stay on disk (a :class:`ParquetStream`); validation and test are read."""
    spec, tc = cfg.dataset, cfg.train
    if cfg.meta.algorithm != "none":
        raise ConfigError(f"meta.algorithm '{cfg.meta.algorithm}' needs the training rows in memory; set train.streaming=false")
    schema = fit_schema_streaming(spec.files.train, spec)
    splits = {"validation": read_data(spec.files.validation, spec)}
    if spec.files.test:
        splits["test"] = read_data(spec.files.test, spec)
    encoded = {name: encode_frame(frame, schema) for name, frame in splits.items()}
    encoded["train"] = ParquetStream(
        spec.files.train, schema, tc.batch_size, tc.shuffle_buffer, tc.seed, dist.rank, dist.world, tc.num_workers
    )
    return splits, schema, encoded


def score_validation(cfg: ExperimentConfig, model, splits: dict, encoded: dict) -> tuple[dict, PointScales | None]:
    """``model``'s metrics on the validation split, with the count tasks' point forecast fitted on
    that split first (``train.point_forecast: scaled | median``; None for ``mean``)."""
    preds = predict_batches(model, encoded["validation"], cfg.train.eval_batch_size)
    point = None
    if cfg.train.point_forecast != "mean":
        point = fit_point(model, splits["validation"], encoded["validation"], preds, median=cfg.train.point_forecast == "median")
    return evaluate_model(model, splits["validation"], encoded["validation"], cfg.train.eval_batch_size, preds=preds, point=point), point


def _run(cfg: ExperimentConfig, out: Path, resume: bool, dist: Dist, overwrite: bool = False, on_epoch=None, naive=None) -> dict:
    writer = dist.is_main
    if resume and not (out / CHECKPOINT).exists():  # before any data is read
        raise ConfigError(f"{out}: nothing to resume (no {CHECKPOINT}; the run finished or never checkpointed)")
    setup = training_setup(cfg, dist)
    torch.set_num_threads(setup["threads"])
    seed_everything(cfg.train.seed)
    if cfg.train.streaming:
        splits, schema, encoded = _load_streaming(cfg, dist)
    else:
        splits, schema, encoded = load_in_memory(cfg.dataset)

    model = build_model(schema, cfg.model)
    meta_plan = plan_meta(model, cfg.meta, splits["train"]) if "train" in splits else None  # meta config errors surface before training
    created = not out.exists()
    if writer:  # the config first, so that a killed run can be resumed from its directory
        if overwrite and not resume and out.is_dir():
            clear_run_dir(out)
        out.mkdir(parents=True, exist_ok=True)
        provenance.write(out)  # before anything else: a directory of this msmt without a manifest is unfinished
        write_config(out, cfg)
    if writer and cfg.train.progress:
        print(describe_setup(setup), file=sys.stderr)
    refitted: FitResult | None = None
    try:
        result: FitResult = fit(model, cfg.train, cfg.loss, encoded["train"], encoded["validation"], splits["validation"], out, resume, on_epoch)
        if cfg.train.refit:  # the first fit scores the validation split (out of sample) and fits the point forecast
            first_val, point = score_validation(cfg, model, splits, encoded)
            model, refitted = refit(cfg, schema, splits, encoded["validation"], max(result.best_epoch, 1))
        meta_history = meta_train(model, cfg.meta, meta_plan, encoded["train"], progress=cfg.train.progress)
        warmup_history = warm_up_ids(model, cfg.meta, encoded["train"], progress=cfg.train.progress) if not cfg.train.streaming else []
    except DivergedError:
        if writer:
            discard_unfinished(out, created and not resume)
        raise
    if writer and cfg.train.progress and result.history:
        kept = (f"the run stores a fresh model trained {len(refitted.history)} epochs on training + validation rows (train.refit)"
                if refitted else "its weights are the run's")
        print(f"best epoch {result.best_epoch} ({cfg.train.monitor} {result.best_value:.4f}): {kept}", file=sys.stderr)
        if model.forecast is not None:
            print("forecast offset: " + ", ".join(f"{t} = naive {m}" for t, m in model.forecast.chosen().items()), file=sys.stderr)

    if refitted is not None:
        metrics = {"val": first_val}
    elif meta_history or warmup_history or cfg.train.point_forecast != "mean":  # the stored model: after meta-training and warm-up
        val, point = score_validation(cfg, model, splits, encoded)
        metrics = {"val": val}
    else:
        metrics, point = {"val": result.val_metrics}, None
    if "test" in splits:
        metrics["test"] = evaluate_model(model, splits["test"], encoded["test"], cfg.train.eval_batch_size, point=point)

    if not writer:
        return metrics
    model.to("cpu")  # the run directory holds CPU weights: it loads on any machine (train.device may be a GPU)
    save_schema(schema, out / SCHEMA)
    save_weights(model, out / WEIGHTS)
    history = pd.DataFrame(result.history)
    write_table(history, out / HISTORY)
    if refitted is not None:
        write_table(pd.DataFrame(refitted.history), out / REFIT_HISTORY)
    write_json(out / METRICS, metrics)
    if point is not None:
        save_point_scales(point, out)
    provenance.write(out, training=setup)  # which code produced these metrics (reuse checks compare it), and how
    if meta_history:
        write_table(pd.DataFrame(meta_history), out / META_HISTORY)
    if warmup_history:
        write_table(pd.DataFrame(warmup_history), out / "warmup_history.csv")
    if meta_plan is not None and meta_plan.rates is not None:
        save_meta_rates(meta_plan.rates.as_dict(), out / META_RATES)
    baselines = naive_baselines(schema, cfg.model, splits, encoded, cfg.train.eval_batch_size)
    if naive is not None:
        naive.update(baselines)
    write_report(out, cfg, metrics, history, result.best_epoch or None, baselines, refit_epochs=len(refitted.history) if refitted else None)
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    write_manifest(out)  # last: every file above, hashed
    return metrics
