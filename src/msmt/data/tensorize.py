"""DataFrame -> a dict of tensors, and fast batching by slicing (no per-row Python).

Batch layout (every model reads the keys it needs; ``N`` rows):

=====================  ====================  ==============================================
key                    shape / dtype         meaning
=====================  ====================  ==============================================
``scenario``           [N] int64             0 = unknown scenario, 1..P = known ones
``sparse``             [N, S] int64          one column per sparse feature (vocab indices)
``dense``              [N, D] float32        standardised dense features
``multi.<name>``       [N, L] int64          multi-valued feature, right-padded with 0
``scenario_sparse``    [N, A_s] int64        scenario attribute categoricals
``scenario_dense``     [N, A_d] float32      scenario attribute numerics
``labels``             [N, T] float32        one column per task, in ``spec.tasks`` order
``weight``             [N] float32           per-sample loss weight (1 without a column)
``seq.behaviour``      [N, W] int64          panel history events (only with a ``panel``)
``seq.performance``    [N, W, F] float32     panel history metrics, standardised
``seq.mask``           [N, W] bool           True where the past step was observed
=====================  ====================  ==============================================
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from msmt.data.encoders import FittedSchema, encode_dense, encode_multi, encode_scenarios, encode_sparse
from msmt.data.validate import label_column, numeric_column, validate_frame

Batch = dict[str, torch.Tensor]


def encode_frame(
    frame: pd.DataFrame, schema: FittedSchema, with_labels: bool = True, context: pd.DataFrame | None = None
) -> Batch:
    """Validate and encode a table with the fitted schema.

    ``context``: earlier rows used only for panel history (never encoded as rows themselves).
    """
    spec = schema.spec
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

        seqs = encode_panel(frame, spec.panel, schema.extra["panel"], context)
        out.update({k: torch.from_numpy(v) for k, v in seqs.items()})
    if with_labels:
        labels = np.stack([label_column(frame, t.label, t.kind) for t in spec.tasks], axis=1)
        out["labels"] = torch.from_numpy(labels.astype(np.float32))
        if spec.sample_weight:
            weight = numeric_column(frame, spec.sample_weight, allow_missing=False)
        else:
            weight = np.ones(len(frame))
        out["weight"] = torch.from_numpy(weight.astype(np.float32))
    return out


def num_rows(batch: Batch) -> int:
    return int(batch["scenario"].shape[0])


def take(batch: Batch, index: torch.Tensor | slice) -> Batch:
    return {k: v[index] for k, v in batch.items()}


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """The batch on ``device`` (tensors already there are not copied).

    ``non_blocking`` lets a host-to-GPU copy overlap with the GPU's work where the source is
    pinned memory (otherwise it is an ordinary synchronous copy). Results are only ever brought
    back to the CPU with blocking copies (``.cpu()``), so nothing is read before it has arrived.
    """
    device = torch.device(device)
    return {k: v.to(device, non_blocking=device.type == "cuda") for k, v in batch.items()}


def iterate_batches(
    data: Batch,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    start_batch: int = 0,
) -> Iterator[Batch]:
    """Yield mini-batches by tensor indexing; shuffling uses ``generator`` for reproducibility.

    ``start_batch`` skips the first batches of the same order (resuming mid-epoch).
    """
    n = num_rows(data)
    first = start_batch * batch_size
    if shuffle:
        order = torch.randperm(n, generator=generator)
        for start in range(first, n, batch_size):
            yield take(data, order[start : start + batch_size])
    else:
        for start in range(first, n, batch_size):
            yield take(data, slice(start, start + batch_size))
