"""msmt.experiments.tables: the mean ± std cells of the benchmark pages."""

from __future__ import annotations

import math

import numpy as np

from msmt.experiments.tables import mean_std, median, pm


def test_mean_std_population_and_sample():
    values = [0.81, 0.83, 0.86]
    assert mean_std(values) == pm(np.mean(values), np.std(values)) == "0.8333 ± 0.0205"
    assert mean_std(values, ddof=1) == f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
    assert mean_std(values, digits=3) == "0.833 ± 0.021"


def test_mean_std_missing_and_single_values():
    assert mean_std([]) == mean_std([None, None]) == "–"
    assert mean_std([0.5, None], ddof=1) == "0.5000 ± 0.0000"  # None is skipped; one value has no spread
    assert mean_std([0.5], single="") == "0.5000"
    assert mean_std([0.5], digits=3, single=" (1 seed)") == "0.500 (1 seed)"
    assert mean_std([0.5, 0.7], single="") == "0.6000 ± 0.1000"  # ``single`` only for one value


def test_median():
    assert median([3.0, 1.0, 2.0]) == 2.0 and math.isnan(median([]))
