"""Scoring a validated request: encode with the run's schema, run the model, map to user units.

Rows are encoded with the run's :class:`FittedSchema` (:mod:`msmt.serving.encode`, checked
against :func:`msmt.data.tensorize.encode_frame`, the code ``msmt predict`` runs), so a served
prediction equals the batch one. Two backends:

* ``torch``: the eager model loaded from safetensors; rows whose group has a personal block
  are scored by base + block (:func:`msmt.scoring.personal.forward_with_block`), one forward per such
  group, the others by the base in one forward. No row depends on its batch-mates, so splitting
  a request by group changes nothing for any row.
* ``onnx``: the model exported by :mod:`msmt.scoring.export` run through onnxruntime. Personal blocks
  are baked-out of an ONNX graph, so this backend refuses to start on a run with blocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from msmt.data.tensorize import encode_frame
from msmt.rundir.layout import LoadedRun
from msmt.scoring.personal import forward_with_block
from msmt.serving.blocks import BlockCache
from msmt.spec.batch import Batch, num_rows, take
from msmt.spec.errors import ConfigError
from msmt.spec.task_kinds import to_user_units

BACKENDS = ("torch", "onnx")


class Scorer:
    """Encoded rows in, ``({task: ndarray[N]}, personal: ndarray[N] bool)`` out.

    Args:
        run: a loaded run (``msmt.rundir.layout.load_run``).
        backend: ``torch`` or ``onnx``.
        onnx_path: the exported model for the ``onnx`` backend.
        block_cache_size: personal blocks kept in memory (LRU).
        threads: intra-op threads of torch / onnxruntime.
    """

    def __init__(
        self,
        run: LoadedRun,
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        block_cache_size: int = 128,
        threads: int = 1,
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"--backend: unknown backend '{backend}' (expected one of {list(BACKENDS)})")
        self.run = run
        self.schema = run.schema
        self.model = run.model.eval()
        self.backend = backend
        self.kinds = {t.name: t.kind for t in self.schema.spec.tasks}
        self.group_column = self.schema.spec.group
        self.blocks = BlockCache(run.path, self.model, block_cache_size)
        self._onnx = None
        if backend == "onnx":
            if self.blocks.index:
                raise ConfigError(
                    f"{run.path}: has personal blocks; an ONNX graph holds the base weights only, use --backend torch"
                )
            if onnx_path is None:
                raise ConfigError("--backend onnx needs an exported model file")
            from msmt.scoring.export import OnnxRunner

            self._onnx = OnnxRunner(onnx_path, threads)

    def _raw(self, batch: Batch, block) -> dict[str, np.ndarray]:
        if self._onnx is not None:
            return self._onnx(batch)
        with torch.no_grad():
            out = forward_with_block(self.model, block, batch)
        return {t: v.numpy() for t, v in out.items()}

    def score_frame(self, frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Score a table read like ``msmt predict`` reads it (group ids from ``dataset.group``)."""
        batch = encode_frame(frame, self.schema, with_labels=False)
        groups = frame[self.group_column].tolist() if self.group_column else None
        return self.score(batch, groups)

    def score(self, batch: Batch, groups: list | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Encoded rows (+ each row's group id or None) -> (``{task: [N]}`` in user units, personal [N])."""
        n = num_rows(batch)
        raw = {t: np.zeros(n, dtype=np.float32) for t in self.kinds}
        personal = np.zeros(n, dtype=bool)
        by_group: dict[str, list[int]] = {}
        if groups is not None and self.blocks.index:
            for i, g in enumerate(groups):
                if g is not None and self.blocks.has_block(str(g)):
                    by_group.setdefault(str(g), []).append(i)
        base_rows = np.ones(n, dtype=bool)
        for group, idx in by_group.items():
            base_rows[idx] = False
            personal[idx] = True
            index = torch.as_tensor(idx, dtype=torch.long)
            out = self._raw(take(batch, index), self.blocks.get(group))
            for t in raw:
                raw[t][idx] = out[t]
        if base_rows.all():
            out = self._raw(batch, None)
            raw = {t: out[t] for t in raw}
        elif base_rows.any():
            index = torch.from_numpy(np.flatnonzero(base_rows))
            out = self._raw(take(batch, index), None)
            for t in raw:
                raw[t][base_rows] = out[t]
        return {t: to_user_units(self.kinds[t], raw[t]) for t in raw}, personal
