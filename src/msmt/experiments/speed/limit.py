"""The limit of a training step on this CPU: its FLOPs per sample, the GEMM rate this CPU reaches
at the model's dense-layer shapes, and a profile of where the step's time goes."""

from __future__ import annotations

import time

import torch
from torch import nn

from msmt.experiments.speed.data import BATCH
from msmt.experiments.speed.models import batch_loss
from msmt.spec.batch import Batch, num_rows

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def train_flops(model: nn.Module, batch: Batch) -> float:
    """FLOPs of one forward + backward (the sum of the task losses) per row of ``batch``
    (``FlopCounterMode`` counts matmuls and convolutions; gradients are cleared afterwards)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        batch_loss(model, batch, model.schema.spec.tasks).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / num_rows(batch)


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every dense layer's GEMM (every nn.Linear; ExpertBank's first layer is one)."""
    return [(mod.in_features, mod.out_features) for mod in model.modules() if isinstance(mod, nn.Linear)]


def _best_rate(a: torch.Tensor, b: torch.Tensor, seconds: float) -> float:
    """FLOP/s of ``a @ b``: the best of 3 windows of ``seconds / 3`` after 20 warm-up calls."""
    for _ in range(20):
        a @ b
    best = 0.0
    for _ in range(3):
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            reps += 1
        best = max(best, reps * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - start))
    return best


def gemm_rates(shapes: set[tuple[int, int]], dtype: torch.dtype = torch.float32, seconds: float = 0.15,
               batch_size: int = BATCH) -> dict[tuple[int, int], list[float]]:
    """(in, out) -> FLOP/s of this CPU for the three GEMMs of a Linear layer at ``batch_size`` rows
    (y = xW, dX = dY Wᵀ, dW = Xᵀ dY)."""
    rates = {}
    for k, n in sorted(shapes):
        m = batch_size
        pairs = [((m, k), (k, n)), ((m, n), (n, k)), ((k, m), (m, n))]
        rates[(k, n)] = [_best_rate(torch.randn(*a, dtype=dtype), torch.randn(*b, dtype=dtype), seconds) for a, b in pairs]
    return rates


def effective_rate(shapes: list[tuple[int, int]], rates: dict[tuple[int, int], list[float]]) -> float:
    """FLOP-weighted GEMM rate of one model's dense layers: Σ flops / Σ (flops / rate), i.e. the rate
    at which its forward + backward GEMMs would run back to back with nothing else in between."""
    flops = seconds = 0.0
    for k, n in shapes:
        f = 2.0 * BATCH * k * n  # each of the three GEMMs has the same FLOPs
        for r in rates[(k, n)]:
            flops += f
            seconds += f / r
    return flops / seconds


def op_rows(events, steps: int, top: int, total: float) -> list[str]:
    """Markdown table of the ``top`` operators by self CPU time among profiler ``events``
    (from ``key_averages()``): ms per step of ``steps``, share of ``total`` µs, calls per step."""
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    rows = ["| op | self CPU ms / step | share | calls / step |", "|---|---:|---:|---:|"]
    rows += [
        f"| `{e.key}` | {e.self_cpu_time_total / 1000 / steps:.2f} | {e.self_cpu_time_total / total:.0%} | {e.count / steps:.0f} |"
        for e in ops
    ]
    return rows


def profile_step(step, items: list, steps: int = 20) -> str:
    """Where ``step``'s time goes over ``steps`` of ``items`` (after 3 warm-up items): the 12 top
    operators by self CPU time, then the matmul kernels' share."""
    from torch.profiler import ProfilerActivity, profile

    for it in items[:3]:
        step(it)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for it in items[:steps]:
            step(it)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = op_rows(events, steps, 12, total)
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    rows.append(f"\nmatmul kernels (mm/addmm/bmm/baddbmm): {mm / total:.0%} of profiled self CPU time")
    return "\n".join(rows)
