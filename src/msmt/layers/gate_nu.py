"""Gate NU of PEPNet (Chang et al., KDD 2023, "PEPNet: Parameter and Embedding Personalized Network
for Infusing with Personalized Prior Information", Eq. 1–2):

    δ = γ · σ(W₂ ReLU(W₁ x + b₁) + b₂),   γ = 2

A per-row, per-unit scale in (0, γ): with γ = 2 an untrained gate (output ≈ 0 before the
sigmoid) leaves its input as it is (δ ≈ 1), and the gate can amplify a signal as well as damp it.
Shapes: [B, in] -> [B, out].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GateNU(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int, gamma: float = 2.0):
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, out_dim)
        self.gamma = gamma

    def forward(self, x: Tensor) -> Tensor:
        return self.gamma * torch.sigmoid(self.out(torch.relu(self.hidden(x))))
