"""Scoring through TorchInductor: the forward pass compiled once for a fixed batch shape, weights frozen.

``torch.compile`` with Inductor's *freezing* treats the trained weights as constants: it folds
them into the graph, pre-packs the Linear weights for oneDNN (in bfloat16 with
``precision="bf16"``) and fuses the element-wise work between matmuls into generated C++
kernels; the calling code between kernels is generated in C++ too (``cpp_wrapper``).
``benchmarks/speed.py`` measures it next to eager scoring and torch-rechub
(docs/speed.md): the gain comes with bfloat16; in float32 it is a few percent.

Shapes are static. Every call is padded to ``batch_size`` rows: the partial last batch repeats
its last row, which changes no row's output because a row never depends on its batch-mates
(``tests/test_models.py``). The graph is compiled on the first call (seconds) and reused after.
The weights are copied into the graph at that moment: build the predictor after training, and
build a new one if the weights change.

``autotune=True`` (``--compile --autotune``) also lets Inductor benchmark, for every matmul, its
own generated C++ GEMM kernels (AMX/AVX-512 micro-kernels with the bias and activation fused in)
against oneDNN and keep the faster (``max_autotune``): a longer compile (about 15 s instead of
5 for the speed benchmark's models), 1.06-1.14× faster scoring in bfloat16 (docs/speed.md).

Needs a C++ compiler (Inductor's CPU backend). Personal blocks (:mod:`msmt.rundir.blocks`) are not
compiled: a run with blocks is scored by the eager path.
"""

from __future__ import annotations

import torch
import torch._inductor.config as inductor_config
from torch import Tensor

from msmt.models.base import MultiTaskModel
from msmt.runtime.device import autocast, check_precision, model_device
from msmt.spec.batch import Batch, num_rows, to_device
from msmt.spec.errors import ConfigError


def pad_rows(batch: Batch, size: int) -> Batch:
    """``batch`` with its last row repeated up to ``size`` rows (a no-op when it already has ``size``)."""
    n = num_rows(batch)
    if not 0 < n <= size:
        raise ValueError(f"a batch of {n} rows cannot be padded to {size}")
    if n == size:
        return batch
    return {k: torch.cat([v, v[-1:].expand(size - n, *v.shape[1:])]) for k, v in batch.items()}


class CompiledPredictor:
    """``model``'s forward pass compiled for batches of at most ``batch_size`` rows.

    ``predictor(batch)`` returns ``{task: [n] float32}`` raw outputs (logits / log-rates / values),
    like ``model(batch)`` in eval mode, for a batch of n ≤ ``batch_size`` rows.

    Args:
        model: a trained model (put in eval mode; its weights are frozen into the graph).
        batch_size: the one batch shape the graph is compiled for.
        precision: "fp32", or "bf16" (matmuls in bfloat16 under ``torch.autocast``).
        autotune: Inductor's max-autotune GEMM selection (its C++ GEMM templates vs oneDNN).
    """

    def __init__(self, model: MultiTaskModel, batch_size: int, precision: str = "fp32", autotune: bool = False):
        check_precision(precision, "--precision")
        if batch_size < 1:
            raise ConfigError(f"--batch-size: {batch_size} must be at least 1")
        self.model = model.eval()
        self.batch_size = batch_size
        self.precision = precision
        self.autotune = autotune
        self.device = model_device(model)
        self._forward = torch.compile(model, dynamic=False)
        self._compiled = False

    @torch.no_grad()
    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        n = num_rows(batch)
        if n != self.batch_size:
            batch = pad_rows(batch, self.batch_size)
        if self.device.type != "cpu":
            batch = to_device(batch, self.device)
        with autocast(self.device, self.precision):
            out = self._forward(batch) if self._compiled else self._compile(batch)
        return {t: (v if n == self.batch_size else v[:n]).float() for t, v in out.items()}

    def _compile(self, batch: Batch) -> dict[str, Tensor]:
        """The first call compiles. These settings are read at compile time only, so they are patched
        here and not on every call (the patch itself has a measurable cost per call): ``freezing``
        (weights as constants), ``cpp_wrapper`` (the graph's calling code generated in C++) and,
        with ``autotune``, ``max_autotune`` over Inductor's C++ GEMM templates and oneDNN."""
        settings = {"freezing": True, "cpp_wrapper": True}
        if self.autotune:
            settings.update(max_autotune=True, max_autotune_gemm_backends="CPP,ATEN")
        try:
            with inductor_config.patch(settings):
                out = self._forward(batch)
        except Exception as err:  # Inductor's errors (no C++ compiler, unsupported op) are long; name the way out
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--compile: TorchInductor could not compile the model ({first}); score without --compile") from err
        self._compiled = True
        return out
