"""Data-parallel training with PyTorch's own engine (``torch.distributed`` + DDP).

``torchrun --nproc-per-node N -m msmt train CONFIG`` starts N processes; each one reads the
same data, draws the same global batch order (same seed), and trains on its own contiguous
shard of every global batch. Gradients are averaged by DistributedDataParallel; sample weights
of a shard are scaled by ``n_rank * world / n_global`` so that the average equals the gradient
of the global batch mean even when the shards differ in size. Validation predictions are
gathered from all ranks before metrics are computed (AUC is not an average of per-shard AUCs),
so every rank takes the same early-stopping decision; only rank 0 writes files.

Backend: ``gloo``. The training loop keeps tensors on the CPU (``train.device`` is not yet used
for placement), so ``nccl`` — which needs CUDA tensors — is refused with a clear error until the
loop places the model and batches on ``cuda:LOCAL_RANK``; see ``docs/scaling.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from msmt.data.tensorize import Batch, num_rows, take
from msmt.errors import ConfigError
from msmt.inference import predict_batches

# Strategies that compute per-task gradients themselves (autograd.grad on shared layers) and
# overwrite ``.grad``: under DDP those gradients would be per-shard, never averaged.
_DDP_UNSUPPORTED = {"gradnorm", "pcgrad"}


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def current() -> "Dist":
        if tdist.is_available() and tdist.is_initialized():
            return Dist(tdist.get_rank(), tdist.get_world_size())
        return Dist()

    def check_strategy(self, strategy: str) -> None:
        if self.active and strategy in _DDP_UNSUPPORTED:
            raise ConfigError(
                f"loss.strategy '{strategy}' does not support distributed training "
                f"(it rewrites gradients per process); use fixed, uncertainty or dwa with torchrun"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        return nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous [start, stop) of ``n`` rows (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def shard(self, batch: Batch) -> Batch:
        """This rank's part of a global batch, weights scaled so DDP's mean is the global mean."""
        if not self.active:
            return batch
        n = num_rows(batch)
        start, stop = self.bounds(n)
        local = take(batch, slice(start, stop))
        local["weight"] = local["weight"] * ((stop - start) * self.world / n)
        return local

    def usable(self, global_rows: int) -> bool:
        """A global batch smaller than the world would leave a rank empty: every rank skips it."""
        return global_rows >= self.world

    def lockstep(self, batches):
        """Yield while every rank still has a batch (streamed shards differ in length; a rank
        that stopped early would leave the others waiting in all-reduce forever)."""
        it = iter(batches)
        while True:
            batch = next(it, None)
            if self.active:
                flag = torch.tensor([0 if batch is None else 1])
                tdist.all_reduce(flag, op=tdist.ReduceOp.MIN)
                if int(flag) == 0:
                    return
            elif batch is None:
                return
            yield batch

    def sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        tdist.all_reduce(t)
        return t.tolist()

    def mean(self, values: list[float]) -> list[float]:
        return [v / self.world for v in self.sum(values)]

    def sync_grads(self, params) -> None:
        """Average gradients of parameters DDP does not own (e.g. a balancer's log-variances)."""
        if not self.active:
            return
        for p in params:
            if p.grad is not None:
                tdist.all_reduce(p.grad)
                p.grad /= self.world

    def predict(self, model: nn.Module, data: Batch, batch_size: int) -> dict[str, np.ndarray]:
        """Predictions for every row of ``data``: each rank scores its slice, all gather."""
        if not self.active:
            return predict_batches(model, data, batch_size)
        start, stop = self.bounds(num_rows(data))
        local = predict_batches(model, take(data, slice(start, stop)), batch_size)
        parts: list = [None] * self.world
        tdist.all_gather_object(parts, local)
        return {t: np.concatenate([p[t] for p in parts]) for t in local}


def init_from_env(device: str = "cpu") -> tuple[Dist, bool]:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise).

    Returns the context and whether this call joined (then the caller leaves with :func:`shutdown`).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or tdist.is_initialized():
        return Dist.current(), False
    if device.startswith("cuda"):
        raise ConfigError("train.device: distributed training runs on CPU with gloo here (the loop does not place tensors on CUDA yet); set train.device=cpu")
    tdist.init_process_group(backend="gloo")
    return Dist.current(), True


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
