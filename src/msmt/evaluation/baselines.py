"""The naive forecasts beside a run's own numbers: what a practitioner tries before any model.

A panel run's ``report.md`` shows, per split, the registered naive forecasters as they start,
before any fitting (:mod:`msmt.models.naive`; MODELS.md): ``naive_last``, yesterday's value (the
most recent observed one), and ``naive_mean``, the trailing mean over the panel window, each
from the row's own raw history. A count task's forecast is b + ε (ε = 1% of the task's training
mean, :data:`msmt.layers.naive.EPSILON_SHARE`), a binary task with a history gets the last
indicator or the window rate (clipped to [0.02, 0.98]), a task without a history its scenario's
training mean. They are scored by the run's own path (:func:`msmt.evaluation.evaluate.evaluate_model`),
so every cell compares with the model's.
"""

from __future__ import annotations

import pandas as pd

from msmt.evaluation.evaluate import evaluate_model
from msmt.layers.naive import forecast_tasks
from msmt.models.registry import build_model, model_class

NAIVE_BASELINES = ("naive_last", "naive_mean")
SPLITS = {"val": "validation", "test": "test"}  # metrics.json's split name -> the split's frame


def naive_blocks(schema, model_cfg, frame: pd.DataFrame, encoded, batch_size: int = 8192) -> dict[str, dict]:
    """{forecaster: the ``M`` block of DESIGN.md} of the naive forecasters on ``frame`` (encoded as
    ``encoded``, labels and history included); {} when none applies to the dataset (no panel, or no
    task with a history) or the run predates the training-label statistics they need (msmt 0.1).
    ``model_cfg``: the run's ``model`` section (the naive forecasters ignore its network options)."""
    if any(model_class(name).not_applicable(schema.spec) is not None for name in NAIVE_BASELINES) or any(
        task not in schema.task_stats for task, _ in forecast_tasks(schema)
    ):
        return {}
    return {
        name: evaluate_model(build_model(schema, model_cfg.model_copy(update={"name": name})).eval(), frame, encoded, batch_size)
        for name in NAIVE_BASELINES
    }


def naive_baselines(schema, model_cfg, frames: dict[str, pd.DataFrame], encoded: dict, batch_size: int = 8192) -> dict[str, dict]:
    """{split ("val", "test"): :func:`naive_blocks`} for the splits in ``frames`` ({"validation":
    frame, "test": frame}, encoded alike); splits without a naive forecast are left out."""
    out = {}
    for split, frame_name in SPLITS.items():
        if frame_name in frames and (blocks := naive_blocks(schema, model_cfg, frames[frame_name], encoded[frame_name], batch_size)):
            out[split] = blocks
    return out
