"""The trainer's optimisers: AdamW, plus SparseAdam for embedding tables with sparse gradients.

AdamW runs its fused kernel (``fused=True``: one pass over all parameters instead of a chain of
element-wise ops per tensor; the same update rule) wherever PyTorch supports it for the
parameters' device and dtype; 1.2–1.3× faster training steps for embedding-heavy models on CPU
(``benchmarks/speed.py``, docs/speed.md).

With ``train.sparse_embeddings: true`` every ``nn.Embedding`` of the model produces sparse
gradients (only the rows a batch looked up) and is updated by ``torch.optim.SparseAdam``, which
touches only those rows; all other parameters stay with AdamW. This pays off when tables are
large and a batch touches few rows (see ``docs/scaling.md`` for the measurement). SparseAdam
applies no weight decay, so embedding rows are not decayed in this mode.

``train.lr_schedule: cosine`` decays every optimiser's learning rate per step from ``train.lr`` to
``train.lr_min`` along half a cosine over the run's ``train.epochs`` (Loshchilov & Hutter, ICLR 2017,
SGDR, without restarts): ``torch.optim.lr_scheduler.LambdaLR`` stepped once per batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from msmt.spec.config import TrainConfig
from msmt.spec.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")


def _fusable(params: list[nn.Parameter]) -> bool:
    return all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)


def make_optimizer(
    params, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """The one optimiser factory (trainer, fine-tuning, meta-learning's outer loop).

    ``adamw`` / ``adam`` run PyTorch's fused kernels wherever every parameter lives on a device
    that has them (CPU, CUDA); ``sgd`` takes ``momentum``.
    """
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    fused = _fusable(params) or None
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    raise ConfigError(f"unknown optimizer '{name}' (expected one of {list(OPTIMIZERS)})")


def adamw(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The trainer's AdamW (fused where possible)."""
    return make_optimizer(params, "adamw", lr, weight_decay)


def build_optimizers(model: nn.Module, extra_params: list[nn.Parameter], tc: TrainConfig, distributed: bool) -> list[torch.optim.Optimizer]:
    """[AdamW] or [AdamW, SparseAdam]; the trainer zeroes, steps and checkpoints each of them."""
    if not tc.sparse_embeddings:
        return [adamw([*model.parameters(), *extra_params], tc.lr, tc.weight_decay)]
    if tc.max_grad_norm:
        raise ConfigError("train.sparse_embeddings cannot be combined with train.max_grad_norm (no norm clipping of sparse gradients)")
    if distributed:
        raise ConfigError("train.sparse_embeddings is not supported with torchrun (untested with DDP); set it to false")
    sparse: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.sparse = True  # read by forward(): gradients become torch.sparse tensors
            sparse.append(module.weight)
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    optimizers: list[torch.optim.Optimizer] = [adamw([*dense, *extra_params], tc.lr, tc.weight_decay)]
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=tc.lr))
    return optimizers


def cosine_factor(step: int, total: int, floor: float) -> float:
    """lr_t / lr after ``step`` of ``total`` steps: floor + (1 − floor)·½(1 + cos(π·step/total)), held at
    ``floor`` from ``total`` on (``floor`` = lr_min / lr)."""
    t = min(step, total) / max(total, 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_schedulers(optimizers: list[torch.optim.Optimizer], tc: TrainConfig, steps_per_epoch: int) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """One ``LambdaLR`` per optimiser for ``train.lr_schedule: cosine`` over ``train.epochs × steps_per_epoch``
    steps; [] for ``constant`` (nothing touches the learning rate)."""
    if tc.lr_schedule == "constant":
        return []
    total, floor = tc.epochs * max(steps_per_epoch, 1), tc.lr_min / tc.lr
    return [torch.optim.lr_scheduler.LambdaLR(o, lambda step: cosine_factor(step, total, floor)) for o in optimizers]
