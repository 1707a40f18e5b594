"""Encoding validated request rows into a batch, the same way ``msmt predict`` encodes a file.

The reference is :func:`msmt.data.tensorize.encode_frame` on the DataFrame that
:func:`msmt.serving.request.rows_to_frame` builds. Its pandas calls cost a fixed ~1 ms per
column whatever the row count, which dominated the latency of small requests, so
:class:`RowEncoder` also has a direct path: the same :class:`FittedSchema` lookups
(``Vocabulary._index``, ``DenseStats.apply``, the scenario list) applied to Python lists.

The direct path is used only when, on a probe row built at start-up, it yields exactly the
keys, shapes, dtypes and values of ``encode_frame``; otherwise (a schema with inputs it does
not know, e.g. panel-history ``seq.*`` keys) every request goes through ``encode_frame``.
``tests/test_serve.py`` checks the two paths agree on random rows (hypothesis).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel

from msmt.data.tensorize import encode_frame
from msmt.serving.request import Column, rows_to_frame
from msmt.spec.batch import Batch
from msmt.spec.dataset import FeatureSet
from msmt.spec.fitted import OOV, UNKNOWN_SCENARIO, FittedSchema


def _text(value) -> str:
    """What ``encoders._text`` makes of a cell: the string, or ``"<NA>"`` when missing."""
    return "<NA>" if value is None else str(value)


class RowEncoder:
    """Validated rows -> :data:`Batch` (``rows`` are instances of the generated ``Row`` model)."""

    def __init__(self, schema: FittedSchema, cols: list[Column], row_model: type[BaseModel]):
        self.schema = schema
        self.cols = cols
        self.field = {c.column: c.field for c in cols}
        self._scenarios = {s: i + 1 for i, s in enumerate(schema.scenarios)}
        self.direct = self._probe(row_model)

    # -- the reference path ------------------------------------------------------------
    def via_frame(self, rows: list[BaseModel]) -> Batch:
        return encode_frame(rows_to_frame(rows, self.cols), self.schema, with_labels=False)

    # -- the direct path -----------------------------------------------------------------
    def _values(self, rows, column: str) -> list:
        name = self.field[column]
        return [getattr(r, name) for r in rows]

    def _sparse(self, rows, fs: FeatureSet) -> torch.Tensor:
        out = np.zeros((len(rows), len(fs.sparse)), dtype=np.int64)
        for j, f in enumerate(fs.sparse):
            vocab = self.schema.vocabularies[f.name]
            out[:, j] = vocab.encode([_text(v) for v in self._values(rows, f.column)])
        return torch.from_numpy(out)

    def _dense(self, rows, fs: FeatureSet) -> torch.Tensor:
        out = np.zeros((len(rows), len(fs.dense)), dtype=np.float32)
        for j, f in enumerate(fs.dense):
            x = np.array([np.nan if v is None else float(v) for v in self._values(rows, f.column)], dtype=np.float64)
            out[:, j] = self.schema.dense[f.name].apply(x)
        return torch.from_numpy(out)

    def _multi(self, rows, f) -> torch.Tensor:
        index = self.schema.vocabularies[f.name]._index
        out = np.zeros((len(rows), f.max_length), dtype=np.int64)
        for i, v in enumerate(self._values(rows, f.column)):
            text = f.separator.join(v) if isinstance(v, list) else (v or "")
            ids = [index.get(t, OOV) for t in text.split(f.separator) if t][: f.max_length]
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)

    def direct_encode(self, rows: list[BaseModel]) -> Batch:
        spec = self.schema.spec
        scen = [self._scenarios.get(_text(v), UNKNOWN_SCENARIO) for v in self._values(rows, spec.scenario.column)]
        out: Batch = {
            "scenario": torch.tensor(scen, dtype=torch.int64),
            "sparse": self._sparse(rows, spec.features),
            "dense": self._dense(rows, spec.features),
            "scenario_sparse": self._sparse(rows, spec.scenario.attributes),
            "scenario_dense": self._dense(rows, spec.scenario.attributes),
        }
        for f in spec.features.multi_sparse:
            out[f"multi.{f.name}"] = self._multi(rows, f)
        return out

    # -- choice ----------------------------------------------------------------------------
    def _probe(self, row_model: type[BaseModel]) -> bool:
        """True when the direct path reproduces ``encode_frame`` on probe rows."""
        values = {"scenario": self.schema.scenarios[0] if self.schema.scenarios else "s", "sparse": "x", "dense": 1.5}
        rows = []
        for variant in range(3):
            row = {}
            for c in self.cols:
                if c.kind == "group":
                    continue
                if c.kind == "multi":
                    row[c.column] = ["a", "b"] if variant == 0 else (None if variant == 1 else "x y")
                else:
                    row[c.column] = None if (variant == 1 and c.kind != "scenario") else values[c.kind]
            rows.append(row_model.model_validate(row))
        try:
            return batches_equal(self.direct_encode(rows), self.via_frame(rows))
        except Exception:  # noqa: BLE001 - any mismatch means: use the reference path
            return False

    def __call__(self, rows: list[BaseModel]) -> Batch:
        return self.direct_encode(rows) if self.direct else self.via_frame(rows)


def batches_equal(a: Batch, b: Batch) -> bool:
    """Same keys, shapes, dtypes and values (NaN-free batches)."""
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )
