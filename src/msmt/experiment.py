"""``msmt train``: config in, complete run directory out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from msmt.config import ExperimentConfig
from msmt.data.encoders import fit_schema
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.data.validate import validate_frame
from msmt.evaluation import evaluate_model
from msmt.meta import meta_train, plan_meta
from msmt.models import build_model
from msmt.report import write_report
from msmt.run_dir import HISTORY, METRICS, SCHEMA, WEIGHTS, save_weights, write_config, write_json
from msmt.train import FitResult, fit, seed_everything


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path) -> dict:
    """Train and evaluate; write the run directory; return ``{"val": M[, "test": M]}``."""
    out = Path(out_dir)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    spec = cfg.dataset
    splits = load_splits(spec)
    validate_frame(splits["train"], spec, with_labels=True)  # before fitting anything
    schema = fit_schema(splits["train"], spec)
    encoded = {}
    for i, (name, frame) in enumerate(splits.items()):
        # panel history of a later split may come from earlier splits' rows (still strictly earlier steps)
        earlier = list(splits.values())[:i]
        context = pd.concat(earlier, ignore_index=True) if earlier and spec.panel else None
        encoded[name] = encode_frame(frame, schema, context=context)

    model = build_model(schema, cfg.model)
    meta_plan = plan_meta(model, cfg, splits["train"])  # meta config errors surface before training
    result: FitResult = fit(model, cfg, encoded["train"], encoded["validation"], splits["validation"])
    meta_history = meta_train(model, cfg, meta_plan, encoded["train"], progress=cfg.train.progress)

    metrics = {"val": result.val_metrics}
    if meta_history:  # the meta-trained base is what the run directory stores
        metrics["val"] = evaluate_model(model, splits["validation"], encoded["validation"], cfg.train.eval_batch_size)
    if "test" in splits:
        metrics["test"] = evaluate_model(model, splits["test"], encoded["test"], cfg.train.eval_batch_size)

    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    schema.save(out / SCHEMA)
    save_weights(model, out / WEIGHTS)
    history = pd.DataFrame(result.history)
    tmp = out / f".{HISTORY}.tmp"
    history.to_csv(tmp, index=False)
    tmp.replace(out / HISTORY)
    write_json(out / METRICS, metrics)
    if meta_history:
        pd.DataFrame(meta_history).to_csv(out / ".meta_history.csv.tmp", index=False)
        (out / ".meta_history.csv.tmp").replace(out / "meta_history.csv")
    write_report(out, cfg, metrics, history)
    return metrics
