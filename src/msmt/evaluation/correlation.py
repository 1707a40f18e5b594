"""Cross-scenario correlation of each task: the observation that motivates M2M.

M2M (Zhang et al., WSDM 2022, Fig. 1) shows that an advertiser's performance in one scenario
correlates with its performance in another, and that the correlation differs by task. For a
task ``y`` and scenarios ``i, j``::

    corr_ij = Pearson over units u active in both of ( g(mean_t y[u, i, t]), g(mean_t y[u, j, t]) )

with ``g = log1p`` for counts (heavy tails) and the identity for rates/probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from msmt.data.io import atomic_write
from msmt.evaluation.figures import pyplot

MIN_SHARED_UNITS = 5


def cross_scenario_correlation(
    frame: pd.DataFrame, unit: str, scenario: str, value: str, log: bool | None = None
) -> pd.DataFrame:
    """[P, P] Pearson correlation between scenarios of the per-unit mean of ``value``.

    Args:
        frame: rows with ``unit``, ``scenario`` and ``value`` columns.
        log: apply log1p to the unit means; default: yes unless all values lie in [0, 1].
    Returns:
        A scenario x scenario DataFrame; NaN where fewer than 5 units share both scenarios.
    """
    x = pd.to_numeric(frame[value], errors="coerce")
    means = x.groupby([frame[unit].astype(str), frame[scenario].astype(str)]).mean().unstack()  # [units, P]
    if log is None:
        log = bool((x.dropna() > 1).any())
    if log:
        means = np.log1p(means.clip(lower=0))
    return means.corr(method="pearson", min_periods=MIN_SHARED_UNITS)


def mean_off_diagonal(corr: pd.DataFrame) -> float:
    """Average correlation between distinct scenarios (NaN pairs ignored)."""
    values = corr.to_numpy(dtype=float)
    off = values[~np.eye(len(values), dtype=bool)]
    return float(np.nanmean(off)) if np.isfinite(off).any() else float("nan")


def plot_correlation_heatmaps(
    frame: pd.DataFrame, unit: str, scenario: str, values: list[str], path: str | Path, title: str | None = None
) -> dict[str, pd.DataFrame]:
    """One heatmap per task (``values`` columns) side by side in one PNG; returns the matrices."""
    path = Path(path)
    mats = {v: cross_scenario_correlation(frame, unit, scenario, v) for v in values}
    plt = pyplot()
    fig, axes = plt.subplots(1, len(values), figsize=(5.0 * len(values), 4.4), squeeze=False, gridspec_kw={"wspace": 0.5})
    for ax, (name, corr) in zip(axes[0], mats.items()):
        im = ax.imshow(corr.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu_r")
        labels = list(corr.columns)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for i in range(len(labels)):
            for j in range(len(labels)):
                v = corr.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"{name} (mean off-diag {mean_off_diagonal(corr):.2f})", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return mats
