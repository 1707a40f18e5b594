"""Per-task losses derived from the task kind, and loss-balancing strategies.

Task losses per row come from the task kind's entry in :mod:`msmt.spec.task_kinds` (BCE on the
logit, Poisson NLL on the log-rate, squared error).

A task's loss is ``mean_n(v_n * l_t(n))`` with per-sample weights v_n; strategies combine
the task losses into one objective and own the backward pass (GradNorm and PCGrad need it).
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
) -> dict[str, Tensor]:
    """{task: scalar} = mean over rows of (sample weight x row loss); labels is [B, T].

    ``dispersion``: {task: [B] log α} of negative-binomial tasks (``model.distribution_parameters``).
    """
    dispersion = dispersion or {}
    out = {}
    for i, t in enumerate(tasks):
        extra = (dispersion[t.name],) if t.name in dispersion else ()
        out[t.name] = (weight * rules(t).row_loss(outputs[t.name], labels[:, i], *extra)).mean()
    return out


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
    losses = task_losses(model.schema.spec.tasks, outputs, batch["labels"], batch["weight"], model.distribution_parameters(batch))
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

    def backward(self, losses: dict[str, Tensor]) -> Tensor:
        """Backpropagate the combined objective; returns it (for logging)."""
        total = self.combine(losses)
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
    "build_balancer",
    "register_balancer",
    "loss_scales",
    "model_losses",
    "task_losses",
    "weighted_total",
]
