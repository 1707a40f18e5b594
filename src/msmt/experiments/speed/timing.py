"""Timing of the speed benchmark: samples/s of a step over pre-built batches, with the loader in
the loop, and of the loader alone; medians of per-repeat ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import torch

from msmt.experiments.speed.data import BATCH
from msmt.spec.batch import Batch, iterate_batches

Rate = tuple[float, float]  # (samples per wall-clock second, samples per CPU second)


def timed(fn: Callable, items: Sequence, warmup: int = 3, batch_size: int = BATCH) -> Rate:
    """(samples per wall-clock second, samples per CPU second of this process) of ``fn`` over
    ``items`` (each ``batch_size`` samples), after ``fn`` on the first ``warmup`` items.

    The CPU-time rate is less disturbed by other users of a shared machine (it still includes
    cache and hyper-thread interference).
    """
    for it in items[:warmup]:
        fn(it)
    start, cpu = time.perf_counter(), time.process_time()
    for it in items:
        fn(it)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(items) * batch_size / wall, len(items) * batch_size / cpu


def pipeline_rate(batches: Iterable, steps: int, step: Callable, warmup: int = 2) -> float:
    """Training samples/s with the loader in the loop: ``step`` on ``warmup`` then ``steps`` items of ``batches``."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    start = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    return steps * BATCH / (time.perf_counter() - start)


def loader_rate(train: Batch, steps: int, step: Callable, seed: int = 0) -> float:
    """Training through msmt's own input pipeline (``iterate_batches`` over the split, as the trainer does)."""
    return pipeline_rate(iterate_batches(train, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)), steps, step)


def loader_alone(data: Batch, seed: int = 0, passes: int = 1) -> float:
    """Rows/s of ``iterate_batches`` alone over ``data`` (shuffled; pass p with seed ``seed + p``)."""
    start = time.perf_counter()
    for p in range(passes):
        for _ in iterate_batches(data, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed + p)):
            pass
    return passes * data["scenario"].shape[0] / (time.perf_counter() - start)


def med(values: Sequence, i: int | None = None) -> float:
    """Median of ``values`` (of their ``i``-th elements when given); NaN for no values."""
    if i is not None:
        values = [x[i] for x in values]
    return statistics.median(values) if values else float("nan")


def ratio(a: Sequence, b: Sequence, i: int = 0) -> float:
    """Median over repeats of the per-repeat ratio a / b (both measured back to back in each
    repeat); rates that are (wall, CPU) pairs are compared on element ``i``."""
    return statistics.median((x[i] if isinstance(x, tuple) else x) / (y[i] if isinstance(y, tuple) else y) for x, y in zip(a, b))
