"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, Eq. 7).

r_t(e−1) = L_t(e−1) / L_t(e−2);  w_t(e) = T · exp(r_t(e−1)/τ) / Σ_k exp(r_k(e−1)/τ),
with w_t = 1 for the first two epochs (no ratio yet). L_t are the epoch-mean training losses
the trainer passes to ``end_epoch``. The task's declared weight multiplies w_t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.spec.loss_params import DWAParams
from msmt.training.losses import LossBalancer, register_balancer


@register_balancer("dwa")
class DynamicWeightAverage(LossBalancer):
    def __init__(self, tasks, params: DWAParams, model: nn.Module):
        super().__init__(tasks, params, model)
        self.temperature = params.temperature
        self.register_buffer("dwa_weights", torch.ones(len(tasks)))  # [T]
        self.history: list[list[float]] = []

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[n] for n in self.task_names])
        return (self.task_weights * self.dwa_weights * stacked).sum()

    def end_epoch(self, epoch_losses: dict[str, float]) -> None:
        self.history.append([float(epoch_losses[n]) for n in self.task_names])
        if len(self.history) >= 2:
            prev, last = torch.tensor(self.history[-2]), torch.tensor(self.history[-1])
            ratio = last / prev.clamp_min(1e-12)
            self.dwa_weights.copy_(len(self.task_names) * torch.softmax(ratio / self.temperature, dim=0))

    def current_weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.task_names, self.task_weights * self.dwa_weights)}

    def get_extra_state(self) -> dict:  # part of state_dict(): checkpoints keep the loss history
        return {"history": [list(h) for h in self.history]}

    def set_extra_state(self, state: dict) -> None:
        self.history = [list(h) for h in state["history"]]
