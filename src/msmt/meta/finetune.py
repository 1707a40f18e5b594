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

from msmt.models.base import MultiTaskModel
from msmt.runtime.device import model_device
from msmt.spec.batch import Batch, iterate_batches, to_device
from msmt.spec.errors import ConfigError
from msmt.training.losses import model_losses, weighted_total
from msmt.training.optim import make_optimizer


def finetune(
    model: MultiTaskModel,
    data: Batch,
    steps: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    which: Literal["all", "task", "scenario"] = "all",
    seed: int = 0,
    optimizer: Literal["adamw", "sgd"] = "adamw",
) -> MultiTaskModel:
    """A fine-tuned copy of ``model`` after ``steps`` optimiser steps on ``data`` (labels required).

    The copy lives on ``model``'s device; ``data`` may stay on the CPU (batches are copied there).

    Args:
        optimizer: AdamW, or SGD with momentum 0.9.
        which: ``"all"`` parameters; only the task-specific ones (``model.task_parameters()``);
            or only the scenario-knowledge path (``model.scenario_parameters()``, M2M: the
            attribute/profile embeddings and the S̃ MLP), the few-shot choice that leaves every
            generator, expert and tower fixed and moves only how the new scenario is described.
    """
    tuned = copy.deepcopy(model)
    tuned.train()
    if which == "all":
        params = list(tuned.parameters())
    elif which == "task":
        params = tuned.task_parameters()
    else:
        if not hasattr(tuned, "scenario_parameters"):
            raise ConfigError(f"finetune: model '{tuned.registry_name}' has no scenario parameters (which='scenario')")
        params = tuned.scenario_parameters()
    # SGD (with momentum 0.9) takes steps proportional to the gradient: gentler on a handful of rows
    opt = make_optimizer(params, optimizer, lr, momentum=0.9 if optimizer == "sgd" else 0.0)
    tasks = tuned.schema.spec.tasks
    device = model_device(tuned)
    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        for batch in iterate_batches(data, batch_size, shuffle=True, generator=generator):
            batch = to_device(batch, device)
            losses = model_losses(tuned, batch)
            total = weighted_total(tasks, losses)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    tuned.eval()
    return tuned
