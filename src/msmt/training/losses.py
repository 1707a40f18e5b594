"""Per-task losses derived from the task kind, and loss-balancing strategies.

Task losses per row come from the task kind's entry in :mod:`msmt.spec.task_kinds` (BCE on the
logit, Poisson NLL on the log-rate, squared error).

A task's loss is its mean over the rows where it exists,

    L_t = Σ_n m_nt · v_n · u_nt · l_t(n) / Σ_n m_nt,

with m_nt the batch's ``task_mask`` (the task exists in row n's scenario), v_n the sample weight
and u_nt the task's own weight (``task_weight``); without a mask every row counts (the plain
mean). Strategies combine the task losses into one objective and own the backward pass (GradNorm
and PCGrad need it). A model's own loss terms (:meth:`MultiTaskModel.extra_losses`, e.g. AITM's
calibrator) are added to that objective with the weights the model gives them, unbalanced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from msmt.runtime.device import model_device
from msmt.spec.dataset import Task
from msmt.spec.sections import declare_strategy, strategy_names
from msmt.spec.task_kinds import rules


def task_losses(
    tasks: tuple[Task, ...],
    outputs: dict[str, Tensor],
    labels: Tensor,
    weight: Tensor,
    dispersion: dict[str, Tensor] | None = None,
    mask: Tensor | None = None,
    task_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """{task: scalar} = mean over the rows where the task exists of (weights x row loss).

    labels [B, T]; weight [B]; ``mask`` [B, T] bool (None: every task exists in every row);
    ``task_weight`` [B, T] (None: 1). ``dispersion``: {task: [B] log α} of negative-binomial
    tasks (``model.distribution_parameters``). A task with no row in the batch has loss 0 (and
    no gradient).
    """
    dispersion = dispersion or {}
    out = {}
    for i, t in enumerate(tasks):
        extra = (dispersion[t.name],) if t.name in dispersion else ()
        v = weight if task_weight is None else weight * task_weight[:, i]
        row = v * rules(t).row_loss(outputs[t.name], labels[:, i], *extra)  # [B]
        if mask is None:
            out[t.name] = row.mean()
        else:  # where, not a product: a row outside the task may hold any finite or non-finite value
            m = mask[:, i]
            out[t.name] = torch.where(m, row, torch.zeros_like(row)).sum() / m.sum().clamp_min(1)
    return out


def batch_losses(
    tasks: tuple[Task, ...], outputs: dict[str, Tensor], batch: dict[str, Tensor], dispersion: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """:func:`task_losses` with labels, weights and the task mask read from a labelled ``batch``."""
    return task_losses(
        tasks, outputs, batch["labels"], batch["weight"], dispersion, batch.get("task_mask"), batch.get("task_weight")
    )


def task_counts(batch: dict[str, Tensor], num_tasks: int) -> Tensor:
    """[T] rows of each task in ``batch`` (what its loss is a mean over)."""
    if "task_mask" in batch:
        return batch["task_mask"].sum(0)
    return torch.full((num_tasks,), batch["labels"].shape[0], device=batch["labels"].device)


def loss_scales(schema) -> dict[str, float]:
    """{task: the scale its loss is divided by with ``loss.normalise``} from the training labels
    (1 for every task of a run written before msmt 0.2, which has no label statistics)."""
    return {t.name: rules(t).loss_scale(schema.task_stats[t.name]) if t.name in schema.task_stats else 1.0 for t in schema.spec.tasks}


def model_losses(
    model: nn.Module, batch: dict[str, Tensor], outputs: dict[str, Tensor] | None = None, normalise: bool = True
) -> dict[str, Tensor]:
    """:func:`task_losses` of ``model`` on a labelled ``batch`` (outputs computed unless given),
    with the model's negative-binomial dispersions; ``normalise``: each divided by its
    :func:`loss_scales` entry."""
    outputs = model(batch) if outputs is None else outputs
    losses = batch_losses(model.schema.spec.tasks, outputs, batch, model.distribution_parameters(batch))
    if normalise:
        scales = loss_scales(model.schema)
        losses = {t: v / scales[t] for t, v in losses.items()}
    return losses


def weighted_total(tasks: tuple[Task, ...], losses: dict[str, Tensor | float]) -> Tensor | float:
    """Σ_t w_t L_t with the weights declared on the tasks (the fixed-weights objective)."""
    return sum(t.weight * losses[t.name] for t in tasks)


# --------------------------------------------------------------------------- balancing


class LossBalancer(nn.Module):
    """Combines task losses into one objective and runs the backward pass.

    Subclasses may own learnable parameters (the trainer optimises them with the model) and may
    need the model (``model.shared_parameters()``, ``model.last_shared_layer()``). A balancer is
    built on the model's device (build it after moving the model; ``.to(device)`` moves the
    rest): state that is not a parameter or buffer, such as GradNorm's weights, is created there.
    """

    def __init__(self, tasks: tuple[Task, ...], params: BaseModel, model: nn.Module):
        super().__init__()
        self.task_names = [t.name for t in tasks]
        weights = torch.tensor([t.weight for t in tasks], dtype=torch.float32, device=model_device(model))
        self.register_buffer("task_weights", weights)

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def backward(self, losses: dict[str, Tensor], extra: Tensor | None = None) -> Tensor:
        """Backpropagate the combined objective plus ``extra`` (the model's own loss terms,
        :meth:`MultiTaskModel.extra_losses`, summed: added as they are, never balanced); returns
        it (for logging)."""
        total = self.combine(losses)
        if extra is not None:
            total = total + extra
        total.backward()
        return total.detach()

    def end_epoch(self, epoch_losses: dict[str, float]) -> None:
        """Hook for strategies that adapt per epoch (e.g. DWA)."""

    def current_weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.task_names, self.task_weights)}


class FixedWeights(LossBalancer):
    """L = sum_t w_t L_t with the weights declared on the tasks (:func:`weighted_total`, computed
    from the weights held on the model's device, in one fused product)."""

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[n] for n in self.task_names])
        return (self.task_weights * stacked).sum()


_BALANCERS: dict[str, type[LossBalancer]] = {"fixed": FixedWeights}


def register_balancer(name: str, params: type[BaseModel] | None = None) -> Callable[[type], type]:
    """Register a strategy class; ``params`` declares its ``loss.<name>`` section (the built-in
    strategies have theirs in :mod:`msmt.spec.loss_params`)."""

    def deco(cls: type) -> type:
        if params is not None:
            declare_strategy(name, params)
        elif name not in strategy_names():
            declare_strategy(name)
        _BALANCERS[name] = cls
        return cls

    return deco


def _load_strategies() -> None:
    import msmt.training.balancing  # noqa: F401  (registers uncertainty, gradnorm, pcgrad, dwa)


def balancer_names() -> list[str]:
    _load_strategies()
    return sorted(_BALANCERS)


def build_balancer(tasks: tuple[Task, ...], loss_cfg, model: nn.Module) -> LossBalancer:
    _load_strategies()
    return _BALANCERS[loss_cfg.strategy](tasks, loss_cfg.params(), model)


__all__ = [
    "FixedWeights",
    "LossBalancer",
    "balancer_names",
    "batch_losses",
    "build_balancer",
    "register_balancer",
    "loss_scales",
    "model_losses",
    "task_counts",
    "task_losses",
    "weighted_total",
]
