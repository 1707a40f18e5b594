"""The one training loop, for every model and every loss strategy.

AdamW; per-epoch validation through the shared evaluator; early stopping on a declared
metric (``train.monitor``: ``"loss"`` or ``"<task>.<metric>"``) with the best weights restored;
a progress bar; one history row per epoch. The same seed gives the same numbers.

The same loop also checkpoints every ``train.checkpoint_every`` optimiser steps and resumes
from such a checkpoint (:mod:`msmt.training.checkpoint`), and runs data-parallel under ``torchrun``
(:mod:`msmt.training.distributed`): each process trains on its shard of every global batch.

Placement: the model (and the loss balancer) move to ``train.device`` (:mod:`msmt.runtime.device`)
before the optimisers are built; the data stays on the CPU and each batch is copied to the
device as it is used. Validation loss, predictions and every logged number come back to the
CPU; the best weights are kept as CPU copies.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from msmt.data.streaming import ParquetStream
from msmt.evaluation.evaluate import evaluate_model
from msmt.evaluation.metrics import monitor_value
from msmt.models.base import MultiTaskModel
from msmt.runtime.device import autocast, model_device, resolve_device
from msmt.spec.batch import Batch, iterate_batches, num_rows, take, to_device
from msmt.spec.config import ExperimentConfig
from msmt.training.checkpoint import CHECKPOINT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from msmt.training.distributed import Dist
from msmt.training.losses import build_balancer, task_losses
from msmt.training.optim import build_optimizers


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
def validation_loss(model: MultiTaskModel, data: Batch, batch_size: int, dist: Dist = Dist()) -> dict[str, float]:
    """Per-task mean loss over the whole split, and their task-weighted sum as ``loss``.

    Distributed: each rank sums its slice of the rows and the sums are added up. ``data`` may
    stay on the CPU: each batch is copied to the model's device.
    """
    model.eval()
    device = model_device(model)
    tasks = model.schema.spec.tasks
    sums = torch.zeros(len(tasks), dtype=torch.float64, device=device)  # [T] on the device: no read-back per batch
    n = num_rows(data)
    start, stop = dist.bounds(n)
    for batch in iterate_batches(take(data, slice(start, stop)), batch_size):
        batch = to_device(batch, device)
        losses = task_losses(tasks, model(batch), batch["labels"], batch["weight"])
        sums += torch.stack([losses[t.name] for t in tasks]).double() * num_rows(batch)
    totals = dist.sum(sums)
    per_task = {t.name: s / max(n, 1) for t, s in zip(tasks, totals)}
    per_task["loss"] = sum(t.weight * per_task[t.name] for t in tasks)
    return per_task


def _flatten_metrics(metrics: dict) -> dict[str, float]:
    return {
        f"val_{task}_{name}": value
        for task, block in metrics["overall"].items()
        for name, value in block.items()
        if name != "rows"
    }


@dataclass
class LoopState:
    """Where the loop is: everything besides model/optimiser/RNG that a checkpoint must hold."""

    epoch: int = 1
    step: int = 0  # batches finished in ``epoch``
    global_step: int = 0
    epoch_generator: torch.Tensor | None = None  # batch-order generator state when ``epoch`` began
    sums: dict[str, float] = field(default_factory=dict)
    total_sum: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = math.nan
    val_metrics: dict = field(default_factory=dict)
    stale: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _cpu_state(model: torch.nn.Module) -> dict:
    """A CPU copy of ``model.state_dict()`` (the best weights: no second copy in GPU memory)."""
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in model.state_dict().items()}


def _checkpoint(path, model, best_state, optimizers, balancer, generator, loop: LoopState, device) -> None:
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "best_model": best_state,
            "optimizers": [o.state_dict() for o in optimizers],
            "balancer": balancer.state_dict(),
            "rng": rng_state(generator, device),
            "loop": loop.to_dict(),
        },
    )


def fit(
    model: MultiTaskModel,
    cfg: ExperimentConfig,
    train_data: Batch | ParquetStream,
    val_data: Batch,
    val_frame: pd.DataFrame,
    run_dir: str | Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Train ``model`` in place; on return it holds the best epoch's weights.

    The model is moved to ``train.device`` (``cuda:LOCAL_RANK`` under torchrun with CUDA) and
    is left there; ``train_data`` and ``val_data`` stay where they are (the CPU) and are copied
    batch by batch.

    ``train_data``: encoded rows in memory, or a :class:`ParquetStream` (each rank then reads
    its own row groups instead of a shard of each global batch).
    ``run_dir``: where ``checkpoint.pt`` goes (with ``train.checkpoint_every``); ``resume``:
    continue from that checkpoint instead of starting afresh.
    """
    tc = cfg.train
    tasks = cfg.dataset.tasks
    device = resolve_device(tc.device)
    dist = Dist.current(device)
    dist.check_strategy(cfg.loss.strategy)
    model.to(device)  # before the balancer and optimisers, which hold references to its parameters
    balancer = build_balancer(tasks, cfg.loss, model).to(device)
    optimizers = build_optimizers(model, list(balancer.parameters()), tc, dist.active)
    generator = torch.Generator().manual_seed(tc.seed)  # batch order: drawn on the CPU, where the data is
    ckpt_path = Path(run_dir) / CHECKPOINT if run_dir is not None else None

    s = LoopState()
    best_state = _cpu_state(model)
    if resume:
        if ckpt_path is None:
            raise ValueError("resume needs run_dir")
        saved = load_checkpoint(ckpt_path)  # on the CPU; load_state_dict copies to the device
        model.load_state_dict(saved["model"])
        best_state = saved["best_model"]
        for optimizer, state in zip(optimizers, saved["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        balancer.load_state_dict(saved["balancer"])
        set_rng_state(saved["rng"], generator, device)
        s = LoopState(**saved["loop"])
    net = dist.wrap(model)  # DDP broadcasts rank 0's (possibly restored) weights

    higher = False
    stream = train_data if isinstance(train_data, ParquetStream) else None
    n_batches = math.ceil(num_rows(train_data) / tc.batch_size) if stream is None else None
    while s.epoch <= tc.epochs:
        epoch = s.epoch
        if s.step == 0:
            s.epoch_generator = generator.get_state()
            s.sums, s.total_sum = {t.name: 0.0 for t in tasks}, 0.0
        else:  # mid-epoch resume: redraw the same order, skip what was done
            generator.set_state(s.epoch_generator)
        model.train()
        if stream is None:
            batches = iterate_batches(train_data, tc.batch_size, shuffle=True, generator=generator, start_batch=s.step)
        else:
            batches = dist.lockstep(stream.batches(epoch, start_batch=s.step))
        bar = tqdm(
            batches,
            total=n_batches,
            initial=s.step,
            desc=f"epoch {epoch}/{tc.epochs}",
            disable=None if (tc.progress and dist.is_main) else True,  # None: off when not a terminal
            leave=False,
        )
        for batch in bar:
            if stream is not None or dist.usable(num_rows(batch)):
                local = to_device(dist.shard(batch) if stream is None else batch, device)
                with autocast(device, tc.precision):
                    outputs = net(local)
                outputs = {name: value.float() for name, value in outputs.items()}  # losses in float32
                losses = task_losses(tasks, outputs, local["labels"], local["weight"])
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                total = balancer.backward(losses)
                dist.sync_grads(balancer.parameters())
                if tc.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                for optimizer in optimizers:
                    optimizer.step()
                # the logged numbers: one all-reduce and one device-to-host copy per step
                logged = dist.mean(torch.stack([total.detach(), *(losses[n].detach() for n in s.sums)]))
                s.total_sum += logged[0]
                for name, value in zip(s.sums, logged[1:]):
                    s.sums[name] += value
                bar.set_postfix(loss=f"{logged[0]:.4f}")
            s.step += 1
            s.global_step += 1
            if ckpt_path is not None and tc.checkpoint_every and s.global_step % tc.checkpoint_every == 0 and dist.is_main:
                _checkpoint(ckpt_path, model, best_state, optimizers, balancer, generator, s, device)
        train_losses = {name: v / max(s.step, 1) for name, v in s.sums.items()}
        balancer.end_epoch(train_losses)

        val_losses = validation_loss(model, val_data, tc.eval_batch_size, dist)
        preds = dist.predict(model, val_data, tc.eval_batch_size)
        val_metrics = evaluate_model(model, val_frame, val_data, tc.eval_batch_size, preds=preds)
        if tc.monitor == "loss":
            value, higher = val_losses["loss"], False
        else:
            value, higher = monitor_value(val_metrics, tc.monitor)
        row = {
            "epoch": epoch,
            "train_loss": s.total_sum / max(s.step, 1),
            **{f"train_{k}_loss": v for k, v in train_losses.items()},
            "val_loss": val_losses["loss"],
            **{f"val_{k}_loss": v for k, v in val_losses.items() if k != "loss"},
            **_flatten_metrics(val_metrics),
            **{f"weight_{k}": v for k, v in balancer.current_weights().items()},
        }
        s.history.append(row)
        improved = epoch == 1 or (not math.isnan(value) and (value > s.best_value if higher else value < s.best_value))
        if improved:
            s.best_epoch, s.best_value, s.val_metrics = epoch, value, val_metrics
            best_state = _cpu_state(model)
            s.stale = 0
        else:
            s.stale += 1
        if tc.progress and dist.is_main:
            tqdm.write(f"epoch {epoch}: train_loss={row['train_loss']:.4f} val_loss={row['val_loss']:.4f} {tc.monitor}={value:.4f}")
        s.epoch, s.step = epoch + 1, 0
        if s.stale >= tc.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(history=s.history, best_epoch=s.best_epoch, best_value=s.best_value, val_metrics=s.val_metrics)
