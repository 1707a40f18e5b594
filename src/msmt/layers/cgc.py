"""One PLE extraction level: Customised Gate Control (Tang et al., RecSys 2020, Sec. 4.2-4.3).

Each task t has its own experts E_t (k_t of them) and all tasks share experts E_s (k_s). Task
t's gate mixes only [E_t ; E_s]:   z_t = sum_j softmax(W_t x_t)_j [E_t(x_t) ; E_s(x_s)]_j.
Below the last level a shared gate mixes *all* experts to feed the next level's shared experts:
z_s = sum_j softmax(W_s x_s)_j [E_1(x_1) ; ... ; E_T(x_T) ; E_s(x_s)]_j.
Gates are per row (softmax over experts, never over the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.layers.mlp import MLP


class ExtractionLevel(nn.Module):
    """Inputs: T task inputs [B, in] and the shared input [B, in].
    Outputs: T task outputs [B, E] and the shared output [B, E] (``None`` at the last level).
    """

    def __init__(
        self,
        num_tasks: int,
        in_dim: int,
        expert_dims: list[int],
        task_experts: int,
        shared_experts: int,
        act: str,
        dropout: float,
        shared_gate: bool,
    ):
        super().__init__()
        self.task_experts = nn.ModuleList(
            nn.ModuleList(MLP(in_dim, expert_dims, act=act, dropout=dropout) for _ in range(task_experts))
            for _ in range(num_tasks)
        )
        self.shared_experts = nn.ModuleList(MLP(in_dim, expert_dims, act=act, dropout=dropout) for _ in range(shared_experts))
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, task_experts + shared_experts) for _ in range(num_tasks))
        self.shared_gate = nn.Linear(in_dim, num_tasks * task_experts + shared_experts) if shared_gate else None
        self.out_dim = self.shared_experts[0].out_dim

    @staticmethod
    def _mix(gate_logits: Tensor, experts: Tensor) -> Tensor:
        """[B, K] gate logits, [B, K, E] expert outputs -> [B, E]."""
        return torch.bmm(gate_logits.softmax(-1).unsqueeze(1), experts).squeeze(1)

    def forward(self, task_inputs: list[Tensor], shared_input: Tensor) -> tuple[list[Tensor], Tensor | None]:
        shared = torch.stack([e(shared_input) for e in self.shared_experts], dim=1)  # [B, Ks, E]
        own_all, task_out = [], []
        for t, x_t in enumerate(task_inputs):
            own = torch.stack([e(x_t) for e in self.task_experts[t]], dim=1)  # [B, Kt, E]
            own_all.append(own)
            task_out.append(self._mix(self.task_gates[t](x_t), torch.cat([own, shared], dim=1)))
        shared_out = None
        if self.shared_gate is not None:
            shared_out = self._mix(self.shared_gate(shared_input), torch.cat([*own_all, shared], dim=1))
        return task_out, shared_out

    def shared_modules(self) -> list[nn.Module]:
        return [self.shared_experts, *([self.shared_gate] if self.shared_gate is not None else [])]
