"""Replay the frozen base's outputs across one group's inner loop.

The inner loop evaluates the same support rows several times (``meta.inner_steps`` gradient steps,
each with up to ``meta.inner_backtrack`` trial forwards) and the personal block is a small part of the
network (the task heads): every call recomputes the base (embeddings, sequence encoders, experts,
meta units) only to get the same tensors again. :func:`replaying_frozen_base` records, per batch, what
each frozen submodule returns the first time and hands it back when the module is called again with
the same inputs.

Which modules: every submodule that holds a parameter or a buffer, no parameter that requires grad and none
of the personal block's (under :func:`msmt.meta.params.trainable_only` that is the whole base outside the personal block
and ``meta.shared``). When a call counts as "the same inputs": a dict (the batch)
or any other object: the identical object; a tensor that requires grad (it depends on φ): the identical
tensor; any other tensor: equal shape, dtype and values. So a module after the personal block (the
forecast offset, an ESMM product) is recomputed whenever φ has moved, and one whose recorded
output carries a graph is only replayed for identical graph inputs.

What changes: a frozen module that draws random numbers in training mode (dropout) draws once per batch
within the block instead of once per call (and a batch norm's running statistics move once per batch), as the input augmentation does in meta-training
(``MultiTaskModel.augment``, once per episode batch): the inner loop then descends one objective (its
backtracking compares losses of the same function). In eval mode, and for deterministic modules, the
results are those of recomputing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def frozen_modules(model: nn.Module, personal: Iterable[str]) -> list[nn.Module]:
    """The submodules of ``model`` (not ``model`` itself) that hold a parameter or a buffer, no parameter that requires grad and
    none named in ``personal`` (the block the inner loop passes in place of the model's own), nested ones
    included: a model may call a frozen module's parts rather than its ``forward``."""
    personal = set(personal)
    out = []
    for name, module in model.named_modules():
        params = list(module.named_parameters(prefix=name))
        holds = params or any(True for _ in module.buffers())  # a naive forecast holds buffers only
        if name and holds and not any(p.requires_grad or n in personal for n, p in params):
            out.append(module)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a is b:
            return True
        if a.requires_grad or b.requires_grad:
            return False
        return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float, str, bool, type(None))):
        return type(a) is type(b) and a == b
    return a is b


@contextmanager
def replaying_frozen_base(model: nn.Module, personal: Iterable[str]) -> Iterator[None]:
    """Within the block, each frozen submodule (:func:`frozen_modules`) called again with the same inputs
    returns what it returned the first time (module docstring). Use one block per group: the
    records hold the inputs alive and are dropped on exit."""
    records: dict[int, list[tuple[tuple, dict, Any]]] = {}
    patched = []
    for module in frozen_modules(model, personal):
        original = module.forward
        seen = records.setdefault(id(module), [])

        def forward(*args, _original=original, _seen=seen, **kwargs):
            for past_args, past_kwargs, output in _seen:
                if _same(past_args, args) and past_kwargs.keys() == kwargs.keys() and all(
                    _same(past_kwargs[k], v) for k, v in kwargs.items()
                ):
                    return output
            output = _original(*args, **kwargs)
            _seen.append((args, kwargs, output))
            return output

        module.forward = forward
        patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
        records.clear()
