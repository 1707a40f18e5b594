"""Scoring and evaluating a model's auxiliary outputs (label-free outputs such as ESMM's pCVR).

An auxiliary output has no training label; ``AuxiliaryOutput.label`` may name an evaluation-only
column (the funnel simulator's ``would_convert``: the counterfactual conversion of *every*
impression). Metrics use the same evaluator as the tasks, so an auxiliary AUC means the same as
a task AUC; the oracle block uses ``true_<name>`` when the table has it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from msmt.data.validate import label_column
from msmt.evaluation.evaluate import scenario_names, truth_columns
from msmt.evaluation.metrics import compute_metrics
from msmt.models.base import MultiTaskModel
from msmt.spec.batch import Batch, iterate_batches
from msmt.spec.dataset import Task
from msmt.spec.task_kinds import to_user_units


@torch.no_grad()
def predict_auxiliary(model: MultiTaskModel, data: Batch, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """{aux: [N]} probabilities of the dataset's auxiliary outputs ({} when the model has none)."""
    was_training = model.training
    model.eval()
    kinds = {a.name: a.kind for a in model.schema.spec.auxiliary}
    chunks: dict[str, list[np.ndarray]] = {}
    inputs = {k: v for k, v in data.items() if k not in ("labels", "weight")}
    for batch in iterate_batches(inputs, batch_size):
        for name, out in model.auxiliary_outputs(batch).items():
            chunks.setdefault(name, []).append(to_user_units(kinds[name], out).float().cpu().numpy())
    model.train(was_training)
    return {name: np.concatenate(c) for name, c in chunks.items()}


def evaluate_auxiliary(model: MultiTaskModel, frame: pd.DataFrame, data: Batch, batch_size: int = 8192) -> dict:
    """The ``M`` block for every auxiliary output that has an evaluation label in ``frame``."""
    spec = model.schema.spec
    preds = predict_auxiliary(model, data, batch_size)
    outputs = [a for a in spec.auxiliary if a.label and a.label in frame.columns and a.name in preds]
    if not outputs:
        return {}
    tasks = [Task(name=a.name, label=a.label, kind=a.kind) for a in outputs]
    labels = {t.name: label_column(frame, t.label, t.kind) for t in tasks}
    return compute_metrics(
        tasks, labels, {t.name: preds[t.name] for t in tasks}, scenario_names(frame, spec.scenario.column),
        truth_columns(frame, [t.name for t in tasks]),
    )
