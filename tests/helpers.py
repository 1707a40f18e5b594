"""Small helpers shared by tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from msmt.data.tensorize import encode_frame
from msmt.spec.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
# the public datasets of ../shared/data (override with MSMT_SHARED_DATA)
SHARED_DATA = Path(os.environ.get("MSMT_SHARED_DATA", REPO.parent / "shared" / "data"))

# MMoE on the tiny dataset for three full epochs: 1,600 training rows / 64 = 25 steps per epoch
TINY_THREE_EPOCHS = [
    "train.epochs=3",
    "train.patience=3",
    "train.batch_size=64",
    "train.progress=false",
    "train.num_threads=1",
    "model.name=mmoe",
]
TINY_THREE_EPOCHS_STEPS = 75


def model_config(name: str, **overrides) -> ModelConfig:
    base = {"name": name, "embedding_dim": 4, "hidden_dims": [16], "tower_dims": [8]}
    base.update(overrides)
    return ModelConfig.model_validate(base)


def encoded(frame, schema, with_labels=True):
    return encode_frame(frame, schema, with_labels=with_labels)


class DeviceMixCheck(TorchDispatchMode):
    """Records every aten op whose tensors live on more than one device.

    Used with the model and batch on the ``meta`` device to prove device-agnostic code on a
    machine without a GPU. Plain meta tensors already refuse most ops with a CPU operand, but
    some kernels (indexing, ``embedding``, ``gather``) accept CPU index tensors there, while
    CUDA refuses several of them; this check flags those too. Exempt, as on CUDA: 0-dim CPU
    tensors (scalars) and the explicit copies ``_to_copy`` / ``copy_`` (``.to(device)``).
    ``ops`` holds the name of every op that ran, to show what was reached.
    """

    EXPLICIT_COPIES = {"aten._to_copy.default", "aten.copy_.default"}

    def __init__(self):
        super().__init__()
        self.mixed: list[tuple[str, set[str]]] = []
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        self.ops.add(name)
        if name not in self.EXPLICIT_COPIES:
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor) and t.dim() > 0]
            devices = {t.device.type for t in tensors}
            if len(devices) > 1:
                self.mixed.append((name, devices))
        return out


def trained_by(model, batch, task: str) -> set[str]:
    """Names of the parameters that get a non-zero gradient from ``task``'s outputs on ``batch``
    (summed), in training mode."""
    model.train()
    model.zero_grad(set_to_none=True)
    model(batch)[task].sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def run_cli(*args) -> subprocess.CompletedProcess:
    """``python -m msmt ARGS`` in a fresh process (what a user's shell runs)."""
    return subprocess.run([sys.executable, "-m", "msmt", *map(str, args)], capture_output=True, text=True)


def run_main(*args) -> int:
    """``msmt ARGS`` in this process: the same command-line code as :func:`run_cli` without the
    cost of a fresh interpreter (seconds of imports); returns the exit code."""
    from msmt.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
