"""Personal blocks for serving: the block set checked at start, blocks loaded lazily into an LRU cache.

Storage, publication and checks are :mod:`msmt.rundir.blocks`' (``RUN_DIR/blocks/index.json``
recording the base weights' SHA-256 and each block file's, one safetensors file per group) and
composition :func:`msmt.scoring.predict.predict`'s. Here: a bounded, thread-safe cache of loaded
blocks, and a start-up check that every indexed block belongs to these base weights and fits the
model (file present and unchanged, tensor names and shapes those of the base, read from the
safetensors headers), so a bad block stops the server at start with one line instead of failing
a request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from torch import Tensor, nn

from msmt.rundir.blocks import BLOCKS_DIR, BlockStore, base_sha256_of
from msmt.rundir.manifest import safetensors_shapes
from msmt.spec.errors import ConfigError, RunDirError


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
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        self.store = BlockStore(run_dir, base_sha256_of(run_dir), shapes)  # refuses blocks of another base
        self.index = self.store.index
        self._cache: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.hits = 0
        self._check(model)

    def _check(self, model: nn.Module) -> None:
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        for group, name in self.index.items():
            path = self.run_dir / BLOCKS_DIR / name
            for key, shape in safetensors_shapes(path).items():
                if key not in shapes:
                    raise RunDirError(f"{path}: tensor '{key}' of group '{group}' is not a model parameter")
                if shape != shapes[key]:
                    raise RunDirError(f"{path}: tensor '{key}' of group '{group}' has shape {shape}, model has {shapes[key]}")

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
        block = self.store.get(group)  # outside the lock: file I/O, checked (hash, shapes, finite)
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
