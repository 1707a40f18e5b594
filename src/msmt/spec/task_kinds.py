"""The one table of task kinds: what each kind's output means, its loss, link, measures and labels.

Every place that depends on a task's kind reads its entry here: the trainer's per-row loss
(:func:`msmt.training.losses.task_losses`), the link from model output to user units (scoring,
the service, export metadata), the measures and the primary ones shown in tables (evaluation,
reports, the bench), label validation (data), and the uncertainty-weighting factor. Adding a kind
(or a count distribution) is one :class:`KindRules` entry.

=============  ===========  ==============  ================================  ======================
kind           model output user units      per-row loss                      measures
=============  ===========  ==============  ================================  ======================
``binary``     logit        probability     BCE                               auc, logloss
``count``      log-rate o   expected count  Poisson NLL exp(o) − y·o + log y!  smape, nmae, mape, rmse,
                                                                              poisson_deviance
``regression`` value        value           squared error                     smape, nmae, mape, rmse
=============  ===========  ==============  ================================  ======================

A count task with ``distribution: negative_binomial`` has its own entry (NB2 NLL with a learned
dispersion α, Var = λ + αλ²; MODELS.md), otherwise the count entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from msmt.spec.dataset import Task, TaskKind
from msmt.spec.measures import binary_measures, count_measures, value_measures

Measures = Callable[[np.ndarray, np.ndarray], dict[str, float | None]]


@dataclass(frozen=True)
class KindRules:
    """Everything that depends on a task's kind.

    Attributes:
        output: what the model returns for the task ([B] logit / log-rate / value).
        user_units: what predictions are reported in.
        row_loss: ([B] output, [B] label) -> [B] loss (an exact negative log-likelihood where
            the kind has one, so losses of different tasks are on comparable scales).
        link: [B] output -> [B] prediction in user units (torch; NumPy outputs go through it too).
        inverse_link: user units -> output (e.g. a naive forecast as a log-rate offset).
        measures: ([N] labels, [N] predictions in user units) -> {measure: value}.
        primary: the measures a table shows first (the first one is plotted).
        higher_is_better: measures where a larger value is better.
        label_problem: [N] labels -> a boolean mask of invalid labels and what a valid one is.
        uncertainty_factor: Kendall et al.'s factor of exp(−s_t) (1 for classification, ½ for
            Gaussian-type likelihoods; :mod:`msmt.training.balancing.uncertainty`).
        loss_scale: the training labels' {"mean", "var"} -> the scale a task's loss is divided by
            (``loss.normalise``), so tasks of very different magnitudes train together without
            hand-set weights: the gradient of a Poisson / NB NLL in the log-rate is λ − y, which
            grows with the counts (scale: the label mean); squared error with the variance.
        scaled_point: whether ``train.point_forecast: scaled | median`` gives the kind a point forecast
            c · prediction (or its Poisson median) for absolute errors (:mod:`msmt.scoring.point`;
            non-negative predictions).
    """

    output: str
    user_units: str
    row_loss: Callable[[Tensor, Tensor], Tensor]
    link: Callable[[Tensor], Tensor]
    inverse_link: Callable[[Tensor], Tensor]
    measures: Measures
    primary: tuple[str, ...]
    higher_is_better: frozenset[str]
    label_problem: Callable[[np.ndarray], tuple[np.ndarray, str]]
    uncertainty_factor: float
    loss_scale: Callable[[dict], float] = lambda stats: 1.0
    scaled_point: bool = False


def _poisson_nll(output: Tensor, label: Tensor) -> Tensor:
    # log(y!) is constant in the parameters and makes the value an exact NLL
    return torch.exp(output) - label * output + torch.lgamma(label + 1.0)


def _negative_binomial_nll(output: Tensor, label: Tensor, log_dispersion: Tensor) -> Tensor:
    """NB2 negative log-likelihood with mean λ = exp(o) and dispersion α = exp(a) (Var = λ + αλ²):
    −[lgamma(y + r) − lgamma(r) − lgamma(y + 1) + r·log(1/(1 + αλ)) + y·log(αλ/(1 + αλ))], r = 1/α,
    written with softplus(a + o) = log(1 + αλ) for stability."""
    z = log_dispersion + output  # log(αλ)
    r = torch.exp(-log_dispersion)
    return (
        torch.lgamma(label + 1.0) + torch.lgamma(r) - torch.lgamma(label + r)
        + r * F.softplus(z) + label * F.softplus(-z)
    )


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


KINDS: dict[TaskKind, KindRules] = {
    TaskKind.BINARY: KindRules(
        output="logit",
        user_units="probability",
        row_loss=lambda o, y: F.binary_cross_entropy_with_logits(o, y, reduction="none"),
        link=torch.sigmoid,
        inverse_link=_logit,
        measures=binary_measures,
        primary=("auc", "logloss"),
        higher_is_better=frozenset({"auc"}),
        label_problem=lambda y: (~np.isin(y, (0.0, 1.0)), "binary label must be 0 or 1"),
        uncertainty_factor=1.0,
    ),
    TaskKind.COUNT: KindRules(
        output="log-rate",
        user_units="expected count",
        row_loss=_poisson_nll,
        link=torch.exp,
        inverse_link=lambda v: torch.log(v.clamp_min(1e-7)),
        measures=count_measures,
        primary=("smape", "nmae"),
        higher_is_better=frozenset(),
        label_problem=lambda y: (y < 0, "count label must be >= 0"),
        uncertainty_factor=0.5,
        loss_scale=lambda stats: max(float(stats.get("mean", 1.0)), 1e-3),
        scaled_point=True,
    ),
    TaskKind.REGRESSION: KindRules(
        output="value",
        user_units="value",
        row_loss=lambda o, y: (o - y) ** 2,
        link=lambda o: o,
        inverse_link=lambda v: v,
        measures=value_measures,
        primary=("smape", "nmae", "rmse"),
        higher_is_better=frozenset(),
        label_problem=lambda y: (np.zeros(len(y), dtype=bool), ""),
        uncertainty_factor=0.5,
        loss_scale=lambda stats: max(float(stats.get("var", 1.0)), 1e-6),
    ),
}


NEGATIVE_BINOMIAL = KindRules(
    output="log-mean",
    user_units="expected count",
    row_loss=_negative_binomial_nll,  # (output, label, log_dispersion)
    link=torch.exp,
    inverse_link=KINDS[TaskKind.COUNT].inverse_link,
    measures=count_measures,
    primary=KINDS[TaskKind.COUNT].primary,
    higher_is_better=frozenset(),
    label_problem=KINDS[TaskKind.COUNT].label_problem,
    uncertainty_factor=0.5,
    loss_scale=KINDS[TaskKind.COUNT].loss_scale,
    scaled_point=True,
)
DISTRIBUTIONS = {"poisson": KINDS[TaskKind.COUNT], "negative_binomial": NEGATIVE_BINOMIAL}


def rules(kind: TaskKind | Task | str) -> KindRules:
    """The table entry of a kind, or of a task (a count task's entry follows its ``distribution``)."""
    if isinstance(kind, Task):
        if kind.kind == TaskKind.COUNT:
            return DISTRIBUTIONS[kind.distribution]
        kind = kind.kind
    return KINDS[TaskKind(kind)]


def to_user_units(kind: TaskKind | Task | str, output: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Model output -> probability / expected count / value; NumPy in, NumPy (float64) out."""
    link = rules(kind).link
    if isinstance(output, np.ndarray):
        return link(torch.from_numpy(output.astype(np.float64))).numpy()
    return link(output)


def measure_names(task: Task | TaskKind | str) -> tuple[str, ...]:
    """The measures evaluation reports for ``task`` (what ``train.monitor`` may name), in order."""
    names = tuple(rules(task).measures(np.array([0.0, 1.0]), np.array([0.5, 0.5])))
    negative_binomial = isinstance(task, Task) and rules(task) is NEGATIVE_BINOMIAL
    return (*names, "nb_deviance") if negative_binomial else names


def higher_is_better(metric: str) -> bool:
    return any(metric in r.higher_is_better for r in KINDS.values())
