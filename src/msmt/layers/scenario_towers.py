"""One MLP tower per scenario, each with an output unit for exactly the tasks of its scenario.

The scenario-tower layout of the seed (MODELS.md, "Shared-Bottom and the scenario-tower layout"):
scenario p owns a tower [H -> tower_dims -> T_p] whose output layer has one unit per task that
exists in p (``tasks.<name>.scenarios``). The P towers are stored stacked so that all of them run
as batched matmuls, [P, B, H] x [P, H, h] — no loop over scenarios, no row depending on another:

* hidden layers: ``weights[i]`` [P, a, b], ``biases[i]`` [P, 1, b];
* output layer: one row per (scenario, task) pair that exists, ``out_weight`` [K, h] and
  ``out_bias`` [K] (K = Σ_p T_p), with ``pair_scenario`` / ``pair_task`` [K] naming each row.
  A task absent from scenario p has no parameter in tower p; its output there is exactly 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from msmt.layers.mlp import activation


class ScenarioTowers(nn.Module):
    """P towers; ``forward(h [B, H] or [P, B, H]) -> [P, B, T]`` (0 where tower p lacks task t).

    Args:
        present: [P][T] whether scenario p has task t (``FittedSchema.scenario_tasks()``).
        in_dim, dims: input width and hidden sizes (``model.tower_dims``).
        act, dropout: after each hidden layer.

    The initial weights are drawn as P dense towers (nn.Linear's distribution, scenario by
    scenario per layer) and the output rows of absent pairs are then dropped, so with every task
    in every scenario a seed gives the same network as a dense [P, h, T] output layer.
    """

    def __init__(self, present: list[list[bool]], in_dim: int, dims: list[int], act: str, dropout: float):
        super().__init__()
        table = torch.tensor(present, dtype=torch.bool).reshape(len(present), -1)  # [P, T]
        num_scenarios, num_tasks = table.shape
        sizes = [in_dim, *dims, num_tasks]
        drawn = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = torch.empty(num_scenarios, a, b)
            for p in range(num_scenarios):
                nn.init.kaiming_uniform_(w[p].T, a=math.sqrt(5))  # same init as nn.Linear
            drawn.append((w, torch.empty(num_scenarios, 1, b).uniform_(-1 / math.sqrt(a), 1 / math.sqrt(a))))
        self.weights = nn.ParameterList(nn.Parameter(w) for w, _ in drawn[:-1])
        self.biases = nn.ParameterList(nn.Parameter(b) for _, b in drawn[:-1])
        w_out, b_out = drawn[-1]
        self.out_weight = nn.Parameter(w_out.transpose(1, 2)[table].contiguous())  # [K, h], pairs in (p, t) order
        self.out_bias = nn.Parameter(b_out[:, 0][table].contiguous())  # [K]
        pairs = table.nonzero()  # [K, 2]
        self.register_buffer("pair_scenario", pairs[:, 0].contiguous(), persistent=False)
        self.register_buffer("pair_task", pairs[:, 1].contiguous(), persistent=False)
        slot = torch.full((num_scenarios, num_tasks), len(pairs), dtype=torch.long)  # K = the zero row
        slot[table] = torch.arange(len(pairs))
        self.register_buffer("slot", slot, persistent=False)
        self.register_buffer("present", table, persistent=False)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def output_layer(self) -> tuple[Tensor, Tensor]:
        """The output layer as dense stacked weights: ([P, h, T], [P, 1, T]), zeros where a pair is absent."""
        w = torch.cat([self.out_weight, self.out_weight.new_zeros(1, self.out_weight.shape[1])])[self.slot]  # [P, T, h]
        b = torch.cat([self.out_bias, self.out_bias.new_zeros(1)])[self.slot]  # [P, T]
        return w.transpose(1, 2), b.unsqueeze(1)

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        """Every layer's (weight [P, a, b], bias [P, 1, b]), the output layer last."""
        return [*zip(self.weights, self.biases), self.output_layer()]

    def forward(self, h: Tensor) -> Tensor:
        """[B, H] (every tower reads the same row) or [P, B, H] (tower p reads h[p]) -> [P, B, T]."""
        P = self.slot.shape[0]
        x = h.unsqueeze(0).expand(P, -1, -1) if h.dim() == 2 else h
        layers = self.layers()
        for i, (w, b) in enumerate(layers):
            x = torch.baddbmm(b, x, w)
            if i < len(layers) - 1:
                x = self.dropout(self.act(x))
        return x

    def pick(self, per_tower: Tensor, scenario: Tensor) -> Tensor:
        """[P, B, T] + scenario [B] (0 unknown, 1..P) -> [B, T]: each row's own tower for each of its
        scenario's tasks; where the row's scenario lacks a task (or is unknown), the mean of the
        towers that have it."""
        B = per_tower.shape[1]
        own = (scenario - 1).clamp_min(0)  # [B]
        picked = per_tower.permute(1, 0, 2)[torch.arange(B, device=scenario.device), own]  # [B, T]
        weights = self.present.to(per_tower.dtype)  # [P, T]
        mean = (per_tower * weights.unsqueeze(1)).sum(0) / weights.sum(0).clamp_min(1)  # [B, T]
        has = self.present[own] & (scenario > 0).unsqueeze(1)  # [B, T]
        return torch.where(has, picked, mean)
