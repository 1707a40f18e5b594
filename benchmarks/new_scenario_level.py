"""Does the point forecast's factor suit the new scenario? Its level with K days of history.

A run's point forecast (``train.point_forecast: scaled | median``, :mod:`msmt.scoring.point`) takes,
in a scenario new at scoring time, the task's factor: fitted on the validation split, where every
unit has its full window of history. The forecasting study scores the new scenario's units with
only their first K days as history (:func:`msmt.experiments.forecasting.new_scenario_blocks`). This
script says, per run, K and count task, on those rows:

* ``Σŷ / Σy``: the level of the expected counts (1 = unbiased in total);
* NMAE of the mean, of the run's point forecast (its factor, and its median where it has one), and
  of the factor that would have been best on these very rows (hindsight: a bound, not a forecast),
  with that factor.

    .venv/bin/python benchmarks/new_scenario_level.py --data WORLD RUN_DIR [RUN_DIR ...]

``WORLD``: the folder of ``msmt synth advertiser`` (its ``new_scenario.csv``); each run a finished
``msmt train`` of it (e.g. the forecasting page's ``WORK/runs/world/m2m/seed*`` and
``WORK/runs/world/naive_mean/seed*``). Prints one markdown table, mean ± std over the runs of each
run folder.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from msmt.data.tensorize import encode_frame
from msmt.evaluation.evaluate import scenario_names
from msmt.experiments.forecasting import new_scenario_context, new_scenario_rows
from msmt.experiments.tables import markdown_table, mean_std
from msmt.rundir.layout import load_run
from msmt.scoring.point import lad_scale
from msmt.scoring.predict import predict_batches
from msmt.spec.measures import nmae

K_VALUES = (3, 7)
COLUMNS = ("Σŷ / Σy", "mean NMAE", "run's factor", "point NMAE", "hindsight factor", "hindsight NMAE")


def run_levels(run_dir: Path, new_scenario: Path) -> dict[tuple[int, str], tuple[float, ...]]:
    """{(K, task): the values of :data:`COLUMNS`} of one run."""
    run = load_run(run_dir)
    spec = run.schema.spec
    frame, scored, others = new_scenario_rows(spec, new_scenario)
    scenarios = scenario_names(scored, spec.scenario.column)
    out = {}
    for k in K_VALUES:
        data = encode_frame(scored, run.schema, context=new_scenario_context(spec, frame, others, k), own_history=False)
        mu = predict_batches(run.model, data)
        for task in (t for t in spec.tasks if t.kind == "count"):
            y, m = scored[task.label].to_numpy(float), mu[task.name].astype(np.float64)
            point = run.point.apply({task.name: mu[task.name]}, scenarios)[task.name] if run.point is not None else m
            factor = float(run.point.factors(task.name, scenarios[:1])[0]) if run.point is not None else 1.0
            best = lad_scale(m, y)
            out[(k, task.name)] = (m.sum() / y.sum(), nmae(y, m), factor, nmae(y, point), best, nmae(y, best * m))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--data", type=Path, required=True, help="the simulator world's folder (its new_scenario.csv)")
    args = ap.parse_args()
    by_folder: dict[str, list] = defaultdict(list)
    for run in args.runs:
        by_folder[run.parent.name].append(run_levels(run, args.data / "new_scenario.csv"))
    rows = (
        [folder, str(k), task, *(mean_std(v) for v in zip(*(r[(k, task)] for r in results)))]
        for folder, results in by_folder.items() for k, task in results[0]
    )
    print(markdown_table(["runs", "K", "task", *COLUMNS], rows))


if __name__ == "__main__":
    main()
