"""STAR's scenario-aware layers (Sheng et al., CIKM 2021, Sec. 4).

Scenario index convention: 0 = unknown (never seen in training), 1..P = training scenarios.
Every row is computed with its own scenario's parameters through gathers and one-hot matmuls:
no Python loop over rows or scenarios, and at inference no row depends on its batch-mates.

Unknown rows (index 0) are served by the *centre of the star*: the shared parameters alone
(W_0^s = 1, b_0^s = 0, gamma_0 = 1, beta_0 = 0) and, for normalisation, the pooled statistics of
all training scenarios (the equal-weight mixture: mean_p mu_p and mean_p(var_p + mu_p^2) - mu^2).
They never update any statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StarLinear(nn.Module):
    """Star-topology FC: y = x (W ⊙ W_p^s) + (b + b_p^s) for a row of scenario p.

    [B, in] features and [B] scenario indices -> [B, out]. ``shared`` holds W [in, out] and
    b [out]; W^s [P, in, out] starts at ones and b^s [P, out] at zeros, so every scenario starts
    as the shared network.
    """

    def __init__(self, num_scenarios: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.shared = nn.ParameterDict(
            {
                "weight": nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-bound, bound)),
                "bias": nn.Parameter(torch.empty(out_dim).uniform_(-bound, bound)),
            }
        )
        self.scenario_weight = nn.Parameter(torch.ones(num_scenarios, in_dim, out_dim))
        self.scenario_bias = nn.Parameter(torch.zeros(num_scenarios, out_dim))

    def forward(self, x: Tensor, scenario: Tensor) -> Tensor:
        w, b = self.shared["weight"], self.shared["bias"]
        weights = torch.cat([w.unsqueeze(0), w * self.scenario_weight], dim=0)  # [P+1, in, out]; 0 = centre
        biases = torch.cat([b.unsqueeze(0), b + self.scenario_bias], dim=0)  # [P+1, out]
        every = torch.einsum("bi,pio->bpo", x, weights)  # [B, P+1, out]: each row under each scenario
        rows = torch.arange(x.shape[0], device=x.device)
        return every[rows, scenario] + biases[scenario]


class PartitionedNorm(nn.Module):
    """Partitioned normalisation: z' = (γ γ_p)(z − μ_p)/sqrt(σ²_p + ε) + (β + β_p).

    [B, D] and [B] scenario indices -> [B, D]. Training: μ_p, σ²_p are the (biased) batch
    statistics of scenario p's rows only, and only scenario p's running averages move (with
    ``momentum``, unbiased variance, as ``nn.BatchNorm1d``). Inference: each row uses its own
    scenario's running averages, so its output is independent of the rest of the batch.
    A scenario with a single row in a training batch gets zero variance there (z' = β + β_p) and
    its running variance is left unchanged.
    """

    def __init__(self, num_scenarios: int, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.num_scenarios, self.momentum, self.eps = num_scenarios, momentum, eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.scenario_gamma = nn.Parameter(torch.ones(num_scenarios, dim))
        self.scenario_beta = nn.Parameter(torch.zeros(num_scenarios, dim))
        self.register_buffer("running_mean", torch.zeros(num_scenarios, dim))
        self.register_buffer("running_var", torch.ones(num_scenarios, dim))

    def pooled_stats(self) -> tuple[Tensor, Tensor]:
        """[D], [D]: equal-weight mixture of the scenarios' running statistics (for index 0)."""
        mean = self.running_mean.mean(0)
        second = (self.running_var + self.running_mean**2).mean(0)
        return mean, (second - mean**2).clamp_min(0.0)

    def batch_stats(self, z: Tensor, scenario: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-scenario batch statistics: counts [P], means [P, D], biased variances [P, D]."""
        onehot = F.one_hot(scenario, self.num_scenarios + 1)[:, 1:].to(z.dtype)  # [B, P]; unknown rows: all 0
        counts = onehot.sum(0)  # [P]
        safe = counts.clamp_min(1.0).unsqueeze(-1)
        mean = onehot.T @ z / safe  # [P, D]
        centred = z - (onehot @ mean)  # [B, D]; unknown rows are never read below
        var = onehot.T @ centred**2 / safe  # [P, D]
        return counts, mean, var

    def forward(self, z: Tensor, scenario: Tensor) -> Tensor:
        pooled_mean, pooled_var = self.pooled_stats()
        if self.training:
            counts, mean, var = self.batch_stats(z, scenario)
            with torch.no_grad():
                m = self.momentum
                seen = (counts > 0).unsqueeze(-1)
                spread = (counts > 1).unsqueeze(-1)
                unbiased = var * (counts / (counts - 1).clamp_min(1.0)).unsqueeze(-1)
                self.running_mean.copy_(torch.where(seen, (1 - m) * self.running_mean + m * mean, self.running_mean))
                self.running_var.copy_(torch.where(spread, (1 - m) * self.running_var + m * unbiased, self.running_var))
        else:
            mean, var = self.running_mean, self.running_var
        means = torch.cat([pooled_mean.unsqueeze(0), mean], dim=0)  # [P+1, D]; row 0 = unknown scenario
        variances = torch.cat([pooled_var.unsqueeze(0), var], dim=0)
        gammas = torch.cat([self.gamma.unsqueeze(0), self.gamma * self.scenario_gamma], dim=0)
        betas = torch.cat([self.beta.unsqueeze(0), self.beta + self.scenario_beta], dim=0)
        normed = (z - means[scenario]) * torch.rsqrt(variances[scenario] + self.eps)
        return gammas[scenario] * normed + betas[scenario]
