"""Scoring a validated request: encode with the run's schema, run the model, map to user units.

Rows are encoded with the run's :class:`FittedSchema` (:mod:`msmt.serving.encode`, checked
against :func:`msmt.data.tensorize.encode_frame`, the code ``msmt predict`` runs), so a served
prediction equals the batch one. Two backends:

* ``torch``: the eager model loaded from safetensors; rows whose group has a personal block
  are scored by base + block, one forward per such group, the others by the base in one forward
  (:func:`msmt.scoring.predict.predict`, the path ``msmt predict`` takes). No row depends on its batch-mates, so splitting
  a request by group changes nothing for any row.
* ``onnx``: the model exported by :mod:`msmt.scoring.export` run through onnxruntime. Personal blocks
  are baked-out of an ONNX graph, so this backend refuses to start on a run with blocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msmt.rundir.layout import LoadedRun
from msmt.scoring.predict import predict
from msmt.serving.blocks import BlockCache
from msmt.spec.batch import Batch, num_rows
from msmt.spec.errors import ConfigError

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

    def score(self, batch: Batch, groups: list | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Encoded rows (+ each row's group id or None) -> (``{task: [N]}`` in user units, personal [N]).

        Through the package's one scoring path (:func:`msmt.scoring.predict.predict`)."""
        scores = predict(self.model, batch, max(num_rows(batch), 1), runner=self._onnx, groups=groups, blocks=self.blocks)
        return scores.values, scores.personal
