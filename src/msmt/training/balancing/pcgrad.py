"""PCGrad: gradient surgery for multi-task learning (Yu et al., NeurIPS 2020, Alg. 1).

On the model's shared parameters θ_s: per task g_t = ∇_θs (w_t L_t); for each task i and each
other task j in a random order, if g_i^PC · g_j < 0 then g_i^PC ← g_i^PC − (g_i^PC · g_j)/‖g_j‖² g_j
(projection onto the normal plane of the *original* g_j). The shared gradient is Σ_i g_i^PC;
task-specific parameters get the ordinary gradient of Σ_t w_t L_t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.spec.errors import ConfigError
from msmt.spec.loss_params import PCGradParams
from msmt.training.losses import LossBalancer, register_balancer


def project_conflicts(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """[T, P] flattened task gradients -> [T, P] projected ones (Alg. 1, lines 4-8)."""
    out = grads.clone()
    num = grads.shape[0]
    for i in range(num):
        others = [j for j in torch.randperm(num, generator=generator).tolist() if j != i]
        for j in others:
            dot = out[i] @ grads[j]
            if dot < 0:
                out[i] = out[i] - dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
    return out


@register_balancer("pcgrad")
class PCGrad(LossBalancer):
    def __init__(self, tasks, params: PCGradParams, model: nn.Module):
        super().__init__(tasks, params, model)
        shared = [p for p in model.shared_parameters() if p.requires_grad]
        if not shared:
            raise ConfigError(f"loss.strategy 'pcgrad' needs shared parameters; model '{type(model).__name__}' declares none")
        self._shared = shared  # a plain list: the model owns and saves them
        self._generator = torch.Generator().manual_seed(params.seed)

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[n] for n in self.task_names])
        return (self.task_weights * stacked).sum()

    def _flat_grad(self, loss: Tensor) -> Tensor:
        grads = torch.autograd.grad(loss, self._shared, retain_graph=True, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, self._shared)])

    def backward(self, losses: dict[str, Tensor], extra: Tensor | None = None) -> Tensor:
        """Projected task gradients on the shared parameters; the model's own terms (``extra``,
        not a task) add their plain gradient everywhere."""
        weighted = [w * losses[n] for w, n in zip(self.task_weights, self.task_names)]
        rows = [self._flat_grad(loss) for loss in weighted]
        merged = project_conflicts(torch.stack(rows), self._generator).sum(0)  # [P]
        total = torch.stack(weighted).sum()
        if extra is not None:
            merged = merged + self._flat_grad(extra)
            total = total + extra
        total.backward()  # task-specific gradients (shared ones are overwritten below)
        offset = 0
        for p in self._shared:
            n = p.numel()
            p.grad = merged[offset : offset + n].view_as(p).clone()
            offset += n
        return total.detach()

    def get_extra_state(self) -> dict:  # part of state_dict(): checkpoints keep the projection order RNG
        return {"generator": self._generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self._generator.set_state(state["generator"].cpu())  # the projection-order generator is a CPU one
