"""Which parameters are personal, the per-group objective, and the inner loop.

Notation (DESIGN.md, "Meta-learning per group"): shared parameters θ, personal parameters φ.
The inner loop is plain gradient descent on the support loss of one group,

    φ_{k+1} = φ_k − α ∇_φ L_support(θ, φ_k),   k = 0 .. steps−1,   φ_0 = φ,

evaluated with :func:`torch.func.functional_call`, so the model object is never modified.
With ``create_graph=True`` the steps stay differentiable (second-order MAML, Finn et al. 2017).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msmt.meta.replay import replaying_frozen_base
from msmt.spec.batch import Batch, num_rows
from msmt.spec.config import MetaConfig
from msmt.spec.dataset import Task
from msmt.spec.errors import ConfigError
from msmt.training.losses import batch_losses, loss_scales, weighted_total


def select_parameters(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of parameters matching any glob pattern (``"towers.*"``)."""
    return [n for n, _ in model.named_parameters() if any(fnmatch.fnmatch(n, p) for p in patterns)]

@dataclass(frozen=True)
class ParameterSplit:
    """Parameter names: ``personal`` (φ, one copy per group), ``shared`` (θ, trained in the
    outer loop) and ``frozen`` (neither)."""

    personal: tuple[str, ...]
    shared: tuple[str, ...]
    frozen: tuple[str, ...]


def split_parameters(model: nn.Module, cfg: MetaConfig) -> ParameterSplit:
    """Apply the ``meta.personal`` / ``meta.shared`` globs; personal wins over shared.

    ``personal: [auto]``: the model's declared personal block (``model.personal_parameters()``).
    """
    auto = [] if "auto" not in cfg.personal else list(model.personal_parameters())
    personal = list(dict.fromkeys([*auto, *select_parameters(model, [p for p in cfg.personal if p != "auto"])]))
    if not personal:
        names = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
        raise ConfigError(
            f"meta.personal: patterns {cfg.personal} match no parameter of model "
            f"'{getattr(model, 'registry_name', type(model).__name__)}' (its modules: {names})"
        )
    chosen = set(personal)
    shared = [n for n in select_parameters(model, cfg.shared) if n not in chosen]
    chosen |= set(shared)
    frozen = [n for n, _ in model.named_parameters() if n not in chosen]
    return ParameterSplit(tuple(personal), tuple(shared), tuple(frozen))


@contextmanager
def trainable_only(model: nn.Module, names: Iterable[str]) -> Iterator[None]:
    """Within the block, only the named parameters of ``model`` require grad; each parameter's
    flag is put back on exit.

    Meta-training, adaptation and ID warm-up move a few parameters on top of a base they leave
    alone. With the base's parameters still requiring grad, every forward pass records the base's
    graph and every outer backward differentiates through it into gradients that are then thrown
    away. Gradients of the named parameters are the same either way (the frozen parameters are
    constants of the objective); only the work for the others is skipped."""
    keep = set(names)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def objective(model: nn.Module, params: dict[str, Tensor], batch: Batch, tasks: tuple[Task, ...]) -> Tensor:
    """Σ_t w_t L_t / s_t on ``batch`` with ``params`` in place of the model's own (scalar tensor);
    s_t is the task's label scale (:func:`msmt.training.losses.loss_scales`), as in training, so
    an inner step has the same size whatever the counts' magnitude."""
    # tie_weights=False: no msmt model shares a tensor between two names, and untying scans every
    # parameter and buffer of the model on each of the inner loop's many calls
    outputs = torch.func.functional_call(model, params, (batch,), strict=False, tie_weights=False)
    losses = batch_losses(tasks, outputs, batch, model.distribution_parameters(batch))
    scales = loss_scales(model.schema)
    return weighted_total(tasks, {t: v / scales[t] for t, v in losses.items()})


class InnerRates(nn.Module):
    """Meta-SGD's learned per-parameter inner learning rates α (Li et al., 2017, "Meta-SGD"):
    φ_g = φ − α ⊙ ∇_φ L_support, one α tensor per personal parameter, same shape, starting at
    ``meta.inner_lr`` and trained in the outer loop. Saved with the run (``meta_rates.safetensors``)
    so ``msmt adapt`` steps with them."""

    def __init__(self, model: nn.Module, names: Sequence[str], start: float):
        super().__init__()
        params = dict(model.named_parameters())
        self.names = list(names)
        self.rates = nn.ParameterDict({_key(n): nn.Parameter(torch.full_like(params[n].detach(), start)) for n in self.names})

    def as_dict(self) -> dict[str, Tensor]:
        """{parameter name: α tensor}."""
        return {n: self.rates[_key(n)] for n in self.names}


def _key(name: str) -> str:
    return name.replace(".", "__")


def inner_loop(
    model: nn.Module,
    phi: dict[str, Tensor],
    support: Batch,
    tasks: tuple[Task, ...],
    steps: int,
    lr: float | dict[str, Tensor],
    create_graph: bool = False,
    max_grad_norm: float | None = None,
    backtrack: int = 0,
) -> dict[str, Tensor]:
    """``steps`` gradient steps on the support loss; returns φ_g (same keys as ``phi``).

    ``lr``: one rate, or per parameter a tensor of φ's shape (Meta-SGD's α; the result is then
    differentiable in α even without ``create_graph``).

    ``max_grad_norm`` rescales each step's gradient to at most that global L2 norm (as
    ``train.max_grad_norm`` does for ordinary training): Poisson losses on large counts otherwise
    make a plain gradient step explode. The rescaling is differentiable, so MAML stays exact.

    ``backtrack`` > 0: a step that would raise the support loss is halved, up to ``backtrack``
    times, and skipped if it still raises it (Armijo-style backtracking without the sufficient-decrease
    slope). A clipped step of fixed length can overshoot a Poisson head's log-rate by orders of
    magnitude on a group whose features are large and then oscillate; backtracking makes every step
    a descent step on the support rows. The chosen factor is a constant of the graph (MAML
    differentiates through the step taken). Costs one forward pass per try.

    An empty ``support`` returns ``phi`` itself (no step). Every tensor of ``phi`` must require grad. With ``create_graph`` the result is a
    differentiable function of ``phi`` and of the model's shared parameters (MAML); without it
    each step's gradient is a constant, so dφ_g/dφ = I (first-order MAML).
    """
    if num_rows(support) == 0:  # k = 0 (an episode of meta.support_min 0): nothing to adapt on, φ_g = φ
        return dict(phi)
    names = list(phi)
    with torch.enable_grad(), replaying_frozen_base(model, names):  # the base is computed once for the support rows
        for _ in range(steps):
            loss = objective(model, phi, support, tasks)
            grads = torch.autograd.grad(loss, [phi[n] for n in names], create_graph=create_graph)
            if max_grad_norm is not None:
                norm = torch.sqrt(sum((g**2).sum() for g in grads))
                scale = torch.clamp(max_grad_norm / (norm + 1e-12), max=1.0)
                grads = [g * scale for g in grads]
            factor = _descent_factor(model, phi, grads, lr, support, tasks, float(loss.detach()), backtrack) if backtrack else 1.0
            phi = _step(phi, grads, lr, factor)
    return phi


def _step(phi: dict[str, Tensor], grads, lr: float | dict[str, Tensor], factor: float) -> dict[str, Tensor]:
    """One inner step, φ − factor · α ⊙ ∇ per parameter (``grads`` in ``phi``'s key order; α one rate or
    Meta-SGD's per-parameter rates): the step :func:`inner_loop` takes and :func:`_descent_factor` tries."""
    return {n: phi[n] - factor * (lr[n] if isinstance(lr, dict) else lr) * g for n, g in zip(phi, grads)}


def _descent_factor(model, phi, grads, lr, support, tasks, loss: float, tries: int) -> float:
    """The largest of 1, 1/2, …, 1/2^tries whose step does not raise the support loss above ``loss``; 0 if none."""
    factor = 1.0
    with torch.no_grad():
        for _ in range(tries + 1):
            trial = _step(phi, grads, lr, factor)
            if float(objective(model, trial, support, tasks)) <= loss:
                return factor
            factor /= 2
    return 0.0


def adapt(
    model: nn.Module,
    split: ParameterSplit,
    support: Batch,
    tasks: tuple[Task, ...],
    steps: int,
    lr: float | dict[str, Tensor],
    max_grad_norm: float | None = None,
    backtrack: int = 0,
) -> dict[str, Tensor]:
    """A group's personal block: φ adapted on its support rows, detached (model unchanged).
    ``lr``: one rate or Meta-SGD's per-parameter rates.

    Runs in eval mode (no dropout); an empty support set or ``steps=0`` returns a copy of φ.
    """
    params = dict(model.named_parameters())
    phi = {n: params[n].detach().clone().requires_grad_(True) for n in split.personal}
    if int(support["scenario"].shape[0]) > 0 and steps > 0:
        was_training = model.training
        model.eval()
        try:
            rates = {n: r.detach() for n, r in lr.items()} if isinstance(lr, dict) else lr
            with trainable_only(model, ()):  # φ is a copy: the model's own parameters are constants here
                phi = inner_loop(model, phi, support, tasks, steps, rates, create_graph=False, max_grad_norm=max_grad_norm, backtrack=backtrack)
        finally:
            model.train(was_training)
    return {n: t.detach().clone() for n, t in phi.items()}
