"""Where training runs: ``train.device`` -> a :class:`torch.device`, and the process-group backend.

``train.device`` accepts

* ``cpu``
* ``cuda``    one process: ``cuda:0``; under ``torchrun`` (``WORLD_SIZE`` > 1): ``cuda:LOCAL_RANK``,
  one GPU per process
* ``cuda:N``  one process only (under ``torchrun`` every rank would pick the same GPU)
* ``auto``    ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``

Asking for CUDA where ``torch.cuda.is_available()`` is False (no GPU, or a CPU-only torch build)
is a :class:`~msmt.spec.errors.ConfigError` naming ``train.device``. Distributed training uses
``nccl`` on CUDA and ``gloo`` on the CPU (:mod:`msmt.training.distributed`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import torch
from torch import nn

from msmt.spec.config import DEVICE_PATTERN
from msmt.spec.errors import ConfigError


def resolve_device(spec: str, env: Mapping[str, str] | None = None) -> torch.device:
    """The device this process trains on, for ``train.device = spec``.

    ``env`` (default ``os.environ``) supplies ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun``
    sets them.
    """
    env = os.environ if env is None else env
    if not isinstance(spec, str) or not DEVICE_PATTERN.fullmatch(spec):
        raise ConfigError(f"train.device: '{spec}' is not a device (use cpu, cuda, cuda:N or auto)")
    world = int(env.get("WORLD_SIZE", "1"))
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"train.device: '{spec}' needs CUDA, but torch.cuda.is_available() is False "
            f"(no GPU visible, or a CPU-only torch build, torch {torch.__version__}); use train.device=cpu or auto"
        )
    count = torch.cuda.device_count()
    if spec == "cuda":
        index = int(env.get("LOCAL_RANK", "0")) if world > 1 else 0
        if index >= count:
            raise ConfigError(
                f"train.device: this process has LOCAL_RANK {index} but only {count} CUDA device(s) are visible; "
                "start at most one process per GPU (torchrun --nproc-per-node <= GPUs)"
            )
        return torch.device("cuda", index)
    index = int(spec.split(":")[1])
    if world > 1:
        raise ConfigError(f"train.device: '{spec}' pins every torchrun process to one GPU; use train.device=cuda (each rank takes cuda:LOCAL_RANK)")
    if index >= count:
        raise ConfigError(f"train.device: '{spec}' but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)


def backend_for(device: torch.device) -> str:
    """The ``torch.distributed`` backend: ``nccl`` for CUDA tensors, ``gloo`` for CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters (or, without any, buffers) live; CPU for an empty module."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, name: str = "precision") -> None:
    """A :class:`ConfigError` naming ``name`` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{name}: '{precision}' is not one of {list(PRECISIONS)}")


def autocast(device: torch.device, precision: str):
    """``precision`` "bf16": run under ``torch.autocast(bfloat16)`` (matmuls in bfloat16); "fp32" changes nothing.

    Used for training forward passes (``train.precision``) and for scoring (``msmt predict --precision``).
    """
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
