"""DataFrame -> the batch of :mod:`msmt.spec.batch` (layout there), validated and encoded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from msmt.data.encoders import encode_dense, encode_multi, encode_scenarios, encode_sparse
from msmt.data.validate import label_column, task_presence, validate_frame, weight_values
from msmt.spec.batch import Batch
from msmt.spec.fitted import FittedSchema


def encode_frame(
    frame: pd.DataFrame, schema: FittedSchema, with_labels: bool = True, context: pd.DataFrame | None = None,
    own_history: bool = True,
) -> Batch:
    """Validate and encode a table with the fitted schema.

    ``context``: earlier rows used only for panel history and ``dataset.behaviour`` (never encoded
    as rows themselves). ``own_history=False``: the frame's rows are not each other's history
    (only ``context``'s are).
    """
    spec = schema.spec
    if spec.behaviour is not None:  # the derived behaviour.* dense columns, before anything reads them
        from msmt.data.behaviour import add_behaviour

        frame = add_behaviour(frame, spec, schema.behaviour_priors, context, own_history)
    validate_frame(frame, spec, with_labels=with_labels)
    out: Batch = {
        "scenario": torch.from_numpy(encode_scenarios(frame, schema)),
        "sparse": torch.from_numpy(encode_sparse(frame, schema, spec.features.sparse)),
        "dense": torch.from_numpy(encode_dense(frame, schema, spec.features.dense)),
        "scenario_sparse": torch.from_numpy(encode_sparse(frame, schema, spec.scenario.attributes.sparse)),
        "scenario_dense": torch.from_numpy(encode_dense(frame, schema, spec.scenario.attributes.dense)),
    }
    for feat in spec.features.multi_sparse:
        out[f"multi.{feat.name}"] = torch.from_numpy(encode_multi(frame, schema, feat))
    if spec.panel is not None:
        from msmt.data.panel import encode_panel

        seqs = encode_panel(frame, spec.panel, schema.panel, context, own_history)
        out.update({k: torch.from_numpy(v) for k, v in seqs.items()})
    if with_labels:
        present = task_presence(frame, spec)  # [N, T]
        labels = np.stack([label_column(frame, t.label, t.kind, present[:, i]) for i, t in enumerate(spec.tasks)], axis=1)
        out["labels"] = torch.from_numpy(labels.astype(np.float32))
        weight = weight_values(frame, spec.sample_weight) if spec.sample_weight else np.ones(len(frame))
        out["weight"] = torch.from_numpy(weight.astype(np.float32))
        out["task_mask"] = torch.from_numpy(present)
        task_weight = np.ones(present.shape, dtype=np.float32)
        for i, t in enumerate(spec.tasks):
            if t.weight_column:
                task_weight[:, i] = weight_values(frame, t.weight_column, present[:, i])
        out["task_weight"] = torch.from_numpy(task_weight)
    return out
