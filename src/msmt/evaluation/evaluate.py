"""Score a table with a model and compute the grouped metrics (with the oracle when possible).

Tasks, and the dataset's auxiliary outputs (label-free outputs such as ESMM's pCVR) when the table
holds their evaluation-only label (``AuxiliaryOutput.label``, e.g. the funnel simulator's
``would_convert``: the counterfactual conversion of *every* impression). Both use the one scoring
path and the one evaluator, so an auxiliary AUC means the same as a task AUC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from msmt.data.validate import label_column, numeric_column
from msmt.evaluation.metrics import cohort_labels, compute_metrics
from msmt.models.base import MultiTaskModel
from msmt.runtime.device import model_device
from msmt.scoring.point import PointScales, earlier_half, fit_checked_point_scales
from msmt.scoring.predict import predict, predict_batches
from msmt.spec.batch import Batch
from msmt.spec.dataset import Task
from msmt.spec.fitted import OOV, FittedSchema, HashedVocabulary
from msmt.spec.measures import negative_binomial_deviance

TRUTH_PREFIX = "true_"


def scenario_names(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].astype("string").fillna("<NA>").to_numpy(dtype=object)


def truth_columns(frame: pd.DataFrame, task_names: list[str]) -> dict[str, np.ndarray]:
    """``true_<task>`` columns (the simulators' expected values), when present."""
    return {t: numeric_column(frame, TRUTH_PREFIX + t) for t in task_names if TRUTH_PREFIX + t in frame.columns}


def group_cohorts(schema: FittedSchema, data: Batch) -> np.ndarray | None:
    """[N] ``"<group> ∈ train"`` / ``"<group> ∉ train"``: whether each row's group (``dataset.group``, e.g.
    the user) has its own row in the training vocabulary of that sparse feature (an ID below the
    vocabulary's ``min_count`` counts as new: the model has no row of its own for it either).
    None when the dataset declares no group, the group is not a sparse feature, or it is hashed
    (every value then has a bucket)."""
    group = schema.spec.group
    names = [f.name for f in schema.spec.features.sparse]
    if group not in names or isinstance(schema.vocabularies.get(group), HashedVocabulary) or "sparse" not in data:
        return None
    return cohort_labels(group, (data["sparse"][:, names.index(group)] != OOV).numpy())


def evaluate_model(
    model: MultiTaskModel, frame: pd.DataFrame, data: Batch, batch_size: int = 8192, preds: dict | None = None,
    point: PointScales | None = None,
) -> dict:
    """The ``M`` block of DESIGN.md for ``frame`` (encoded as ``data``, labels included).

    ``preds`` (task -> [N]) replaces the model's own predictions, e.g. base + personal blocks.
    ``point``: the run's factors for absolute errors (:mod:`msmt.scoring.point`; None: the mean).
    """
    spec = model.schema.spec
    if preds is None:
        preds = predict_batches(model, data, batch_size)
    labels = {t.name: data["labels"][:, i].numpy() for i, t in enumerate(spec.tasks)}
    scenarios = scenario_names(frame, spec.scenario.column)
    return compute_metrics(
        spec.tasks, labels, preds, scenarios, truth_columns(frame, spec.task_names),
        per_row=_negative_binomial_deviances(model, data, labels, preds), cohorts=group_cohorts(model.schema, data),
        points=point.apply(preds, scenarios) if point is not None else None,
    )


def fit_point(model: MultiTaskModel, frame: pd.DataFrame, data: Batch, preds: dict, median: bool = False) -> PointScales:
    """The factors of :mod:`msmt.scoring.point` fitted on ``frame`` (the validation split, encoded as
    ``data``; ``preds``: the model's predictions of it, task -> [N]), each task's checked on the split's
    later half (by the panel's time; by row order for other data); ``median``: the point is the Poisson
    median of c·μ (``train.point_forecast: median``)."""
    spec = model.schema.spec
    labels = {t.name: data["labels"][:, i].numpy() for i, t in enumerate(spec.tasks)}
    times = frame[spec.panel.time].to_numpy() if spec.panel is not None else None
    return fit_checked_point_scales(
        spec.tasks, labels, preds, scenario_names(frame, spec.scenario.column), earlier_half(times, len(frame)), median=median,
    )


def _negative_binomial_deviances(model: MultiTaskModel, data: Batch, labels: dict, preds: dict) -> dict:
    """{task: {"nb_deviance": [N]}} for negative-binomial tasks, with the model's dispersion per row."""
    with torch.no_grad():
        log_alpha = model.distribution_parameters({"scenario": data["scenario"].to(model_device(model))})
    # detach: one α per task is an expanded view of the parameter, which keeps requires_grad under no_grad
    return {
        task: {"nb_deviance": negative_binomial_deviance(labels[task], preds[task], np.exp(a.detach().double().cpu().numpy()))}
        for task, a in log_alpha.items()
    }


def evaluate_auxiliary(model: MultiTaskModel, frame: pd.DataFrame, data: Batch, batch_size: int = 8192) -> dict:
    """The ``M`` block for every auxiliary output that has an evaluation label in ``frame`` ({} if none)."""
    spec = model.schema.spec
    outputs = [a for a in spec.auxiliary if a.label and a.label in frame.columns]
    preds = predict(model, data, batch_size, auxiliary=True).values if outputs else {}
    outputs = [a for a in outputs if a.name in preds]
    if not outputs:
        return {}
    tasks = [Task(name=a.name, label=a.label, kind=a.kind) for a in outputs]
    labels = {t.name: label_column(frame, t.label, t.kind) for t in tasks}
    return compute_metrics(
        tasks, labels, {t.name: preds[t.name] for t in tasks}, scenario_names(frame, spec.scenario.column),
        truth_columns(frame, [t.name for t in tasks]),
    )
