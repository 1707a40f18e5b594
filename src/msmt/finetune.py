"""Few-shot fine-tuning of a trained model on a handful of rows (e.g. a new scenario's first days).

M2M (Zhang et al., WSDM 2022) serves scenarios never seen in training from their attributes
(zero-shot); a few labelled rows of the new scenario then adapt it. ``finetune`` copies the
model and runs a few AdamW steps on those rows with the task losses the trainer uses, so the
original model is left untouched.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch

from msmt.data.tensorize import Batch, iterate_batches
from msmt.losses import task_losses
from msmt.models.base import MultiTaskModel


def finetune(
    model: MultiTaskModel,
    data: Batch,
    steps: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    which: Literal["all", "task"] = "all",
    seed: int = 0,
) -> MultiTaskModel:
    """A fine-tuned copy of ``model`` after ``steps`` optimiser steps on ``data`` (labels required).

    Args:
        which: ``"all"`` parameters, or only the task-specific ones (``model.task_parameters()``),
            which keeps the shared representation fixed.
    """
    tuned = copy.deepcopy(model)
    tuned.train()
    params = list(tuned.parameters()) if which == "all" else tuned.task_parameters()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    tasks = tuned.schema.spec.tasks
    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        for batch in iterate_batches(data, batch_size, shuffle=True, generator=generator):
            losses = task_losses(tasks, tuned(batch), batch["labels"], batch["weight"])
            total = sum(t.weight * losses[t.name] for t in tasks)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break
    tuned.eval()
    return tuned
