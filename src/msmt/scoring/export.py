"""Export a trained model to ONNX or TorchScript, with a parity check against eager PyTorch.

An msmt model takes a dict batch (``docs/architecture.md``, "Batch layout") and returns
``{task: Tensor[B]}`` (logit / log-rate / value). Exported graphs take *positional* tensors, so
:class:`FlatModel` maps a tuple of tensors, in the order of :func:`used_keys`, to a tuple of task
outputs. Which keys a model reads is found by running it once on a recording dict: the export is
generic over the batch keys (``sparse``, ``dense``, ``multi.*``, ``seq.*``...), and inputs a model
never reads (e.g. an empty ``scenario_dense`` [N, 0]) are not part of the graph.

Dynamic axes: dimension 0 (rows) of every input and output; dimension 1 of ``seq.*`` inputs
(history length ``W``). Outputs stay in model units (logit, log-rate, value); the task kinds
are stored in the ONNX metadata (``msmt.tasks``) so a consumer can map them to probabilities
and expected counts, as :func:`msmt.spec.task_kinds.to_user_units` does.

Parity: the exported file is scored on validation rows at two batch sizes different from the
tracing example (so a batch size frozen into the graph is caught) and compared with eager
outputs; a max abs difference above ``tolerance`` raises :class:`ExportError` and nothing is
written to ``--out`` (the file is written to a temporary name and renamed after the check).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from msmt.data.io import atomic_write
from msmt.spec.batch import Batch, num_rows, take
from msmt.spec.errors import MsmtError

log = logging.getLogger("msmt.scoring.export")
FORMATS = ("onnx", "torchscript")
SEQ_PREFIX = "seq."
OPSET = 17  # the TorchScript-based fallback
OPSET_DYNAMO = 18  # the torch.export-based exporter supports opset 18 and later
TRACE_ROWS = 5  # tracing example size; parity runs at other sizes


class ExportError(MsmtError):
    """The exported graph does not reproduce the eager model (or cannot be built)."""

    exit_code = 1


class _RecordingBatch(dict):
    """A batch dict that remembers which keys were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: list[str] = []

    def __getitem__(self, key):
        if key not in self.read:
            self.read.append(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self and key not in self.read:
            self.read.append(key)
        return super().get(key, default)


@torch.no_grad()
def used_keys(model: nn.Module, batch: Batch) -> list[str]:
    """Batch keys the model reads, in a stable (sorted) order."""
    rec = _RecordingBatch({k: v for k, v in batch.items() if k not in ("labels", "weight")})
    model(rec)
    return sorted(rec.read)


class FlatModel(nn.Module):
    """Positional wrapper: ``forward(*tensors in input_names order) -> tuple(task outputs)``."""

    def __init__(self, model: nn.Module, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.task_names = list(model.task_names)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        out = self.model(dict(zip(self.input_names, inputs)))
        return tuple(out[t] for t in self.task_names)


def dynamic_axes(input_names: list[str], output_names: list[str]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name in input_names:
        axes[name] = {0: "batch", 1: "seq_len"} if name.startswith(SEQ_PREFIX) else {0: "batch"}
    for name in output_names:
        axes[name] = {0: "batch"}
    return axes


def _example(batch: Batch, names: list[str], rows: int) -> tuple[Tensor, ...]:
    return tuple(batch[k][:rows] for k in names)


def write_onnx(model: nn.Module, batch: Batch, path: str | Path) -> list[str]:
    """Export ``model`` on a few rows of ``batch`` to an ONNX file; returns the input names.

    The ``torch.export``-based exporter (``dynamo=True``, torch's current path; it needs the
    ``onnxscript`` package of the ``export`` extra) captures the graph with symbolic batch and
    history sizes. Where it cannot be used (``onnxscript`` missing, or ``torch.export`` cannot
    capture this model), the TorchScript-based exporter traces the model instead and the reason
    is logged (``msmt.scoring.export``); the parity check judges either graph."""
    names = used_keys(model, batch)
    flat = FlatModel(model, names).eval()
    example = _example(batch, names, TRACE_ROWS)
    reason = _dynamo_unavailable()
    if reason is None:
        try:
            _write_dynamo(flat, example, names, path)
        except Exception as exc:  # noqa: BLE001 - any capture failure: the traced graph, with the reason logged
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"torch.export could not capture {type(model).__name__} ({type(exc).__name__}: {first[:200]})"
    if reason is not None:
        log.warning("ONNX export through the TorchScript-based exporter: %s", reason)
        _write_traced(flat, example, names, path)
    _add_metadata(path, model)
    return names


def _dynamo_unavailable() -> str | None:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return "the onnxscript package is not installed (pip install 'msmt[export]')"
    return None


def _write_dynamo(flat: FlatModel, example: tuple[Tensor, ...], names: list[str], path: str | Path) -> None:
    batch = torch.export.Dim("batch")
    seq_len = torch.export.Dim("seq_len")
    shapes = tuple({0: batch, 1: seq_len} if n.startswith(SEQ_PREFIX) else {0: batch} for n in names)
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" (4 lines, not about msmt)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                flat, example, dynamo=True, input_names=names, output_names=flat.task_names,
                dynamic_shapes=(shapes,), opset_version=OPSET_DYNAMO, optimize=True, verbose=False,
            )
    finally:
        registry.setLevel(level)
    program.save(str(path))


def _write_traced(flat: FlatModel, example: tuple[Tensor, ...], names: list[str], path: str | Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the fallback's own deprecation notice: logged above with its reason
        torch.onnx.export(
            flat, example, str(path), dynamo=False, input_names=names, output_names=flat.task_names,
            dynamic_axes=dynamic_axes(names, flat.task_names), opset_version=OPSET,
        )


def _add_metadata(path: str | Path, model: nn.Module) -> None:
    import onnx

    proto = onnx.load(str(path))
    kinds = {t.name: t.kind.value for t in model.schema.spec.tasks} if hasattr(model, "schema") else {}
    entry = proto.metadata_props.add()
    entry.key, entry.value = "msmt.tasks", json.dumps({t: kinds.get(t, "") for t in model.task_names})
    onnx.save(proto, str(path))


def write_torchscript(model: nn.Module, batch: Batch, path: str | Path) -> list[str]:
    """Trace ``model`` into a TorchScript archive; returns the input names."""
    names = used_keys(model, batch)
    flat = FlatModel(model, names).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and torch.jit's deprecation notice
        traced = torch.jit.trace(flat, _example(batch, names, TRACE_ROWS), check_trace=False)
        extra = {"msmt_inputs.json": json.dumps(names), "msmt_tasks.json": json.dumps(flat.task_names)}
        torch.jit.save(traced, str(path), _extra_files=extra)
    return names


class OnnxRunner:
    """Score a batch dict with an ONNX file through onnxruntime: ``{task: ndarray[B]}`` raw outputs."""

    def __init__(self, path: str | Path, threads: int = 1, spin: bool = True):
        """``spin=False``: idle intra-op threads sleep instead of busy-waiting for the next call
        (onnxruntime's default spins, which lowers latency but takes CPU from anything else)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(int(threads), 1)
        opts.inter_op_num_threads = 1
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        feed = {k: batch[k].numpy() for k in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feed)))


class TorchScriptRunner:
    """Score a batch dict with a TorchScript archive written by :func:`write_torchscript`."""

    def __init__(self, path: str | Path):
        extra = {"msmt_inputs.json": "", "msmt_tasks.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        self.input_names = json.loads(extra["msmt_inputs.json"])
        self.task_names = json.loads(extra["msmt_tasks.json"])

    @torch.no_grad()
    def __call__(self, batch: Batch) -> dict[str, np.ndarray]:
        out = self.module(*(batch[k] for k in self.input_names))
        return {t: o.numpy() for t, o in zip(self.task_names, out)}


def runner(fmt: str, path: str | Path):
    return OnnxRunner(path) if fmt == "onnx" else TorchScriptRunner(path)


@torch.no_grad()
def parity(model: nn.Module, run, batch: Batch) -> float:
    """Max abs difference between eager and exported outputs over all tasks and rows.

    Scored twice, on all rows and on the first row alone, both different from the tracing size.
    """
    model.eval()
    worst = 0.0
    n = num_rows(batch)
    for part in (batch, take(batch, slice(0, 1))) if n > 1 else (batch,):
        eager = model(part)
        exported = run(part)
        for task in model.task_names:
            diff = np.abs(exported[task].astype(np.float64) - eager[task].double().numpy())
            if diff.shape != (num_rows(part),):
                raise ExportError(f"exported output '{task}' has shape {diff.shape}, expected ({num_rows(part)},)")
            worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0)
            if np.isnan(diff).any():
                worst = float("inf")
    return worst


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    inputs: list[str]
    rows_checked: int
    max_abs_diff: float


def export_model(
    model: nn.Module, batch: Batch, fmt: str, out: str | Path, tolerance: float = 1e-5
) -> ExportResult:
    """Export ``model`` (traced on ``batch``), check parity on ``batch``, then move it to ``out``."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}' (expected one of {list(FORMATS)})")
    if num_rows(batch) <= TRACE_ROWS:
        raise ExportError(f"parity check needs more than {TRACE_ROWS} rows, got {num_rows(batch)}")
    model.eval()
    out = Path(out)
    checked: dict = {}

    def write_and_check(tmp: Path) -> None:  # a failure leaves nothing at ``out``
        write = write_onnx if fmt == "onnx" else write_torchscript
        try:
            checked["names"] = write(model, batch, tmp)
        except MsmtError:
            raise
        except Exception as exc:  # the exporter's own failure: report it, one line
            raise ExportError(f"{fmt} export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        checked["diff"] = diff = parity(model, runner(fmt, tmp), batch)
        if not diff <= tolerance:
            raise ExportError(
                f"{fmt} parity check failed: max abs diff {diff:.3g} > {tolerance:g} on {num_rows(batch)} rows; "
                f"nothing written to {out}"
            )

    atomic_write(out, write_and_check)
    return ExportResult(out, fmt, checked["names"], num_rows(batch), checked["diff"])


def validation_batch(run, rows: int = 512) -> Batch:
    """Encoded inputs of the first ``rows`` validation rows of a run's dataset (labels not needed)."""
    from msmt.data.loading import load_splits
    from msmt.data.tensorize import encode_frame

    frame = load_splits(run.schema.spec)["validation"].iloc[:rows]
    return encode_frame(frame, run.schema, with_labels=False)
