"""Gradient-boosted trees (LightGBM) on msmt's own features and splits: the baseline a networks'
table has to beat besides logistic regression and item popularity.

Reads an experiment config and does what ``msmt train`` does up to the model: the same splits
(:func:`msmt.experiments.run.load_in_memory`), the schema fitted on the training split, the rows
encoded by it. The trees see exactly those encodings:

* each sparse feature's index (0 padding, 1 out-of-vocabulary, 2.. training values; hashed
  features their bucket) and the scenario index as LightGBM categorical features;
* the standardised dense features;
* each multi-valued feature as one 0/1 column per value (vocabularies up to ``MAX_MULTI_HOT``
  values; larger ones are left out and named in the result's ``left_out``);
* on panel data, the same per-row summary of the history ``model.history_summary`` gives the
  networks (:class:`msmt.layers.history.HistorySummary`).

One model per task (``LGBMClassifier`` for binary tasks, ``LGBMRegressor`` with the Poisson
objective for count tasks and squared error for regression tasks) on the rows where the task
exists, weighted like the networks' loss (sample weight × task weight), with early stopping on
the validation split. Predictions are probabilities / expected values, measured by
:func:`msmt.evaluation.metrics.compute_metrics`: the same ``{"val": M, "test": M}`` block as a
run directory's ``metrics.json`` (overall and per scenario, the oracle where the data has the
true values).

LightGBM is an optional dependency (``pip install msmt[bench]``).
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from msmt.data.io import atomic_write_text
from msmt.evaluation.evaluate import group_cohorts, scenario_names, truth_columns
from msmt.evaluation.metrics import compute_metrics
from msmt.experiments.run import load_in_memory
from msmt.layers.history import HistorySummary
from msmt.spec.batch import Batch
from msmt.spec.config import ExperimentConfig
from msmt.spec.dataset import TaskKind
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema

MAX_MULTI_HOT = 256  # multi-valued features with more values than this are left out
OBJECTIVE = {TaskKind.BINARY: "binary", TaskKind.COUNT: "poisson", TaskKind.REGRESSION: "regression"}


@dataclass(frozen=True)
class TreeSettings:
    """LightGBM's settings (the same for every task)."""

    n_estimators: int = 2000  # an upper bound: early stopping picks the number of trees
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    early_stopping_rounds: int = 50
    threads: int = 1
    seed: int = 0


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise ConfigError("the LightGBM baseline needs lightgbm: pip install 'msmt[bench]'") from None
    return lightgbm


def feature_table(schema: FittedSchema, batch: Batch) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(features [N, columns], the categorical columns, the multi-valued features left out) of an
    encoded split."""
    spec = schema.spec
    cols: dict[str, np.ndarray] = {"scenario": batch["scenario"].numpy()}
    for j, f in enumerate(spec.features.sparse):
        cols[f"sparse.{f.name}"] = batch["sparse"][:, j].numpy()
    categorical = list(cols)
    for j, f in enumerate(spec.features.dense):
        cols[f"dense.{f.name}"] = batch["dense"][:, j].numpy()
    left_out = []
    for f, size in zip(spec.features.multi_sparse, schema.vocab_sizes(spec.features.multi_sparse)):
        if size - 2 > MAX_MULTI_HOT:
            left_out.append(f.name)
            continue
        ids = batch[f"multi.{f.name}"]  # [N, L], 0 = padding
        hot = torch.zeros(ids.shape[0], size).scatter_(1, ids, 1.0)[:, 1:]  # [N, V-1]: OOV, then each value
        for v in range(hot.shape[1]):
            cols[f"multi.{f.name}.{v + 1}"] = hot[:, v].numpy()
    if schema.panel is not None:
        with torch.no_grad():
            summary = HistorySummary(schema)(batch).numpy()
        for k in range(summary.shape[1]):
            cols[f"history.{k}"] = summary[:, k]
    frame = pd.DataFrame(cols)
    for c in categorical:
        frame[c] = pd.Categorical(frame[c], categories=range(int(frame[c].max()) + 1 if len(frame) else 1))
    return frame, categorical, left_out


def _aligned(frame: pd.DataFrame, train: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """``frame`` with the training table's categories (an index never seen in training is unknown to the trees)."""
    out = frame.copy()
    for c in categorical:
        out[c] = pd.Categorical(np.asarray(frame[c], dtype=np.int64), categories=train[c].cat.categories)
    return out


def _weights(batch: Batch, i: int) -> np.ndarray:
    w = batch["weight"] * (batch["task_weight"][:, i] if "task_weight" in batch else 1.0)
    return w.numpy()


def _rows(batch: Batch, i: int) -> np.ndarray:
    return batch["task_mask"][:, i].numpy() if "task_mask" in batch else np.ones(len(batch["scenario"]), dtype=bool)


def lightgbm_baseline(cfg: ExperimentConfig, settings: TreeSettings = TreeSettings(), out: Path | None = None) -> dict:
    """Train one LightGBM model per task on the config's training split, early-stopped on its
    validation split; returns ``{"val": M, ["test": M,] "trees": {task: best iteration},
    "seconds": s, "left_out": [...]}`` and writes it to ``out/metrics.json`` when ``out`` is given."""
    lgb = _lightgbm()
    start = time.perf_counter()
    splits, schema, encoded = load_in_memory(cfg.dataset)
    spec = schema.spec
    tables = {name: feature_table(schema, batch) for name, batch in encoded.items()}
    train, categorical, left_out = tables["train"]
    X = {name: train if name == "train" else _aligned(t[0], train, categorical) for name, t in tables.items()}
    preds: dict[str, dict[str, np.ndarray]] = {name: {} for name in encoded}
    trees = {}
    for i, task in enumerate(spec.tasks):
        common = dict(
            objective=OBJECTIVE[task.kind], n_estimators=settings.n_estimators, learning_rate=settings.learning_rate,
            num_leaves=settings.num_leaves, min_child_samples=settings.min_child_samples, n_jobs=settings.threads,
            random_state=settings.seed, verbose=-1,
        )
        model = lgb.LGBMClassifier(**common) if task.kind == TaskKind.BINARY else lgb.LGBMRegressor(**common)
        tr, va = _rows(encoded["train"], i), _rows(encoded["validation"], i)
        y = {name: batch["labels"][:, i].numpy() for name, batch in encoded.items()}
        held_out = (X["validation"][va], y["validation"][va])
        # lightgbm 4.7 names the validation set eval_X / eval_y (eval_set is deprecated there)
        evals = {"eval_X": held_out[:1], "eval_y": held_out[1:]} if "eval_X" in inspect.signature(model.fit).parameters else {"eval_set": [held_out]}
        model.fit(
            X["train"][tr], y["train"][tr], sample_weight=_weights(encoded["train"], i)[tr], **evals,
            eval_sample_weight=[_weights(encoded["validation"], i)[va]],
            categorical_feature=categorical, callbacks=[lgb.early_stopping(settings.early_stopping_rounds, verbose=False)],
        )
        trees[task.name] = int(model.best_iteration_ or settings.n_estimators)
        for name in encoded:
            if name == "train":
                continue
            preds[name][task.name] = model.predict_proba(X[name])[:, 1] if task.kind == TaskKind.BINARY else model.predict(X[name])
    result: dict = {}
    for name in ("validation", "test"):
        if name not in encoded:
            continue
        labels = {t.name: encoded[name]["labels"][:, i].numpy() for i, t in enumerate(spec.tasks)}
        frame = splits[name]
        result["val" if name == "validation" else "test"] = compute_metrics(
            spec.tasks, labels, preds[name], scenario_names(frame, spec.scenario.column), truth_columns(frame, spec.task_names),
            cohorts=group_cohorts(schema, encoded[name]),
        )
    result.update(trees=trees, seconds=round(time.perf_counter() - start, 2), left_out=left_out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float))
    return result
