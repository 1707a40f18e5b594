"""Outer loops: MAML (second order), first-order MAML and Reptile.

For one episode of groups g with support S_g and query Q_g (G groups):

* **MAML** (Finn et al. 2017): minimise (1/G) Σ_g L_Q_g(θ, φ_g(θ, φ)) where φ_g is the inner
  loop's result; the gradient flows through the inner steps (Hessian-vector products via
  ``create_graph=True``) into both θ and the initial φ.
* **First-order MAML** (same paper, §5.2): the same objective with the inner-loop gradients
  treated as constants, so ∇_φ = (1/G) Σ_g ∇_φ L_Q_g at φ_g and θ gets ∂L_Q_g/∂θ at φ_g.
* **Reptile** (Nichol et al. 2018): the initial φ moves toward the adapted blocks, using
  (1/G) Σ_g (φ − φ_g) as its update direction; θ, which the inner loop does not adapt, gets
  the first-order query gradient ∂L_Q_g/∂θ at φ_g so that the shared base keeps learning.

All three feed one outer optimiser (``meta.outer_optimizer``) over θ ∪ φ; frozen parameters
never change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from msmt.meta.episodes import EpisodeSampler, GroupIndex, group_values
from msmt.meta.params import ParameterSplit, inner_loop, objective, split_parameters
from msmt.runtime.device import model_device
from msmt.spec.batch import Batch, to_device
from msmt.spec.config import MetaConfig
from msmt.spec.dataset import Task
from msmt.spec.errors import ConfigError
from msmt.training.optim import make_optimizer


def meta_loss(
    model: nn.Module, split: ParameterSplit, support: Batch, query: Batch, tasks: tuple[Task, ...], cfg: MetaConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """(L_Q(θ, φ_g), φ_g) for one group; the loss is differentiable w.r.t. the model's parameters.

    ``maml``: through the inner loop; ``fomaml``: first-order; ``reptile``: φ_g detached (only θ
    gets a gradient; φ's Reptile direction is added by :func:`meta_step`).
    """
    params = dict(model.named_parameters())
    if cfg.algorithm == "reptile":
        start = {n: params[n].detach().requires_grad_(True) for n in split.personal}
        phi = {n: t.detach() for n, t in inner_loop(model, start, support, tasks, cfg.inner_steps, cfg.inner_lr, max_grad_norm=cfg.inner_max_grad_norm).items()}
    else:
        start = {n: params[n] for n in split.personal}
        second = cfg.algorithm == "maml"
        phi = inner_loop(
            model, start, support, tasks, cfg.inner_steps, cfg.inner_lr, create_graph=second, max_grad_norm=cfg.inner_max_grad_norm
        )
    return objective(model, phi, query, tasks), phi


def build_outer_optimizer(model: nn.Module, split: ParameterSplit, cfg: MetaConfig) -> torch.optim.Optimizer:
    params = dict(model.named_parameters())
    return make_optimizer([params[n] for n in (*split.personal, *split.shared)], cfg.outer_optimizer, cfg.outer_lr)


def meta_step(
    model: nn.Module,
    split: ParameterSplit,
    episode: list[tuple[Batch, Batch]],
    tasks: tuple[Task, ...],
    cfg: MetaConfig,
    optimizer: torch.optim.Optimizer,
) -> float:
    """One outer update from one episode; returns the mean query loss after adaptation."""
    params = dict(model.named_parameters())
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    reptile_dir = {n: torch.zeros_like(params[n]) for n in split.personal} if cfg.algorithm == "reptile" else None
    for support, query in episode:
        loss, phi = meta_loss(model, split, support, query, tasks, cfg)
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
    optimizer.step()
    return total / max(len(episode), 1)


@dataclass
class MetaPlan:
    """What meta-training needs, checked before any training starts."""

    split: ParameterSplit
    sampler: EpisodeSampler


def plan_meta(model: nn.Module, meta: MetaConfig, frame: pd.DataFrame, group: str | None = None) -> MetaPlan | None:
    """Validate the ``meta`` section against the model and the training table (None: no meta).

    ``group``: the group column (default: the model's dataset's ``group``)."""
    if meta.algorithm == "none":
        return None
    group = group or model.schema.spec.group
    if not group:
        raise ConfigError(f"meta.algorithm '{meta.algorithm}' needs a group column: set dataset.group")
    split = split_parameters(model, meta)
    sampler = GroupIndex(group_values(frame, group)).sampler(
        meta.support_size, meta.query_size, meta.groups_per_episode, meta.seed
    )
    return MetaPlan(split, sampler)


def meta_train(model: nn.Module, meta: MetaConfig, plan: MetaPlan | None, data: Batch, progress: bool = False) -> list[dict]:
    """Meta-train ``model`` in place on the training rows ``data`` (the table ``plan`` was made from).

    Returns one history row per 10% of the episodes: the mean query loss after adaptation.
    ``data`` may stay on the CPU: each episode's rows are copied to the model's device.
    """
    if plan is None:
        return []
    optimizer = build_outer_optimizer(model, plan.split, meta)
    tasks = model.schema.spec.tasks
    every = max(1, math.ceil(meta.episodes / 10))
    history, window = [], []
    device = model_device(model)
    model.train()
    for episode in range(1, meta.episodes + 1):
        batches = [(to_device(s, device), to_device(q, device)) for s, q in plan.sampler.sample_batches(data)]
        window.append(meta_step(model, plan.split, batches, tasks, meta, optimizer))
        if episode % every == 0 or episode == meta.episodes:
            history.append({"episode": episode, "query_loss": sum(window) / len(window)})
            if progress:
                print(f"meta {meta.algorithm} episode {episode}: query_loss={history[-1]['query_loss']:.4f}")
            window = []
    model.eval()
    return history
