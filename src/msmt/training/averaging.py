"""An exponential moving average of the weights (``train.ema_epochs``): Polyak averaging.

After every optimiser step the average moves towards the weights just stepped,
``w̄ ← d·w̄ + (1 − d)·w`` (the first step copies them), with the decay per step
``d = 1 − 1 / (ema_epochs × steps per epoch)``: the average's time constant is ``ema_epochs`` epochs
whatever the data's size and the batch size. Validation, early stopping and the stored weights use
the average; the optimiser keeps stepping the weights as trained, so the training trajectory is the
one a run without the average takes. On small, noisy data (few hundred optimiser steps, a
validation split of a few thousand rows) the average cuts the spread between training seeds and the
luck of the epoch early stopping picks. Polyak & Juditsky, "Acceleration of stochastic
approximation by averaging" (SIAM J. Control Optim., 1992).

The average is :class:`torch.optim.swa_utils.AveragedModel` with its EMA update
(``get_ema_multi_avg_fn``): floating-point parameters are averaged, buffers are copied from the
trained model (the closed-form statistics some models count stay exact).
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay(ema_epochs: float, steps_per_epoch: int) -> float:
    """The decay per optimiser step whose time constant is ``ema_epochs`` epochs (0: the last weights)."""
    return max(0.0, 1.0 - 1.0 / (ema_epochs * max(steps_per_epoch, 1)))


def weight_average(model: nn.Module, ema_epochs: float | None, steps_per_epoch: int) -> AveragedModel | None:
    """The moving average of ``model``'s weights (a copy on the model's device), or None without
    ``ema_epochs``; ``update_parameters(model)`` after each optimiser step moves it."""
    if ema_epochs is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(ema_epochs, steps_per_epoch)))
