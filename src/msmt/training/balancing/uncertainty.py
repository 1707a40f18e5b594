"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

A learned log-variance s_t = log σ_t² per task:

* classification (binary):        exp(−s_t) · L_t + ½ s_t        (Eq. 10, σ² form)
* regression and count tasks:     ½ exp(−s_t) · L_t + ½ s_t      (Eq. 7, Gaussian form)

multiplied by the task's declared weight. For fixed L_t the optimum is s_t = log(2 L_t)
(classification) or s_t = log L_t (regression), so a noisier task (larger irreducible loss)
ends with the smaller effective weight exp(−s_t) (or ½ exp(−s_t)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.spec.loss_params import UncertaintyParams
from msmt.spec.task_kinds import rules
from msmt.training.losses import LossBalancer, register_balancer


@register_balancer("uncertainty")
class UncertaintyWeighting(LossBalancer):
    def __init__(self, tasks, params: UncertaintyParams, model: nn.Module):
        super().__init__(tasks, params, model)
        self.log_var = nn.Parameter(torch.full((len(tasks),), float(params.init_log_var)))  # [T]
        scale = [rules(t).uncertainty_factor for t in tasks]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))  # 1 or ½ per task

    def effective_weights(self) -> Tensor:
        """[T] the multiplier of each L_t: w_t · c_t · exp(−s_t)."""
        return self.task_weights * self.scale * torch.exp(-self.log_var)

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[n] for n in self.task_names])  # [T]
        return (self.effective_weights() * stacked + self.task_weights * 0.5 * self.log_var).sum()

    def current_weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.task_names, self.effective_weights().detach())}
