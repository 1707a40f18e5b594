"""Does a run's scaled point forecast carry over from the validation days to the test days?

``train.point_forecast: scaled`` (:mod:`msmt.scoring.point`) fits, per count task and scenario, the
factor c that minimises NMAE of c·μ on the validation split. That is a bet that the test days
look like the validation days. This script scores, per run and count task, the test NMAE of

* ``mean``: μ, the expected count;
* ``scaled``: c·μ with the factors fitted on the whole validation split, unchecked (the option before
  its holdout check);
* ``holdout-checked``: what ``train.point_forecast: scaled`` does (:func:`msmt.scoring.point.fit_checked_point_scales`):
  those factors kept for a task only when, fitted on the validation split's earlier half (by the
  panel's time), they lower NMAE on its later half, else μ (a check made without the test split);
* ``median``, ``median holdout-checked``: the same with the Poisson median of c·μ as the point
  (``train.point_forecast: median``).

    .venv/bin/python benchmarks/point_holdout.py RUN_DIR [RUN_DIR ...]

Each run a finished ``msmt train`` of a panel dataset (its config's own files and split are read;
e.g. the forecasting page's ``WORK/runs/world/m2m/seed*`` or ``WORK/runs/online_ads/m2m_offset=blend/seed*``).
Prints one markdown table: per run folder (the runs' parent, e.g. one model) and task, test NMAE
mean ± std over its runs and how many runs the check kept the factors.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from msmt.data.tensorize import encode_frame
from msmt.evaluation.evaluate import scenario_names
from msmt.experiments.run import load_in_memory
from msmt.experiments.tables import markdown_table, mean_std
from msmt.rundir.layout import load_run
from msmt.scoring.point import earlier_half, fit_checked_point_scales, fit_point_scales
from msmt.scoring.predict import predict_batches
from msmt.spec.measures import nmae

FORECASTS = ("mean", "scaled", "holdout-checked", "median", "median holdout-checked")


def _splits(spec, cache: dict) -> dict:
    key = (str(spec.files.train), str(spec.files.validation), str(spec.files.test))
    if key not in cache:
        cache[key] = load_in_memory(spec)[0]
    return cache[key]


def run_scores(run_dir: Path, cache: dict) -> tuple[dict[tuple[str, str], float], dict[str, bool]]:
    """({(task, forecast): test NMAE}, {task: whether the holdout check kept the factors}) of one run."""
    run = load_run(run_dir)
    spec = run.schema.spec
    if spec.panel is None:
        raise SystemExit(f"{run_dir}: not a panel dataset (the check splits validation by the panel's time)")
    splits = _splits(spec, cache)
    val, test = splits["validation"], splits["test"]
    mu_val = predict_batches(run.model, encode_frame(val, run.schema, context=splits["train"]))
    mu_test = predict_batches(run.model, encode_frame(test, run.schema, context=pd.concat([splits["train"], val], ignore_index=True)))
    s_val, s_test = scenario_names(val, spec.scenario.column), scenario_names(test, spec.scenario.column)
    counts = [t for t in spec.tasks if t.kind == "count"]
    y_val = {t.name: val[t.label].to_numpy(float) for t in counts}
    earlier = earlier_half(val[spec.panel.time].to_numpy(), len(val))
    points = {
        "scaled": fit_point_scales(counts, y_val, mu_val, s_val),
        "holdout-checked": fit_checked_point_scales(counts, y_val, mu_val, s_val, earlier),
        "median": fit_point_scales(counts, y_val, mu_val, s_val, median=True),
        "median holdout-checked": fit_checked_point_scales(counts, y_val, mu_val, s_val, earlier, median=True),
    }
    own = run.point if run.point is not None and run.point.holdout else None  # runs of the checked options
    checked = points["median holdout-checked" if own is not None and own.median is not None else "holdout-checked"]
    if own is not None and not all(np.isclose(own.overall[t], c) for t, c in checked.overall.items()):
        raise SystemExit(f"{run_dir}: the factors refitted here differ from the run's point_forecast.json")
    scores = {}
    for t in counts:
        y = test[t.label].to_numpy(float)
        scores[(t.name, "mean")] = nmae(y, mu_test[t.name])
        for name, fitted in points.items():
            scores[(t.name, name)] = nmae(y, fitted.apply({t.name: mu_test[t.name]}, s_test)[t.name])
    return scores, {t: check["kept"] for t, check in checked.holdout.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    cache: dict = {}
    by_folder: dict[str, list] = defaultdict(list)
    for run in args.runs:
        by_folder[f"{run.parent.parent.name}/{run.parent.name}"].append(run_scores(run, cache))
    rows = (
        [folder, task, *(mean_std(s[(task, f)] for s, _ in results) for f in FORECASTS), f"{sum(k[task] for _, k in results)} of {len(results)}"]
        for folder, results in by_folder.items() for task in results[0][1]
    )
    print(markdown_table(["runs", "task", *(f"{f} NMAE" for f in FORECASTS), "factors kept (the run's own option's check)"], rows))


if __name__ == "__main__":
    main()
