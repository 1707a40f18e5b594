"""The Adaptive Information Transfer module of AITM (Xi et al., KDD 2021, Eq. 3–5).

For funnel step t, attend over the information transferred from step t−1, p_{t−1}, and the
step's own representation q_t (the inputs u ∈ {p_{t−1}, q_t}):

    w_u = softmax_u(⟨h₂(u), h₃(u)⟩ / √k),   z_t = Σ_u w_u h₁(u)

with h₁, h₂, h₃ linear maps ℝᵏ → ℝᵏ. Per row: the softmax runs over the two inputs of the
row, never across the batch. Shapes: p, q [B, k] -> z [B, k] (and the weights [B, 2]).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class AdaptiveInformationTransfer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.value = nn.Linear(dim, dim)  # h₁
        self.query = nn.Linear(dim, dim)  # h₂
        self.key = nn.Linear(dim, dim)  # h₃
        self.scale = 1.0 / math.sqrt(dim)

    def weights(self, u: Tensor) -> Tensor:
        """[B, 2, k] stacked (p_{t−1}, q_t) -> [B, 2] attention weights."""
        return ((self.query(u) * self.key(u)).sum(-1) * self.scale).softmax(-1)

    def forward(self, transferred: Tensor, own: Tensor) -> Tensor:
        u = torch.stack([transferred, own], dim=1)  # [B, 2, k]
        return (self.weights(u).unsqueeze(-1) * self.value(u)).sum(1)  # [B, k]
