"""Data-parallel training with PyTorch's own engine (``torch.distributed`` + DDP).

``torchrun --nproc-per-node N -m msmt train CONFIG`` starts N processes; each one reads the
same data, draws the same global batch order (same seed), and trains on its own contiguous
shard of every global batch. Gradients are averaged by DistributedDataParallel; sample weights
of a shard are scaled by ``n_rank * world / n_global`` so that the average equals the gradient
of the global batch mean even when the shards differ in size. Validation predictions are
gathered from all ranks before metrics are computed (AUC is not an average of per-shard AUCs),
so every rank takes the same early-stopping decision; only rank 0 writes files.

Device and backend (:mod:`msmt.runtime.device`): with ``train.device`` resolving to the CPU the process
group uses ``gloo``; with CUDA (``train.device=cuda`` or ``auto`` on a GPU machine) each rank
takes ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``), the group uses ``nccl``, DDP gets
``device_ids=[LOCAL_RANK]`` and the small tensors :class:`Dist` all-reduces itself (loss sums,
the lockstep flag) are created on that GPU, since NCCL only moves CUDA tensors. The CPU/gloo
path is tested with two processes; the CUDA/NCCL path has not been run on a GPU
(``docs/scaling.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from msmt.runtime.device import backend_for, resolve_device
from msmt.scoring.predict import predict_batches
from msmt.spec.batch import Batch, num_rows, take
from msmt.spec.errors import ConfigError

# Strategies that compute per-task gradients themselves (autograd.grad on shared layers) and
# overwrite ``.grad``: under DDP those gradients would be per-shard, never averaged.
_DDP_UNSUPPORTED = {"gradnorm", "pcgrad"}


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size and the device it trains on."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def current(device: torch.device | str = "cpu") -> Dist:
        """The joined process group (if any) with this process training on ``device``."""
        device = torch.device(device)
        if tdist.is_available() and tdist.is_initialized():
            if tdist.get_backend() == "nccl" and device.type != "cuda":
                raise ConfigError(f"train.device: the process group uses nccl, which needs CUDA tensors, but training is on {device}")
            return Dist(tdist.get_rank(), tdist.get_world_size(), device)
        return Dist(device=device)

    def check_strategy(self, strategy: str) -> None:
        if self.active and strategy in _DDP_UNSUPPORTED:
            raise ConfigError(
                f"loss.strategy '{strategy}' does not support distributed training "
                f"(it rewrites gradients per process); use fixed, uncertainty or dwa with torchrun"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.active:
            return model
        # CUDA: one GPU per process, the model already on it; CPU: device_ids must be None
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's contiguous [start, stop) of ``n`` rows (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def shard(self, batch: Batch) -> Batch:
        """This rank's part of a global batch, weights scaled so DDP's mean is the global mean.

        A task's loss is a mean over the rows where it exists (``task_mask``): rank r's loss is
        Σ_local / l_t, so task t's weights are scaled by l_t · world / c_t (l_t, c_t: its rows in
        the shard and in the global batch) and the mean over ranks is Σ_global / c_t.
        """
        if not self.active:
            return batch
        n = num_rows(batch)
        start, stop = self.bounds(n)
        local = take(batch, slice(start, stop))
        if "task_mask" in batch:
            rows_global = batch["task_mask"].sum(0).clamp_min(1)  # [T]
            rows_local = local["task_mask"].sum(0).clamp_min(1)
            local["task_weight"] = local["task_weight"] * (rows_local * self.world / rows_global)
        else:
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
                flag = torch.tensor([0 if batch is None else 1], device=self.device)
                tdist.all_reduce(flag, op=tdist.ReduceOp.MIN)
                if int(flag) == 0:
                    return
            elif batch is None:
                return
            yield batch

    def sum(self, values: list[float] | torch.Tensor) -> list[float]:
        """Element-wise sums over all ranks as Python floats (float64 on this rank's device, which
        nccl needs; a tensor already there is reduced without leaving it, then read back once)."""
        t = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        if self.active:
            tdist.all_reduce(t)
        return t.tolist()

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over all ranks (a new tensor, same device and dtype; ``t`` itself alone)."""
        if not self.active:
            return t
        out = t.clone()
        tdist.all_reduce(out)
        return out

    def mean(self, values: list[float] | torch.Tensor) -> list[float]:
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
        """Predictions for every row of ``data``: each rank scores its slice, all gather.

        ``data`` stays on the CPU; batches go to the model's device and the predictions come
        back as NumPy arrays, gathered as Python objects (over nccl through the current GPU).
        """
        if not self.active:
            return predict_batches(model, data, batch_size)
        start, stop = self.bounds(num_rows(data))
        local = predict_batches(model, take(data, slice(start, stop)), batch_size)
        parts: list = [None] * self.world
        tdist.all_gather_object(parts, local)
        return {t: np.concatenate([p[t] for p in parts]) for t in local}


def init_from_env(device: str = "cpu") -> tuple[Dist, bool]:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise).

    ``device`` is ``train.device``; it is resolved first (:func:`msmt.runtime.device.resolve_device`:
    ``cuda:LOCAL_RANK`` under torchrun), so a run asking for a GPU that is not there fails
    before any process group exists. On CUDA the rank's GPU becomes the current device and the
    backend is ``nccl``; on the CPU it is ``gloo``.
    Returns the context and whether this call joined (then the caller leaves with :func:`shutdown`).
    """
    resolved = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or tdist.is_initialized():
        return Dist.current(resolved), False
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)  # before the group: NCCL and all_gather_object use the current GPU
    tdist.init_process_group(backend=backend_for(resolved))
    return Dist.current(resolved), True


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
