"""Outer loops: MAML (second order), first-order MAML, Reptile and Meta-SGD.

For one episode of groups g with support S_g and query Q_g (G groups):

* **MAML** (Finn et al. 2017): minimise (1/G) Σ_g L_Q_g(θ, φ_g(θ, φ)) where φ_g is the inner
  loop's result; the gradient flows through the inner steps (Hessian-vector products via
  ``create_graph=True``) into both θ and the initial φ.
* **First-order MAML** (same paper, §5.2): the same objective with the inner-loop gradients
  treated as constants, so ∇_φ = (1/G) Σ_g ∇_φ L_Q_g at φ_g and θ gets ∂L_Q_g/∂θ at φ_g.
* **Reptile** (Nichol et al. 2018): the initial φ moves toward the adapted blocks, using
  (1/G) Σ_g (φ − φ_g) as its update direction; θ, which the inner loop does not adapt, gets
  the first-order query gradient ∂L_Q_g/∂θ at φ_g so that the shared base keeps learning.

* **Meta-SGD** (Li et al. 2017): MAML whose inner step is φ − α ⊙ ∇_φ L_support with a learned
  per-parameter rate α (:class:`msmt.meta.params.InnerRates`), trained with θ and φ.

All feed one outer optimiser (``meta.outer_optimizer``) over θ ∪ φ (∪ α); frozen parameters
never change. With the default ``meta.shared: []`` θ is frozen: meta-learning moves only the
personal block's start (and Meta-SGD's rates), so a group without rows keeps the trained base.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from msmt.meta.episodes import EpisodeSampler, GroupIndex, group_values
from msmt.meta.params import InnerRates, ParameterSplit, inner_loop, objective, split_parameters, trainable_only
from msmt.runtime.device import model_device
from msmt.spec.batch import Batch, num_rows, to_device
from msmt.spec.config import MetaConfig
from msmt.spec.dataset import Task
from msmt.spec.errors import ConfigError
from msmt.training.optim import make_optimizer


def meta_loss(
    model: nn.Module, split: ParameterSplit, support: Batch, query: Batch, tasks: tuple[Task, ...], cfg: MetaConfig,
    rates: InnerRates | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """(L_Q(θ, φ_g), φ_g) for one group; the loss is differentiable w.r.t. the model's parameters.

    ``maml``: through the inner loop; ``fomaml``: first-order; ``reptile``: φ_g detached (only θ
    gets a gradient; φ's Reptile direction is added by :func:`meta_step`); ``metasgd``: MAML
    with the per-parameter rates ``rates`` (which get their gradient too).
    """
    params = dict(model.named_parameters())
    lr = rates.as_dict() if rates is not None else cfg.inner_lr
    if cfg.algorithm == "reptile":
        start = {n: params[n].detach().requires_grad_(True) for n in split.personal}
        phi = {n: t.detach() for n, t in inner_loop(model, start, support, tasks, cfg.inner_steps, lr, max_grad_norm=cfg.inner_max_grad_norm, backtrack=cfg.inner_backtrack).items()}
    else:
        start = {n: params[n] for n in split.personal}
        second = cfg.algorithm in ("maml", "metasgd")  # Meta-SGD: exact, through the inner steps too
        phi = inner_loop(model, start, support, tasks, cfg.inner_steps, lr, create_graph=second, max_grad_norm=cfg.inner_max_grad_norm,
                         backtrack=cfg.inner_backtrack)
    return objective(model, phi, query, tasks), phi


def build_outer_optimizer(model: nn.Module, split: ParameterSplit, cfg: MetaConfig, rates: InnerRates | None = None) -> torch.optim.Optimizer:
    params = dict(model.named_parameters())
    extra = list(rates.parameters()) if rates is not None else []
    return make_optimizer([params[n] for n in (*split.personal, *split.shared)] + extra, cfg.outer_optimizer, cfg.outer_lr)


def meta_step(
    model: nn.Module,
    split: ParameterSplit,
    episode: list[tuple[Batch, Batch]],
    tasks: tuple[Task, ...],
    cfg: MetaConfig,
    optimizer: torch.optim.Optimizer,
    rates: InnerRates | None = None,
) -> float:
    """One outer update from one episode; returns the mean query loss after adaptation."""
    params = dict(model.named_parameters())
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    reptile_dir = {n: torch.zeros_like(params[n]) for n in split.personal} if cfg.algorithm == "reptile" else None
    for support, query in episode:
        loss, phi = meta_loss(model, split, support, query, tasks, cfg, rates)
        if loss.requires_grad:  # not for Reptile without a shared θ: its query loss then only scores φ_g
            (loss / len(episode)).backward()
        total += float(loss.detach())
        if reptile_dir is not None:
            for n in split.personal:
                reptile_dir[n] += (params[n].detach() - phi[n]) / len(episode)
    if reptile_dir is not None:
        for n, d in reptile_dir.items():
            params[n].grad = d
    for n in split.frozen:
        params[n].grad = None
    if cfg.outer_max_grad_norm is not None:
        moved = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(moved, cfg.outer_max_grad_norm)
    optimizer.step()
    return total / max(len(episode), 1)


@dataclass
class MetaPlan:
    """What meta-training needs, checked before any training starts."""

    split: ParameterSplit
    sampler: EpisodeSampler
    rates: InnerRates | None = None  # Meta-SGD's learned inner rates


def plan_meta(model: nn.Module, meta: MetaConfig, frame: pd.DataFrame, group: str | None = None) -> MetaPlan | None:
    """Validate the ``meta`` section against the model and the training table (None: no meta).

    ``group``: the group column (default: the model's dataset's ``group``)."""
    if meta.algorithm == "none":
        return None
    group = group or model.schema.spec.group
    if not group:
        raise ConfigError(f"meta.algorithm '{meta.algorithm}' needs a group column: set dataset.group")
    split = split_parameters(model, meta)
    time = episode_time(model.schema.spec) if meta.episode_split == "time" else None
    times = numeric_time(frame, time) if time else None
    sampler = GroupIndex(group_values(frame, group), times).sampler(
        meta.support_size, meta.query_size, meta.groups_per_episode, meta.seed, meta.support_min, ordered=time is not None
    )
    rates = InnerRates(model, split.personal, meta.inner_lr) if meta.algorithm == "metasgd" else None
    return MetaPlan(split, sampler, rates)


def episode_time(spec) -> str | None:
    """The column that orders a group's rows in time: the panel's time, else a time split's column."""
    if spec.panel is not None:
        return spec.panel.time
    return spec.split.time_column if spec.split.method == "time" else None


def numeric_time(frame: pd.DataFrame, column: str):
    """[N] sortable time values (integer steps, or dates as days)."""
    from msmt.data.panel import time_steps

    return time_steps(frame, column)


def finetune_query_loss(
    model: nn.Module, start: dict[str, Tensor], episode: list[tuple[Batch, Batch]], tasks: tuple[Task, ...], cfg: MetaConfig
) -> float:
    """The reference of meta-training's curve: the mean query loss over ``episode``'s groups after plain
    fine-tuning (``meta.inner_steps`` steps of ``meta.inner_lr``) from ``start``, the personal block as it was
    before meta-training (the other parameters as they are now: with ``meta.shared`` empty, as before).
    Runs under a forked RNG and puts the model's buffers (running statistics) back, so that
    meta-training goes exactly as it would without it."""
    total = 0.0
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[]):
        for support, query in episode:
            phi0 = {n: t.clone().requires_grad_(True) for n, t in start.items()}
            phi = inner_loop(model, phi0, support, tasks, cfg.inner_steps, cfg.inner_lr, max_grad_norm=cfg.inner_max_grad_norm,
                             backtrack=cfg.inner_backtrack)
            with torch.no_grad():
                total += float(objective(model, phi, query, tasks))
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    return total / max(len(episode), 1)


@contextmanager
def _augmenting_once(model: nn.Module) -> Iterator[None]:
    """The model's forward does not augment its input within the block (meta-training augments each episode's
    batches once: every inner step, backtracking trial and the query then see the same draw)."""
    before = getattr(model, "augments_in_forward", None)
    if before is None:
        yield
        return
    model.augments_in_forward = False
    try:
        yield
    finally:
        model.augments_in_forward = before


def meta_train(model: nn.Module, meta: MetaConfig, plan: MetaPlan | None, data: Batch, progress: bool = False) -> list[dict]:
    """Meta-train ``model`` in place on the training rows ``data`` (the table ``plan`` was made from).

    Returns one history row per 10% of the episodes: ``query_loss``, the mean query loss after
    adaptation, ``passes``, the support and query rows drawn so far over the training rows, and with ``meta.log_reference`` ``finetune_query_loss``, the same episodes' query loss
    after plain fine-tuning from the block before meta-training (:func:`finetune_query_loss`): their
    difference is what meta-training has gained on the training groups, free of how hard each
    episode's groups are.
    ``data`` may stay on the CPU: each episode's rows are copied to the model's device.
    """
    if plan is None:
        return []
    if plan.rates is not None:
        plan.rates.to(model_device(model))
    optimizer = build_outer_optimizer(model, plan.split, meta, plan.rates)
    tasks = model.schema.spec.tasks
    every = max(1, math.ceil(meta.episodes / 10))
    history, window, reference, drawn = [], [], [], 0
    device = model_device(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if n in set(plan.split.personal)}
    model.train()
    augment = getattr(model, "augment", None)  # training-time input augmentation, drawn once per episode batch
    with trainable_only(model, (*plan.split.personal, *plan.split.shared)), _augmenting_once(model):  # the frozen base: no graph, no gradient
        for episode in range(1, meta.episodes + 1):
            batches = [(to_device(s, device), to_device(q, device)) for s, q in plan.sampler.sample_batches(data)]
            if augment is not None:
                batches = [(augment(s), augment(q)) for s, q in batches]
            drawn += sum(num_rows(s) + num_rows(q) for s, q in batches)
            if meta.log_reference:
                reference.append(finetune_query_loss(model, start, batches, tasks, meta))
            window.append(meta_step(model, plan.split, batches, tasks, meta, optimizer, plan.rates))
            if episode % every == 0 or episode == meta.episodes:
                row = {"episode": episode, "query_loss": sum(window) / len(window), "passes": drawn / max(num_rows(data), 1)}
                if reference:
                    row["finetune_query_loss"] = sum(reference) / len(reference)
                history.append(row)
                if progress:
                    ref = f" (fine-tuning from the start: {row['finetune_query_loss']:.4f})" if reference else ""
                    print(f"meta {meta.algorithm} episode {episode}: query_loss={row['query_loss']:.4f}{ref}")
                window, reference = [], []
    model.eval()
    return history
