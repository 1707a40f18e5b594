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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from msmt.data.streaming import ParquetStream
from msmt.evaluation.evaluate import evaluate_model
from msmt.evaluation.metrics import monitor_value
from msmt.models.base import MultiTaskModel
from msmt.runtime.device import autocast, model_device, resolve_device
from msmt.spec.batch import Batch, iterate_batches, num_rows, take, to_device
from msmt.spec.config import LossConfig, TrainConfig
from msmt.spec.errors import DivergedError
from msmt.training.averaging import weight_average
from msmt.training.checkpoint import CHECKPOINT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from msmt.training.distributed import Dist
from msmt.training.losses import build_balancer, model_losses, task_counts, weighted_total
from msmt.training.optim import build_optimizers, build_schedulers
from msmt.training.tensorboard import EpochWriter


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
def validation_loss(model: MultiTaskModel, data: Batch, batch_size: int, dist: Dist = Dist(), normalise: bool = True) -> dict[str, float]:
    """Per-task mean loss over the whole split, and their task-weighted sum as ``loss``.

    Distributed: each rank sums its slice of the rows and the sums are added up. ``data`` may
    stay on the CPU: each batch is copied to the model's device.
    """
    model.eval()
    device = model_device(model)
    tasks = model.schema.spec.tasks
    sums = torch.zeros(2, len(tasks), dtype=torch.float64, device=device)  # [loss sum, rows] x T: no read-back per batch
    n = num_rows(data)
    start, stop = dist.bounds(n)
    for batch in iterate_batches(take(data, slice(start, stop)), batch_size):
        batch = to_device(batch, device)
        losses = model_losses(model, batch, normalise=normalise)
        counts = task_counts(batch, len(tasks)).double()  # each task's loss is a mean over its own rows
        sums[0] += torch.stack([losses[t.name] for t in tasks]).double() * counts
        sums[1] += counts
    totals, rows = dist.sum(sums)  # two lists of T floats
    per_task = {t.name: s / max(r, 1.0) for t, s, r in zip(tasks, totals, rows)}
    per_task["loss"] = weighted_total(tasks, per_task)
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


@dataclass
class Trainer:
    """What one training run holds besides the data: the model (and its DDP wrapper), the loss
    balancer, the optimisers, the batch-order generator and where it all runs."""

    model: MultiTaskModel
    net: torch.nn.Module
    balancer: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    generator: torch.Generator
    device: torch.device
    dist: Dist
    checkpoint: Path | None
    normalise: bool = True  # loss.normalise
    schedulers: list = field(default_factory=list)  # one learning-rate schedule per optimiser (train.lr_schedule), stepped per batch
    average: AveragedModel | None = None  # the weights' moving average (train.ema_epochs)

    @property
    def scored(self) -> MultiTaskModel:
        """The weights validation scores and the run keeps: the moving average if there is one."""
        return self.average.module if self.average is not None else self.model

    def save(self, best_state: dict, loop: LoopState) -> None:
        save_checkpoint(
            self.checkpoint,
            {
                "model": self.model.state_dict(),
                "best_model": best_state,
                "optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [sch.state_dict() for sch in self.schedulers],
                "balancer": self.balancer.state_dict(),
                **({"average": self.average.state_dict()} if self.average is not None else {}),
                "rng": rng_state(self.generator, self.device),
                "loop": loop.to_dict(),
            },
        )

    def restore(self) -> tuple[dict, LoopState]:
        """Weights, optimisers, balancer and RNG from the checkpoint; returns (best weights, loop)."""
        saved = load_checkpoint(self.checkpoint)  # on the CPU; load_state_dict copies to the device
        self.model.load_state_dict(saved["model"])
        for optimizer, state in zip(self.optimizers, saved["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(self.schedulers, saved.get("schedulers", []), strict=True):
            scheduler.load_state_dict(state)
        self.balancer.load_state_dict(saved["balancer"])
        if self.average is not None:
            self.average.load_state_dict(saved["average"])
        set_rng_state(saved["rng"], self.generator, self.device)
        return saved["best_model"], LoopState(**saved["loop"])


def _trainer(model: MultiTaskModel, tc: TrainConfig, loss_cfg: LossConfig, run_dir: str | Path | None) -> Trainer:
    device = resolve_device(tc.device)
    dist = Dist.current(device)
    dist.check_strategy(loss_cfg.strategy)
    model.to(device)  # before the balancer and optimisers, which hold references to its parameters
    balancer = build_balancer(model.schema.spec.tasks, loss_cfg, model).to(device)
    # a model fitted in closed form (popularity) has nothing for an optimiser to step
    optimizers = build_optimizers(model, list(balancer.parameters()), tc, dist.active) if trainable(model) else []
    generator = torch.Generator().manual_seed(tc.seed)  # batch order: drawn on the CPU, where the data is
    checkpoint = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    return Trainer(model, model, balancer, optimizers, generator, device, dist, checkpoint, loss_cfg.normalise)


def trainable(model: torch.nn.Module) -> bool:
    """Whether ``model`` has parameters for gradient steps (a closed-form model has none)."""
    return any(p.requires_grad for p in model.parameters())


def _fit_statistics(tr: Trainer, train_data: Batch | ParquetStream, tc: TrainConfig) -> None:
    """One pass over this rank's training rows for a model with closed-form statistics
    (``MultiTaskModel.fit_statistics``), summed over the ranks."""
    if isinstance(train_data, ParquetStream):
        batches = tr.dist.lockstep(train_data.batches(1))
    else:
        batches = (tr.dist.shard(b) for b in iterate_batches(train_data, tc.eval_batch_size))  # an empty shard counts nothing
    tr.model.fit_statistics(batches, tr.dist.all_sum)


def _closed_form_epoch(tr: Trainer, s: LoopState, train_data: Batch | ParquetStream, tc: TrainConfig) -> dict[str, float]:
    """The one "epoch" of a model without parameters to train: no step; the training split's loss
    as its training loss (NaN for a stream, which is not read twice)."""
    tr.model.eval()
    if isinstance(train_data, ParquetStream):
        return {t.name: math.nan for t in tr.model.schema.spec.tasks}
    losses = validation_loss(tr.model, train_data, tc.eval_batch_size, tr.dist, tr.normalise)
    s.total_sum, s.step = losses.pop("loss"), 1
    return losses


def _step(tr: Trainer, batch: Batch, tc: TrainConfig, sums: dict[str, float], where: str = "a step") -> float:
    """One optimiser step on this rank's part of ``batch``; returns the logged total loss."""
    local = to_device(batch, tr.device)
    with autocast(tr.device, tc.precision):
        outputs = tr.net(local)
    outputs = {name: value.float() for name, value in outputs.items()}  # losses in float32
    losses = model_losses(tr.model, local, outputs, normalise=tr.normalise)
    with autocast(tr.device, tc.precision):
        own = tr.model.extra_losses(local, outputs)  # the model's own terms (AITM's calibrator...)
    extra = sum(v.float() for v in own.values()) if own else None
    for optimizer in tr.optimizers:
        optimizer.zero_grad(set_to_none=True)
    total = tr.balancer.backward(losses, extra)
    tr.dist.sync_grads(tr.balancer.parameters())
    stacked = torch.stack([total.detach(), *(losses[n].detach() for n in sums)])  # [1 + T] on the device
    if tc.max_grad_norm:
        grad_norm = torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tc.max_grad_norm)
    else:
        grad_norm = gradient_norm([*tr.model.parameters(), *tr.balancer.parameters()])
    check_finite(tr.dist, stacked, grad_norm, list(sums), where)  # before the step: a non-finite update is never applied
    for optimizer in tr.optimizers:
        optimizer.step()
    if tr.average is not None:
        tr.average.update_parameters(tr.model)
    # the logged numbers: one all-reduce and one device-to-host copy per step
    logged = tr.dist.mean(stacked)
    for name, value in zip(sums, logged[1:]):
        sums[name] += value
    return logged[0]


def gradient_norm(parameters) -> torch.Tensor:
    """The 2-norm of all gradients (sparse ones by their values): finite iff every gradient is."""
    grads = [p.grad.coalesce().values() if p.grad.is_sparse else p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def check_finite(dist: Dist, stacked: torch.Tensor, grad_norm: torch.Tensor, tasks: list[str], where: str) -> None:
    """Stop training at the first non-finite loss or gradient, naming the task and the step.

    One number is read back per step: the count of non-finite values, summed over the ranks
    under DDP (gradients are already synchronised, losses are not), so every rank stops at the
    same step."""
    values = torch.cat([stacked.float(), grad_norm.detach().reshape(1).to(stacked.device).float()])
    if dist.sum((~torch.isfinite(values)).sum().reshape(1))[0] == 0:
        return
    losses, norm = dist.mean(stacked), float(grad_norm)
    bad = [name for name, v in zip(tasks, losses[1:]) if not math.isfinite(v)]
    if bad:
        what = f"the loss of task '{bad[0]}' is {losses[1 + tasks.index(bad[0])]}"
    elif not math.isfinite(losses[0]):
        what = f"the loss is {losses[0]}"
    else:
        what = f"the gradient norm is {norm}"
    raise DivergedError(f"training stopped at {where}: {what}; lower train.lr, set train.max_grad_norm, or check the data")


def _epoch_batches(tr: Trainer, s: LoopState, train_data: Batch | ParquetStream, tc: TrainConfig):
    """This epoch's batches from ``s.step`` on (a mid-epoch resume redraws the same order)."""
    if s.step == 0:
        s.epoch_generator = tr.generator.get_state()
        s.sums, s.total_sum = {t.name: 0.0 for t in tr.model.schema.spec.tasks}, 0.0
    else:
        tr.generator.set_state(s.epoch_generator)
    if isinstance(train_data, ParquetStream):  # each rank reads its own row groups
        return tr.dist.lockstep(train_data.batches(s.epoch, start_batch=s.step))
    return iterate_batches(train_data, tc.batch_size, shuffle=True, generator=tr.generator, start_batch=s.step)


def _train_epoch(tr: Trainer, s: LoopState, train_data: Batch | ParquetStream, tc: TrainConfig, best_state: dict) -> dict[str, float]:
    """Run the rest of epoch ``s.epoch``; returns the mean training loss of each task."""
    tr.model.train()
    stream = isinstance(train_data, ParquetStream)
    bar = tqdm(
        _epoch_batches(tr, s, train_data, tc),
        total=None if stream else math.ceil(num_rows(train_data) / tc.batch_size),
        initial=s.step,
        desc=f"epoch {s.epoch}/{tc.epochs}",
        disable=None if (tc.progress and tr.dist.is_main) else True,  # None: off when not a terminal
        leave=False,
    )
    for batch in bar:
        if stream or tr.dist.usable(num_rows(batch)):
            where = f"epoch {s.epoch}, step {s.step + 1}"
            total = _step(tr, batch if stream else tr.dist.shard(batch), tc, s.sums, where)
            s.total_sum += total
            bar.set_postfix(loss=f"{total:.4f}")
        s.step += 1
        s.global_step += 1
        for scheduler in tr.schedulers:  # per batch, stepped or not, so the rate is a function of the global step
            scheduler.step()
        if tr.checkpoint is not None and tc.checkpoint_every and s.global_step % tc.checkpoint_every == 0 and tr.dist.is_main:
            tr.save(best_state, s)
    return {name: v / max(s.step, 1) for name, v in s.sums.items()}


def _validate(tr: Trainer, val_data: Batch, val_frame: pd.DataFrame, tc: TrainConfig) -> tuple[dict, dict, float, bool]:
    """(validation losses, metrics, monitored value, higher is better) on the whole split."""
    val_losses = validation_loss(tr.scored, val_data, tc.eval_batch_size, tr.dist, tr.normalise)
    preds = tr.dist.predict(tr.scored, val_data, tc.eval_batch_size)
    val_metrics = evaluate_model(tr.scored, val_frame, val_data, tc.eval_batch_size, preds=preds)
    if tc.monitor == "loss":
        return val_losses, val_metrics, val_losses["loss"], False
    value, higher = monitor_value(val_metrics, tc.monitor)
    return val_losses, val_metrics, value, higher


def _history_row(s: LoopState, train_losses: dict, val_losses: dict, val_metrics: dict, weights: dict) -> dict:
    return {
        "epoch": s.epoch,
        "train_loss": s.total_sum / max(s.step, 1),
        **{f"train_{k}_loss": v for k, v in train_losses.items()},
        "val_loss": val_losses["loss"],
        **{f"val_{k}_loss": v for k, v in val_losses.items() if k != "loss"},
        **_flatten_metrics(val_metrics),
        **{f"weight_{k}": v for k, v in weights.items()},
    }


def _steps_per_epoch(train_data: Batch | ParquetStream, tc: TrainConfig, dist: Dist) -> int:
    """Batches per epoch: the global batches of in-memory rows; for a stream, its rows over every rank's
    batches (an estimate: ranks stop together at the shortest, and the schedule holds at its end)."""
    if isinstance(train_data, ParquetStream):
        return math.ceil(train_data.num_rows / (tc.batch_size * dist.world))
    return math.ceil(num_rows(train_data) / tc.batch_size)


def fit(
    model: MultiTaskModel,
    tc: TrainConfig,
    loss_cfg: LossConfig,
    train_data: Batch | ParquetStream,
    val_data: Batch,
    val_frame: pd.DataFrame,
    run_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    select: bool = True,
) -> FitResult:
    """Train ``model`` in place (``train.*`` settings ``tc``, ``loss.*`` settings ``loss_cfg``); on
    return it holds the best epoch's weights (with ``train.ema_epochs``, the best epoch's moving
    average of them, :mod:`msmt.training.averaging`: what every validation scored).

    The model is moved to ``train.device`` (``cuda:LOCAL_RANK`` under torchrun with CUDA) and
    is left there; ``train_data`` and ``val_data`` stay where they are (the CPU) and are copied
    batch by batch.

    ``train_data``: encoded rows in memory, or a :class:`ParquetStream` (each rank then reads
    its own row groups instead of a shard of each global batch).
    ``run_dir``: where ``checkpoint.pt`` goes (with ``train.checkpoint_every``); ``resume``:
    continue from that checkpoint instead of starting afresh.

    A model with ``fits_statistics`` first counts the training split (``fit_statistics``); one
    without parameters to train then runs no gradient step: one epoch of measurement only.
    ``on_epoch(epoch, value)``: called after each epoch's validation with the monitored value
    (``train.monitor``); what it raises stops training (``msmt tune`` prunes a trial this way).
    ``select=False``: no model selection — every one of ``tc.epochs`` epochs runs and the last one's
    weights are kept (the refit on training + validation rows, :mod:`msmt.training.refit`, whose
    validation rows are in-sample); the history still logs the validation split per epoch.
    """
    tr = _trainer(model, tc, loss_cfg, run_dir)
    if model.fits_statistics:  # closed-form statistics first (the same on a resume: one pass, no randomness)
        _fit_statistics(tr, train_data, tc)
    s, best_state = LoopState(), _cpu_state(model)
    steps_per_epoch = _steps_per_epoch(train_data, tc, tr.dist)
    tr.schedulers = build_schedulers(tr.optimizers, tc, steps_per_epoch)
    steps = trainable(model)
    tr.average = weight_average(model, tc.ema_epochs, steps_per_epoch) if steps and model.averages_weights else None
    if resume:
        if tr.checkpoint is None:
            raise ValueError("resume needs run_dir")
        best_state, s = tr.restore()
    tr.net = tr.dist.wrap(model) if steps else model  # DDP broadcasts rank 0's (possibly restored) weights
    board = EpochWriter(Path(run_dir) / "tensorboard" if tc.tensorboard and run_dir is not None and tr.dist.is_main else None)
    while s.epoch <= (tc.epochs if steps else 1):
        train_losses = _train_epoch(tr, s, train_data, tc, best_state) if steps else _closed_form_epoch(tr, s, train_data, tc)
        tr.balancer.end_epoch(train_losses)
        val_losses, val_metrics, value, higher = _validate(tr, val_data, val_frame, tc)
        s.history.append(_history_row(s, train_losses, val_losses, val_metrics, tr.balancer.current_weights()))
        board.epoch(s.history[-1])
        if not select or s.epoch == 1 or (not math.isnan(value) and (value > s.best_value if higher else value < s.best_value)):
            s.best_epoch, s.best_value, s.val_metrics = s.epoch, value, val_metrics
            best_state = _cpu_state(tr.scored)
            s.stale = 0
        else:
            s.stale += 1
        if tc.progress and tr.dist.is_main:
            row = s.history[-1]
            tqdm.write(f"epoch {s.epoch}: train_loss={row['train_loss']:.4f} val_loss={row['val_loss']:.4f} {tc.monitor}={value:.4f}")
        if on_epoch is not None:
            on_epoch(s.epoch, value)
        s.epoch, s.step = s.epoch + 1, 0
        if s.stale >= tc.patience:
            break
    board.close(s.best_epoch)
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(history=s.history, best_epoch=s.best_epoch, best_value=s.best_value, val_metrics=s.val_metrics)
