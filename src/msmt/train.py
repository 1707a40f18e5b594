"""The one training loop, for every model and every loss strategy.

AdamW; per-epoch validation through the shared evaluator; early stopping on a declared
metric (``train.monitor``: ``"loss"`` or ``"<task>.<metric>"``) with the best weights restored;
a progress bar; one history row per epoch. The same seed gives the same numbers.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from msmt.config import ExperimentConfig
from msmt.data.tensorize import Batch, iterate_batches, num_rows
from msmt.evaluation import evaluate_model
from msmt.losses import build_balancer, task_losses
from msmt.metrics import monitor_value
from msmt.models.base import MultiTaskModel


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = math.nan
    val_metrics: dict = field(default_factory=dict)


@torch.no_grad()
def validation_loss(model: MultiTaskModel, data: Batch, batch_size: int) -> dict[str, float]:
    """Per-task mean loss over the whole split, and their task-weighted sum as ``loss``."""
    model.eval()
    tasks = model.schema.spec.tasks
    sums = {t.name: 0.0 for t in tasks}
    n = num_rows(data)
    for batch in iterate_batches(data, batch_size):
        losses = task_losses(tasks, model(batch), batch["labels"], batch["weight"])
        for name, value in losses.items():
            sums[name] += float(value) * num_rows(batch)
    per_task = {name: s / max(n, 1) for name, s in sums.items()}
    per_task["loss"] = sum(t.weight * per_task[t.name] for t in tasks)
    return per_task


def _flatten_metrics(metrics: dict) -> dict[str, float]:
    return {
        f"val_{task}_{name}": value
        for task, block in metrics["overall"].items()
        for name, value in block.items()
        if name != "rows"
    }


def fit(
    model: MultiTaskModel,
    cfg: ExperimentConfig,
    train_data: Batch,
    val_data: Batch,
    val_frame: pd.DataFrame,
) -> FitResult:
    """Train ``model`` in place; on return it holds the best epoch's weights."""
    tc = cfg.train
    tasks = cfg.dataset.tasks
    balancer = build_balancer(tasks, cfg.loss, model)
    params = [*model.parameters(), *balancer.parameters()]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    generator = torch.Generator().manual_seed(tc.seed)

    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    higher = False
    stale = 0
    n_batches = math.ceil(num_rows(train_data) / tc.batch_size)
    for epoch in range(1, tc.epochs + 1):
        model.train()
        sums = {t.name: 0.0 for t in tasks}
        total_sum = 0.0
        bar = tqdm(
            iterate_batches(train_data, tc.batch_size, shuffle=True, generator=generator),
            total=n_batches,
            desc=f"epoch {epoch}/{tc.epochs}",
            disable=None if tc.progress else True,  # None: off when not a terminal
            leave=False,
        )
        for batch in bar:
            outputs = model(batch)
            losses = task_losses(tasks, outputs, batch["labels"], batch["weight"])
            optimizer.zero_grad(set_to_none=True)
            total = balancer.backward(losses)
            if tc.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            total_sum += float(total)
            for name, value in losses.items():
                sums[name] += float(value.detach())
            bar.set_postfix(loss=f"{float(total):.4f}")
        train_losses = {name: s / n_batches for name, s in sums.items()}
        balancer.end_epoch(train_losses)

        val_losses = validation_loss(model, val_data, tc.eval_batch_size)
        val_metrics = evaluate_model(model, val_frame, val_data, tc.eval_batch_size)
        if tc.monitor == "loss":
            value, higher = val_losses["loss"], False
        else:
            value, higher = monitor_value(val_metrics, tc.monitor)
        row = {
            "epoch": epoch,
            "train_loss": total_sum / n_batches,
            **{f"train_{k}_loss": v for k, v in train_losses.items()},
            "val_loss": val_losses["loss"],
            **{f"val_{k}_loss": v for k, v in val_losses.items() if k != "loss"},
            **_flatten_metrics(val_metrics),
            **{f"weight_{k}": v for k, v in balancer.current_weights().items()},
        }
        result.history.append(row)
        improved = epoch == 1 or (not math.isnan(value) and (value > result.best_value if higher else value < result.best_value))
        if improved:
            result.best_epoch, result.best_value, result.val_metrics = epoch, value, val_metrics
            best_state = copy.deepcopy(model.state_dict())
            stale = 0
        else:
            stale += 1
        if tc.progress:
            tqdm.write(f"epoch {epoch}: train_loss={row['train_loss']:.4f} val_loss={row['val_loss']:.4f} {tc.monitor}={value:.4f}")
        if stale >= tc.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return result
