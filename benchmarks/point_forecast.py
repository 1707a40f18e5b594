"""Which point forecast should a count model report for NMAE? The mean, or a median-like one.

NMAE = Σ|y − ŷ| / Σ|y| is minimised row by row by the median of y's distribution, not its mean
(``msmt.synth.advertiser.median_oracle``). A model trained with the Poisson loss predicts the
mean μ. This script scores, on the test split, point forecasts that need no retraining, each
chosen or fitted on the validation split only:

* ``mean``: μ, what every msmt model reports;
* ``poisson median``: the median of Poisson(μ) (0 below μ = ln 2: matters for rare counts);
* ``NB median``: the median of NB2(μ, α) with one dispersion α per task fitted by maximum
  likelihood on the validation rows with μ held fixed (over-dispersion around μ);
* ``scaled mean``: c·μ with the c that minimises validation NMAE (the μ-weighted median of y / μ),
  one c per task (``train.point_forecast: scaled`` fits one per task and scenario, :mod:`msmt.scoring.point`).

    .venv/bin/python benchmarks/point_forecast.py --data WORLD RUN_DIR [RUN_DIR ...]

``WORLD``: the folder of ``msmt synth advertiser`` (``train / validation / test.csv``); each run
a finished ``msmt train`` of it (e.g. the forecasting page's ``WORK/runs/world/m2m/seed*``). Prints one
markdown table: test NMAE per task and point forecast, mean ± std over the runs; its ``mean`` row is
the run's own test NMAE when it was trained with ``train.point_forecast: mean`` (the same predictions,
scored here independently).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from msmt.api import encode_for_scoring, score
from msmt.experiments.tables import markdown_table, mean_std
from msmt.rundir.layout import load_run
from msmt.scoring.point import lad_scale

POINTS = ("mean", "poisson median", "NB median", "scaled mean")


def nmae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.abs(y - pred).sum() / np.abs(y).sum())


def nb_dispersion(y: np.ndarray, mu: np.ndarray) -> float:
    """α of NB2 (variance μ + αμ²) maximising the mean log-likelihood of ``y`` given ``mu``."""
    def nll(log_alpha: float) -> float:
        n = np.exp(-log_alpha)
        return -float(stats.nbinom.logpmf(y, n, n / (n + mu)).mean())

    return float(np.exp(optimize.minimize_scalar(nll, bounds=(-8.0, 4.0), method="bounded").x))


def nb_median(mu: np.ndarray, alpha: float) -> np.ndarray:
    n = 1.0 / alpha
    return stats.nbinom.median(n, n / (n + mu))


def predictions(run_dir: Path, data: Path, context: list[Path]) -> tuple[dict, dict]:
    """({task: labels}, {task: μ}) of ``run_dir`` on the table ``data``, history from ``context``."""
    run = load_run(run_dir)
    frame, encoded = encode_for_scoring(run, data, context, note=lambda _: None)
    mu = score(run, frame, encoded, note=lambda _: None)
    counts = [t for t in run.schema.spec.tasks if t.kind == "count"]
    return {t.name: frame[t.label].to_numpy(float) for t in counts}, {t.name: np.clip(mu[t.name], 1e-9, None) for t in counts}


def point_forecasts(run_dir: Path, world: Path) -> dict[tuple[str, str], float]:
    """{(task, point): test NMAE} for one run; every choice made on the validation split."""
    y_val, mu_val = predictions(run_dir, world / "validation.csv", [world / "train.csv"])
    y_test, mu_test = predictions(run_dir, world / "test.csv", [world / "train.csv", world / "validation.csv"])
    out = {}
    for task, y in y_test.items():
        mu = mu_test[task]
        out[(task, "mean")] = nmae(y, mu)
        out[(task, "poisson median")] = nmae(y, stats.poisson.median(mu))
        out[(task, "NB median")] = nmae(y, nb_median(mu, nb_dispersion(y_val[task], mu_val[task])))
        out[(task, "scaled mean")] = nmae(y, lad_scale(mu_val[task], y_val[task]) * mu)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--data", type=Path, required=True, help="the simulator world's folder")
    args = ap.parse_args()
    results = [point_forecasts(run, args.data) for run in args.runs]
    tasks = list(dict.fromkeys(task for task, _ in results[0]))
    rows = ([point, *(mean_std(r[(t, point)] for r in results) for t in tasks)] for point in POINTS)
    print(markdown_table(["point forecast", *(f"{t} NMAE" for t in tasks)], rows))


if __name__ == "__main__":
    main()
