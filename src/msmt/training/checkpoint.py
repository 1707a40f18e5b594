"""Resumable training state: one file, written atomically, loaded without unpickling code.

``RUN_DIR/checkpoint.pt`` holds only tensors and plain Python values (dicts, lists, numbers,
strings), saved with ``torch.save`` and read with ``torch.load(weights_only=True)``:

* ``model``, ``best_model``   state dicts (current weights, best epoch's weights)
* ``optimizers``, ``balancer`` state dicts (AdamW [and SparseAdam]) (the balancer's extra state included)
* ``average``                 with ``train.ema_epochs``: the weights' moving average (its state dict)
* ``rng``                     torch, numpy and Python global RNG states, the batch-order generator,
                              and the training GPU's RNG state when training on CUDA
* ``loop``                    data position (epoch, step within it, global step), the generator
                              state at the start of the epoch (to redraw the same batch order),
                              running loss sums, history, best epoch/value/metrics, patience count

Resuming redraws the epoch's permutation from the saved generator state, skips the batches
already done and restores every RNG, so the continued run computes the same numbers as an
uninterrupted one.

Devices: tensors are saved from wherever they live and :func:`load_checkpoint` reads them onto
the CPU; ``load_state_dict`` then copies them to the device the resumed run trains on (model,
balancer; the optimisers move their moment estimates to their parameters' device and put the
step counters where a fresh optimiser of their kind has them: beside the parameters for fused
AdamW, on the CPU otherwise). So a checkpoint written on a GPU
resumes on a CPU machine and vice versa, and RNG states come back as the CPU byte tensors that
torch requires.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msmt.data.io import atomic_write
from msmt.spec.errors import ConfigError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


def plain(value: Any) -> Any:
    """NumPy scalars -> Python numbers, recursively (``weights_only`` loading accepts no NumPy)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def rng_state(generator: torch.Generator, device: torch.device | str = "cpu") -> dict:
    """Every RNG a resumed run needs; on CUDA also ``device``'s generator (dropout masks there)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    device = torch.device(device)
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, generator: torch.Generator, device: torch.device | str = "cpu") -> None:
    """Restore :func:`rng_state`'s result on a run training on ``device``.

    A checkpoint's CUDA state is restored only when resuming on CUDA; a CPU run has no use for it.
    """
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    generator.set_state(state["generator"].cpu())
    device = torch.device(device)
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to a temporary file in the same folder, then rename it over ``path``."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **plain(state)}, tmp), durable=True)


def load_checkpoint(path: Path) -> dict:
    """The saved state, tensors on the CPU (tensors and plain values only, nothing unpickled)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path.parent}: nothing to resume (no {path.name}; the run finished or never checkpointed)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{path}: unknown checkpoint format {state.get('format') if isinstance(state, dict) else '?'}")
    return state
