"""``msmt train``: config in, complete run directory out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import torch

from msmt.data.fit import fit_schema
from msmt.data.io import write_table
from msmt.data.loading import load_splits, read_data
from msmt.data.streaming import ParquetStream, fit_schema_streaming
from msmt.data.tensorize import encode_frame
from msmt.data.validate import validate_frame
from msmt.evaluation.evaluate import evaluate_model
from msmt.evaluation.report import write_report
from msmt.meta import meta_train, plan_meta
from msmt.models import build_model
from msmt.rundir import provenance
from msmt.rundir.layout import HISTORY, META_RATES, METRICS, SCHEMA, WEIGHTS, save_meta_rates, save_schema, save_weights, write_config, write_json
from msmt.runtime.threads import choose_threads
from msmt.spec.config import ExperimentConfig
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema
from msmt.training.checkpoint import CHECKPOINT
from msmt.training.distributed import Dist, init_from_env, shutdown
from msmt.training.loop import FitResult, fit, seed_everything


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train and evaluate; write the run directory; return ``{"val": M[, "test": M]}``.

    Under ``torchrun`` every process runs this; only rank 0 writes. ``resume``: continue from
    ``out_dir/checkpoint.pt`` (the data, schema and model are rebuilt deterministically from
    the config, then the checkpoint replaces weights, optimiser, RNG and data position).
    """
    out = Path(out_dir)
    dist, joined = init_from_env(cfg.train.device)
    try:
        return _run(cfg, out, resume, dist)
    finally:
        if joined:
            shutdown()


def load_in_memory(spec) -> tuple[dict, FittedSchema, dict]:
    """The data of a run held in memory: ``(splits, schema, encoded)`` — the split frames
    ({"train", "validation"[, "test"]}), the schema fitted on the training split, and each split
    encoded as a batch (a later split's panel history may reach into earlier splits' rows)."""
    splits = load_splits(spec)
    validate_frame(splits["train"], spec, with_labels=True)  # before fitting anything
    schema = fit_schema(splits["train"], spec)
    encoded = {}
    for i, (name, frame) in enumerate(splits.items()):
        # panel history of a later split may come from earlier splits' rows (still strictly earlier steps)
        earlier = list(splits.values())[:i]
        context = pd.concat(earlier, ignore_index=True) if earlier and spec.panel else None
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


def _run(cfg: ExperimentConfig, out: Path, resume: bool, dist: Dist) -> dict:
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
    if writer:  # the config first, so that a killed run can be resumed from its directory
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg)
    if writer and cfg.train.progress:
        print(describe_setup(setup), file=sys.stderr)
    result: FitResult = fit(model, cfg.train, cfg.loss, encoded["train"], encoded["validation"], splits["validation"], out, resume)
    if writer and cfg.train.progress and result.history:
        print(f"best epoch {result.best_epoch} ({cfg.train.monitor} {result.best_value:.4f}): its weights are the run's", file=sys.stderr)
    meta_history = meta_train(model, cfg.meta, meta_plan, encoded["train"], progress=cfg.train.progress)

    metrics = {"val": result.val_metrics}
    if meta_history:  # the meta-trained base is what the run directory stores
        metrics["val"] = evaluate_model(model, splits["validation"], encoded["validation"], cfg.train.eval_batch_size)
    if "test" in splits:
        metrics["test"] = evaluate_model(model, splits["test"], encoded["test"], cfg.train.eval_batch_size)

    if not writer:
        return metrics
    model.to("cpu")  # the run directory holds CPU weights: it loads on any machine (train.device may be a GPU)
    save_schema(schema, out / SCHEMA)
    save_weights(model, out / WEIGHTS)
    history = pd.DataFrame(result.history)
    write_table(history, out / HISTORY)
    write_json(out / METRICS, metrics)
    provenance.write(out, training=setup)  # which code produced these metrics (reuse checks compare it), and how
    if meta_history:
        write_table(pd.DataFrame(meta_history), out / "meta_history.csv")
    if meta_plan is not None and meta_plan.rates is not None:
        save_meta_rates(meta_plan.rates.as_dict(), out / META_RATES)
    write_report(out, cfg, metrics, history, result.best_epoch or None)
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return metrics
