"""Cells of the benchmark pages: ``mean ± std`` over seeds, written one way everywhere."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

MISSING = "–"


def pm(mean: float, std: float, digits: int = 4) -> str:
    """``'0.8123 ± 0.0045'``."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_std(values: Iterable[float | None], digits: int = 4, ddof: int = 0, single: str | None = None) -> str:
    """``mean ± std`` of the values that are not None, ``–`` when none is.

    ``ddof``: 0 for the population std, 1 for the sample std (0 when there is one value).
    ``single``: when there is one value, write it alone followed by this text (e.g. ``""`` or
    ``" (1 seed)"``) instead of ``value ± 0``.
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return MISSING
    if len(vals) == 1 and single is not None:
        return f"{vals[0]:.{digits}f}{single}"
    std = 0.0 if len(vals) == 1 else (statistics.pstdev(vals) if ddof == 0 else statistics.stdev(vals))
    return pm(statistics.mean(vals), std, digits)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table: the header row, its separator, one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def median(values: Iterable[float]) -> float:
    """The median, NaN for no values."""
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")

