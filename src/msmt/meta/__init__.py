"""Meta-learning per group: a shared base θ plus a small personal block φ_g per group.

Finn et al. (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks" (MAML
and its first-order approximation); Nichol et al. (2018), "On First-Order Meta-Learning
Algorithms" (Reptile). Parameters are split by glob patterns over ``named_parameters()``, so
any registered model is wrapped without model-specific code.

* :mod:`msmt.meta.params`    personal / shared / frozen split, the objective, the inner loop
* :mod:`msmt.meta.episodes`  groups -> support/query episodes
* :mod:`msmt.meta.algorithms` MAML, first-order MAML, Reptile outer steps and the training loop
* :mod:`msmt.meta.adapt`     adapt every group of a table and store its block
"""

from msmt.meta.adapt import adapt_groups
from msmt.meta.algorithms import MetaPlan, meta_loss, meta_step, meta_train, plan_meta
from msmt.meta.episodes import GroupIndex
from msmt.meta.params import ParameterSplit, adapt, inner_loop, objective, split_parameters

__all__ = [
    "GroupIndex",
    "MetaPlan",
    "ParameterSplit",
    "adapt",
    "adapt_groups",
    "inner_loop",
    "meta_loss",
    "meta_step",
    "meta_train",
    "objective",
    "plan_meta",
    "split_parameters",
]
