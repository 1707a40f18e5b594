"""Cross-scenario correlation (msmt.evaluation.correlation): Pearson over the units active in both
scenarios of the per-unit means, log1p'd only when a value exceeds 1, NaN below five shared units,
and the off-diagonal mean that leaves the diagonal (always 1) out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from msmt.evaluation.correlation import MIN_SHARED_UNITS, cross_scenario_correlation, mean_off_diagonal


def panel(x_means, y_means) -> pd.DataFrame:
    """Units u0.. with two rows in scenario x (mean x_means[i]) and one in y; units beyond len(y_means) only in x."""
    rows = []
    for i, m in enumerate(x_means):
        rows += [(f"u{i}", "x", m - 0.05), (f"u{i}", "x", m + 0.05)]
        if i < len(y_means):
            rows.append((f"u{i}", "y", y_means[i]))
    return pd.DataFrame(rows, columns=["u", "s", "v"])


def test_rates_in_the_unit_interval_are_not_logged():
    x = [0.1, 0.2, 0.35, 0.5, 0.9, 0.6]
    y = [0.05, 0.4, 0.3, 0.7, 0.95, 0.5]
    corr = cross_scenario_correlation(panel(x, y), "u", "s", "v")
    assert corr.loc["x", "y"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert abs(np.corrcoef(x, y)[0, 1] - np.corrcoef(np.log1p(x), np.log1p(y))[0, 1]) > 1e-3  # the two rules differ here
    logged = cross_scenario_correlation(panel(x, y), "u", "s", "v", log=True)
    assert logged.loc["x", "y"] == pytest.approx(np.corrcoef(np.log1p(x), np.log1p(y))[0, 1])


def test_a_pair_needs_five_shared_units():
    assert MIN_SHARED_UNITS == 5
    x = [0.1, 0.2, 0.35, 0.5, 0.9, 0.6]
    few = cross_scenario_correlation(panel(x, [0.05, 0.4, 0.3, 0.7]), "u", "s", "v")  # 4 units in both
    assert np.isnan(few.loc["x", "y"]) and few.loc["x", "x"] == pytest.approx(1.0)
    enough = cross_scenario_correlation(panel(x, [0.05, 0.4, 0.3, 0.7, 0.95]), "u", "s", "v")
    assert enough.loc["x", "y"] == pytest.approx(np.corrcoef(x[:5], [0.05, 0.4, 0.3, 0.7, 0.95])[0, 1])


def test_mean_off_diagonal_leaves_the_diagonal_and_nan_pairs_out():
    corr = pd.DataFrame([[1.0, 0.2, np.nan], [0.2, 1.0, 0.5], [np.nan, 0.5, 1.0]])
    assert mean_off_diagonal(corr) == pytest.approx(0.35)
    assert np.isnan(mean_off_diagonal(pd.DataFrame([[1.0, np.nan], [np.nan, 1.0]])))
