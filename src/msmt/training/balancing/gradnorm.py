"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

Task weights w_t (start: the declared task weights, renormalised to Σ w = T). Each step, on
the parameters W of ``model.last_shared_layer()``:

    G_t = ‖∇_W (w_t L_t)‖,   L̃_t = L_t / L_t(0),   r_t = L̃_t / mean_τ L̃_τ,
    L_grad = Σ_t | G_t − [mean_τ G_τ · r_t^α] |      (bracket held constant)

The model receives ∇ Σ_t w_t L_t with the current w (held constant); then w takes one step of
its own Adam optimiser on ∇_w L_grad and is renormalised to Σ w = T (and kept positive).
L_t(0) is the loss of the first training step. The weights are balancer state, not parameters
of the trainer's optimiser.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.spec.errors import ConfigError
from msmt.spec.loss_params import GradNormParams
from msmt.training.losses import LossBalancer, register_balancer


@register_balancer("gradnorm")
class GradNorm(LossBalancer):
    def __init__(self, tasks, params: GradNormParams, model: nn.Module):
        super().__init__(tasks, params, model)
        layer = model.last_shared_layer()
        shared = [p for p in layer.parameters() if p.requires_grad] if layer is not None else []
        if not shared:
            raise ConfigError(f"loss.strategy 'gradnorm' needs model.last_shared_layer(); '{type(model).__name__}' has none")
        self._layer_params = shared
        self.alpha, self.min_weight = params.alpha, params.min_weight
        num = len(tasks)
        init = self.task_weights * num / self.task_weights.sum().clamp_min(1e-12)
        self.weights = init.clone().requires_grad_(True)  # [T]; not an nn.Parameter on purpose
        self._optimizer = torch.optim.Adam([self.weights], lr=params.lr)
        self.initial_losses: Tensor | None = None
        self.last_grad_norms: Tensor | None = None  # [T] G_t of the last step (for logging and tests)

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        stacked = torch.stack([losses[n] for n in self.task_names])
        return (self.weights.detach() * stacked).sum()

    def grad_norms(self, losses: dict[str, Tensor]) -> Tensor:
        """[T] ‖∇_W L_t‖ on the last shared layer (graph kept for the main backward)."""
        norms = []
        for n in self.task_names:
            grads = torch.autograd.grad(losses[n], self._layer_params, retain_graph=True, allow_unused=True)
            norms.append(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), losses[n].new_zeros(()))))
        return torch.stack(norms)

    def backward(self, losses: dict[str, Tensor], extra: Tensor | None = None) -> Tensor:
        stacked = torch.stack([losses[n] for n in self.task_names])  # [T]
        if self.initial_losses is None:
            self.initial_losses = stacked.detach().clamp_min(1e-12)
        G = self.weights * self.grad_norms(losses).detach()  # [T]; grad flows to w only
        ratio = stacked.detach() / self.initial_losses
        r = ratio / ratio.mean()
        target = (G.mean() * r.pow(self.alpha)).detach()
        grad_loss = (G - target).abs().sum()
        self._optimizer.zero_grad(set_to_none=True)
        self.weights.grad = torch.autograd.grad(grad_loss, self.weights)[0]
        total = self.combine(losses)  # the norms G_t are the tasks' alone; the model's own terms join the update
        if extra is not None:
            total = total + extra
        total.backward()
        self.last_grad_norms = G.detach()
        self._optimizer.step()
        with torch.no_grad():
            w = self.weights.clamp_min(self.min_weight)
            self.weights.copy_(w * len(self.task_names) / w.sum())
        return total.detach()

    def current_weights(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.task_names, self.weights.detach())}

    def get_extra_state(self) -> dict:  # part of state_dict(): checkpoints keep w, L(0) and Adam
        return {"weights": self.weights.detach().clone(), "initial_losses": self.initial_losses, "optimizer": self._optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        initial = state["initial_losses"]  # checkpoints are read onto the CPU; the losses live on w's device
        self.initial_losses = None if initial is None else initial.to(self.weights.device)
        self._optimizer.load_state_dict(state["optimizer"])
