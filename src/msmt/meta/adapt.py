"""Adapt every group of a table: one personal block per group, the base never modified."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from msmt.meta.episodes import GroupIndex, group_values
from msmt.meta.params import ParameterSplit, adapt, objective
from msmt.runtime.device import model_device
from msmt.spec.batch import Batch, take, to_device
from msmt.spec.config import MetaConfig
from msmt.spec.dataset import Task
from msmt.spec.errors import DivergedError


@dataclass
class AdaptStats:
    """Per group: rows, support loss before and after adaptation, seconds to adapt."""

    rows: dict[str, int] = field(default_factory=dict)
    loss_before: dict[str, float] = field(default_factory=dict)
    loss_after: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    displacement: dict[str, float] = field(default_factory=dict)  # ‖φ_g − φ‖₂ over the whole block

    def summary(self) -> dict:
        before = np.array(list(self.loss_before.values()))
        after = np.array(list(self.loss_after.values()))
        secs = np.array(list(self.seconds.values()))
        return {
            "groups": len(self.rows),
            "rows": int(sum(self.rows.values())),
            "mean_support_loss_before": float(before.mean()) if len(before) else None,
            "mean_support_loss_after": float(after.mean()) if len(after) else None,
            "median_seconds_per_group": float(np.median(secs)) if len(secs) else None,
            "median_block_displacement": float(np.median(list(self.displacement.values()))) if self.displacement else None,
        }


@torch.no_grad()
def _loss(model: nn.Module, params: dict[str, Tensor], batch: Batch, tasks: tuple[Task, ...]) -> float:
    return float(objective(model, params, batch, tasks))


def adapt_groups(
    model: nn.Module,
    split: ParameterSplit,
    frame: pd.DataFrame,
    data: Batch,
    group_column: str,
    tasks: tuple[Task, ...],
    cfg: MetaConfig,
    rates: dict[str, Tensor] | None = None,
) -> tuple[dict[str, dict[str, Tensor]], AdaptStats]:
    """{group: φ_g} adapted on all of that group's rows (``cfg.inner_steps`` steps of
    ``cfg.inner_lr``, or of Meta-SGD's per-parameter ``rates``), and per-group statistics
    (support loss before / after, seconds, the block's displacement). ``model`` is left exactly
    as it was. Blocks live on the model's device; ``data`` may stay on the CPU."""
    index = GroupIndex(group_values(frame, group_column))
    params = dict(model.named_parameters())
    base_phi = {n: params[n].detach() for n in split.personal}
    blocks: dict[str, dict[str, Tensor]] = {}
    stats = AdaptStats()
    was_training = model.training
    model.eval()
    device = model_device(model)
    for name, rows in zip(index.names, index.rows):
        support = to_device(take(data, rows), device)
        start = time.perf_counter()
        blocks[name] = adapt(model, split, support, tasks, cfg.inner_steps, rates if rates is not None else cfg.inner_lr,
                              cfg.inner_max_grad_norm, cfg.inner_backtrack)
        stats.seconds[name] = time.perf_counter() - start
        stats.displacement[name] = float(torch.sqrt(sum(((blocks[name][n] - base_phi[n]) ** 2).sum() for n in split.personal)))
        stats.rows[name] = len(rows)
        stats.loss_before[name] = _loss(model, base_phi, support, tasks)
        stats.loss_after[name] = _loss(model, blocks[name], support, tasks)
        check_block(name, blocks[name], stats.loss_after[name], cfg.inner_lr)
    model.train(was_training)
    return blocks, stats


def check_block(group: str, block: dict[str, Tensor], loss_after: float, inner_lr: float) -> None:
    """A block is kept only when every tensor and its support loss are finite (a diverged inner
    loop must not be saved, and then scored as NaN)."""
    for tensor_name, tensor in block.items():
        if not bool(torch.isfinite(tensor).all()):
            raise DivergedError(
                f"adaptation of group '{group}' diverged: parameter '{tensor_name}' is not finite after the inner steps "
                f"(inner lr {inner_lr:g}); lower --lr or --steps. Nothing was written"
            )
    if not np.isfinite(loss_after):
        raise DivergedError(f"adaptation of group '{group}' diverged: its support loss is {loss_after} (inner lr {inner_lr:g}); lower --lr or --steps. Nothing was written")
