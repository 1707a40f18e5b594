"""The one scoring path: encoded rows -> predictions in user units, for every way of scoring.

Eager PyTorch, compiled (:class:`msmt.scoring.compiled.CompiledPredictor`), ONNX
(:class:`msmt.scoring.export.OnnxRunner`) and personal blocks all go through :func:`predict`;
``msmt evaluate``/``predict``, training's validation, export parity and the HTTP service call it.
A *runner* maps a batch to raw outputs (logit / log-rate / value per name); :func:`predict`
iterates batches, routes each row to its group's block when it has one, and applies the task
kind's link (:mod:`msmt.spec.task_kinds`).

Personal blocks (a group's own copy of a few parameters, :mod:`msmt.rundir.blocks` on disk): a
row whose group has a block is scored by base + block through
:func:`torch.func.functional_call` (the base model object is never modified), eagerly and in
fp32; every other row goes through the base runner. A block source is anything with
``has(group) -> bool`` and ``get(group) -> {parameter name: Tensor} | None``.

The model may live on any device: each batch is copied to the model's device and predictions
come back as CPU NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from msmt.runtime.device import autocast, check_precision, model_device
from msmt.spec.batch import Batch, inputs_only, num_rows, take, to_device
from msmt.spec.task_kinds import to_user_units

Runner = Callable[[Batch], dict[str, "Tensor | np.ndarray"]]


class BlockSource(Protocol):
    def has(self, group: str) -> bool: ...

    def get(self, group: str) -> dict[str, Tensor] | None: ...


@dataclass
class Scores:
    """Predictions of N rows: ``values`` {name: [N] in user units}; ``personal`` [N] bool, True
    where the row was scored with its group's personal block."""

    values: dict[str, np.ndarray]
    personal: np.ndarray

    @property
    def personal_rows(self) -> int:
        return int(self.personal.sum())


def forward_with_block(model: nn.Module, block: dict[str, Tensor] | None, batch: Batch) -> dict[str, Tensor]:
    """Model outputs with the block's tensors in place of the base's (base unchanged)."""
    if not block:
        return model(batch)
    return torch.func.functional_call(model, block, (batch,), strict=False)


def eager_runner(model: nn.Module, precision: str = "fp32", auxiliary: bool = False) -> Runner:
    """Raw outputs of ``model`` (in eval mode) on the model's device, under ``precision``."""
    device = model_device(model)
    check_precision(precision)

    def run(batch: Batch) -> dict[str, Tensor]:
        batch = to_device(batch, device)
        with autocast(device, precision):
            return model.auxiliary_outputs(batch) if auxiliary else model(batch)

    return run


def _base_runner(model, batch_size: int, rows: int, precision: str, compiled: bool, autotune: bool, auxiliary: bool) -> Runner:
    if compiled:
        if auxiliary:
            raise ValueError("auxiliary outputs are scored eagerly (compiled=False)")
        from msmt.scoring.compiled import CompiledPredictor

        return CompiledPredictor(model, min(batch_size, max(rows, 1)), precision, autotune=autotune)
    return eager_runner(model, precision, auxiliary)


def _kinds(model, auxiliary: bool) -> dict[str, object]:
    spec = model.schema.spec
    return {a.name: a.kind for a in spec.auxiliary} if auxiliary else {t.name: t.kind for t in spec.tasks}


def _block_rows(groups: Sequence | np.ndarray | None, blocks: BlockSource | None, n: int) -> np.ndarray:
    """[N] bool: rows whose group has a block."""
    if groups is None or blocks is None or n == 0:
        return np.zeros(n, dtype=bool)
    return np.fromiter((g is not None and blocks.has(str(g)) for g in groups), dtype=bool, count=n)


def _user_units(kind, raw: Tensor | np.ndarray) -> np.ndarray:
    """[n] raw outputs -> [n] float32 in user units (the link in float32 for tensors, as training sees it)."""
    if isinstance(raw, Tensor):
        return to_user_units(kind, raw.float()).cpu().numpy()
    return to_user_units(kind, np.asarray(raw, dtype=np.float32)).astype(np.float32)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Batch,
    batch_size: int = 8192,
    *,
    precision: str = "fp32",
    compiled: bool = False,
    autotune: bool = False,
    runner: Runner | None = None,
    groups: Sequence | np.ndarray | None = None,
    blocks: BlockSource | None = None,
    auxiliary: bool = False,
) -> Scores:
    """Score every row of ``data`` (labels, if any, are ignored).

    Args:
        model: a :class:`~msmt.models.base.MultiTaskModel` (left unchanged; put in eval mode
            for the call).
        data: encoded rows (:mod:`msmt.spec.batch`), on the CPU or the model's device.
        batch_size: rows per forward pass.
        precision: "fp32" or "bf16" (autocast) for the base runner.
        compiled: score the base through TorchInductor; ``autotune``: its max-autotune GEMMs.
        runner: raw outputs of the base from another engine (e.g. an ONNX session); overrides
            ``precision`` / ``compiled``.
        groups: [N] group ids (None: no personal blocks); ``blocks``: where the blocks are.
        auxiliary: score the dataset's auxiliary outputs (ESMM's CVR) instead of the tasks
            (base model only).
    Returns:
        :class:`Scores` with {name: [N] float32 probability / expected count / value}.
    """
    inputs = inputs_only(data)
    n = num_rows(inputs)
    kinds = _kinds(model, auxiliary)
    out = {name: np.zeros(n, dtype=np.float32) for name in kinds}
    with_block = _block_rows(None if auxiliary else groups, blocks, n)
    was_training = model.training
    model.eval()
    try:

        def score(rows: np.ndarray, forward: Runner) -> None:
            part = inputs if len(rows) == n else take(inputs, torch.from_numpy(rows))
            for start in range(0, len(rows), batch_size):
                raw = forward(take(part, slice(start, start + batch_size)))
                where = rows[start : start + batch_size]
                for name, kind in kinds.items():
                    out[name][where] = _user_units(kind, raw[name])

        if not with_block.all():
            base = runner or _base_runner(model, batch_size, n, precision, compiled, autotune, auxiliary)
            score(np.flatnonzero(~with_block), base)
        if with_block.any():
            device = model_device(model)
            selected = np.flatnonzero(with_block)
            for group, rows in pd.Series(selected).groupby(np.asarray(groups, dtype=object)[selected], sort=False):
                block = blocks.get(str(group))
                score(rows.to_numpy(copy=True), lambda batch, block=block: forward_with_block(model, block, to_device(batch, device)))
    finally:
        model.train(was_training)
    return Scores(out, with_block)


def predict_batches(model: nn.Module, data: Batch, batch_size: int = 8192, precision: str = "fp32",
                    compiled: bool = False, autotune: bool = False) -> dict[str, np.ndarray]:
    """{task: [N]} predictions of the base model in user units (:func:`predict` without blocks)."""
    return predict(model, data, batch_size, precision=precision, compiled=compiled, autotune=autotune).values
