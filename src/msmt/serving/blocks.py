"""Personal blocks for serving: the index read once, blocks loaded lazily into an LRU cache.

Storage is :mod:`msmt.rundir.blocks`' and composition :func:`msmt.scoring.predict.predict`'s (``RUN_DIR/blocks/index.json`` + one
safetensors file per group; base + block through ``functional_call``). Here: which groups have
a block, a bounded cache of loaded blocks, and a start-up check that every indexed block fits
the model (file present, tensor names and shapes those of the base, written for these base
weights: the SHA-256 of ``model.safetensors`` its header records), read from the safetensors
headers only, so a bad block stops the server at start with one line instead of failing a request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from safetensors import safe_open
from torch import Tensor, nn

from msmt.rundir.blocks import BASE_KEY, BLOCKS_DIR, check_base, load_block, read_index, weights_sha256
from msmt.spec.errors import ConfigError


class BlockCache:
    """Thread-safe LRU of loaded blocks.

    Args:
        run_dir: the run directory (``blocks/`` inside it may be absent: no group has a block).
        model: the base model, to check block tensor names and shapes against.
        capacity: most blocks kept in memory (0: load on every use, keep none).
    """

    def __init__(self, run_dir: str | Path, model: nn.Module, capacity: int = 128):
        if capacity < 0:
            raise ConfigError(f"block cache size must be >= 0, got {capacity}")
        self.run_dir = Path(run_dir)
        self.capacity = capacity
        self.index = read_index(run_dir)
        self.base = weights_sha256(run_dir) if self.index else None
        self._cache: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.hits = 0
        self._check(model)

    def _check(self, model: nn.Module) -> None:
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        for group, name in self.index.items():
            path = self.run_dir / BLOCKS_DIR / name
            if not path.exists():
                raise ConfigError(f"{path}: block file of group '{group}' is missing")
            with safe_open(str(path), framework="pt") as fh:
                check_base(path, group, (fh.metadata() or {}).get(BASE_KEY), self.base)
                for key in fh.keys():
                    if key not in shapes:
                        raise ConfigError(f"{path}: tensor '{key}' of group '{group}' is not a model parameter")
                    shape = tuple(fh.get_slice(key).get_shape())
                    if shape != shapes[key]:
                        raise ConfigError(f"{path}: tensor '{key}' of group '{group}' has shape {shape}, model has {shapes[key]}")

    def has(self, group: str) -> bool:
        return group in self.index

    def get(self, group: str) -> dict[str, Tensor] | None:
        """The group's block, or None when it has none (score with the base)."""
        if group not in self.index:
            return None
        with self._lock:
            block = self._cache.get(group)
            if block is not None:
                self._cache.move_to_end(group)
                self.hits += 1
                return block
        block = load_block(self.run_dir, group, self.index, self.base)  # outside the lock: file I/O
        with self._lock:
            self.loads += 1
            if self.capacity:
                self._cache[group] = block
                self._cache.move_to_end(group)
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        return block

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "groups_with_block": len(self.index),
                "cached": len(self._cache),
                "capacity": self.capacity,
                "loads": self.loads,
                "hits": self.hits,
            }
