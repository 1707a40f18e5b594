"""Batched scoring: model outputs -> probabilities / expected counts, as NumPy arrays.

The model may live on any device (``train.device``): each batch is copied to the model's device
and the predictions come back as CPU NumPy arrays. ``precision="bf16"`` scores under
``torch.autocast(bfloat16)``; ``compiled=True`` scores through :class:`msmt.scoring.compiled.CompiledPredictor`
(TorchInductor, weights frozen; the fastest CPU path with bf16, see docs/speed.md).
"""

from __future__ import annotations

import numpy as np
import torch

from msmt.models.base import MultiTaskModel
from msmt.runtime.device import autocast, check_precision, model_device
from msmt.spec.batch import Batch, iterate_batches, num_rows, to_device
from msmt.spec.task_kinds import to_user_units


@torch.no_grad()
def predict_batches(
    model: MultiTaskModel,
    data: Batch,
    batch_size: int = 8192,
    precision: str = "fp32",
    compiled: bool = False,
    autotune: bool = False,
) -> dict[str, np.ndarray]:
    """{task: [N]} predictions in user units (probability, expected count, value).

    ``precision``: "fp32" or "bf16" (autocast); ``compiled``: through TorchInductor (msmt.scoring.compiled),
    with ``autotune`` its max-autotune GEMM selection.
    """
    was_training = model.training
    model.eval()
    kinds = {t.name: t.kind for t in model.schema.spec.tasks}
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in kinds}
    inputs = {k: v for k, v in data.items() if k not in ("labels", "weight")}
    device = model_device(model)
    check_precision(precision)
    if compiled:
        from msmt.scoring.compiled import CompiledPredictor

        forward = CompiledPredictor(model, min(batch_size, max(num_rows(inputs), 1)), precision, autotune=autotune)
    else:

        def forward(batch: Batch) -> dict[str, torch.Tensor]:
            with autocast(device, precision):
                return model(to_device(batch, device))

    for batch in iterate_batches(inputs, batch_size):
        out = forward(batch)
        for t, kind in kinds.items():
            chunks[t].append(to_user_units(kind, out[t]).float().cpu().numpy())
    model.train(was_training)
    return {t: np.concatenate(c) if c else np.zeros(0, dtype=np.float32) for t, c in chunks.items()}
