"""Does the point forecast's factor suit the new scenario? Its level with K days of history.

A run's point forecast (``train.point_forecast: scaled | median``, :mod:`msmt.scoring.point`) takes,
in a scenario new at scoring time, the task's factor: fitted on the validation split, where every
unit has its full window of history. The forecasting study scores the new scenario's units with
only their first K days as history (:func:`msmt.experiments.forecasting.new_scenario_blocks`). This
script says, per run, K and count task, on those rows:

* ``Σŷ / Σy``: the level of the expected counts (1 = unbiased in total);
* NMAE of the mean, of the run's point forecast (its factor, and its median where it has one), and
  of the factor that would have been best on these very rows (hindsight: a bound, not a forecast),
  with that factor;
* for K > 0, the unit's K-day mean mixed with the run's own zero-shot forecast (K = 0) brought to
  its hindsight level, w · mean + (1 − w) · prior, scaled likewise, at the weight w best on these
  rows: what the run's prior about a unit would add to the K days if its level were right.

Then, from the world alone, what K days of a new scenario allow (every value on the same scored rows,
each forecast times the factor best on those rows, so comparable with the runs' hindsight NMAE):

* the K-day mean of the unit's own counts;
* that mean mixed with a prior read off the data: the advertiser's mean daily count in its other
  scenarios over the 14 days before launch + K, times the new scenario's cross-sectional ratio
  (Σ of its units' K-day means / Σ of their advertisers' levels elsewhere) — a credibility
  estimate w · mean + (1 − w) · prior, the weight w best on these rows;
* the mean mixed with the zero-shot oracle (:func:`msmt.synth.advertiser.zero_shot_oracle`: the
  world known, the unit's state not) likewise: what a model that knew the world could add;
* the mean of the unit's expected counts (``true_<task>``) over its K days: the K days without
  their noise, what perfect denoising of the context reaches;
* the correlation, over the scored rows, of the unit's drift (log of its expected count on the
  scored day over its K-day mean) with its advertiser's drift in the other scenarios over the same
  days: near 0, the advertiser's other scenarios (the group channel) cannot foretell it.

    .venv/bin/python benchmarks/new_scenario_level.py --data WORLD [RUN_DIR ...]

``WORLD``: the folder of ``msmt synth advertiser`` (its ``new_scenario.csv``); each run a finished
``msmt train`` of it (e.g. the forecasting page's ``WORK/runs/world/m2m/seed*`` and
``WORK/runs/world/naive_mean/seed*``). Prints two markdown tables: the runs' (mean ± std over the runs
of each run folder) and the world's.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from msmt.data.tensorize import encode_frame
from msmt.evaluation.evaluate import scenario_names
from msmt.experiments.forecasting import NEW_SCENARIO_FROM, new_scenario_context, new_scenario_rows
from msmt.experiments.tables import markdown_table, mean_std
from msmt.rundir.layout import load_run
from msmt.scoring.point import lad_scale
from msmt.scoring.predict import predict_batches
from msmt.spec.measures import nmae
from msmt.synth.advertiser import ZERO_SHOT_PREFIX, zero_shot_oracle

K_VALUES = (3, 7)
COLUMNS = ("Σŷ / Σy", "mean NMAE", "run's factor", "point NMAE", "hindsight factor", "hindsight NMAE",
           "mix with its zero-shot forecast", "w")
BOUND_COLUMNS = ("K-day mean", "mix with the cross-section prior (w)", "mix with the zero-shot oracle (w)",
                 "the K days' expected counts", "drift corr. with the other scenarios", "oracle")
WEIGHTS = np.linspace(0.0, 1.0, 21)  # the credibility weights searched
KEYS = ["advertiser_id", "day"]
LEVEL_DAYS = 14  # the advertiser's level in its other scenarios: its mean day over this many days before launch + K


def run_levels(run_dir: Path, new_scenario: Path) -> dict[tuple[int, str], tuple[float, ...]]:
    """{(K, task): the values of :data:`COLUMNS`} of one run."""
    run = load_run(run_dir)
    spec = run.schema.spec
    frame, scored, others = new_scenario_rows(spec, new_scenario)
    scenarios = scenario_names(scored, spec.scenario.column)
    keys, time = list(spec.panel.keys), spec.panel.time
    out, zero_shot = {}, {}
    for k in (0, *K_VALUES):
        data = encode_frame(scored, run.schema, context=new_scenario_context(spec, frame, others, k), own_history=False)
        mu = predict_batches(run.model, data)
        for task in (t for t in spec.tasks if t.kind == "count"):
            y, m = scored[task.label].to_numpy(float), mu[task.name].astype(np.float64)
            point = run.point.apply({task.name: mu[task.name]}, scenarios)[task.name] if run.point is not None else m
            factor = float(run.point.factors(task.name, scenarios[:1])[0]) if run.point is not None else 1.0
            best = lad_scale(m, y)
            if k == 0:
                zero_shot[task.name] = best * m  # the run's zero-shot forecast at its hindsight level
            mixed = best_mix(k_day_mean(frame, scored, keys, time, task.label, k), zero_shot[task.name], y) if k else (None, None)
            out[(k, task.name)] = (m.sum() / y.sum(), nmae(y, m), factor, nmae(y, point), best, nmae(y, best * m), *mixed)
    return out


def k_day_mean(frame: pd.DataFrame, scored: pd.DataFrame, keys: list[str], time: str, label: str, k: int) -> np.ndarray:
    """[rows of ``scored``] the mean of ``label`` over the unit's first k days in ``frame`` (the new scenario)."""
    first = frame[frame[time] < frame[time].min() + k].groupby(keys, as_index=False)[label].mean()
    return scored[keys].merge(first, on=keys, how="left", validate="m:1")[label].to_numpy(np.float64)


def scaled_nmae(forecast: np.ndarray, y: np.ndarray) -> float:
    """NMAE of ``forecast`` times the factor best on these rows (hindsight)."""
    return nmae(y, lad_scale(forecast, y) * forecast)


def best_mix(mean: np.ndarray, prior: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(NMAE, w) of the best credibility mix w · mean + (1 − w) · prior, scaled as :func:`scaled_nmae`."""
    return min((scaled_nmae(w * mean + (1 - w) * prior, y), float(w)) for w in WEIGHTS)


def mix_cell(mean: np.ndarray, prior: np.ndarray, y: np.ndarray) -> str:
    """:func:`best_mix` as ``NMAE (w)``."""
    score, weight = best_mix(mean, prior, y)
    return f"{score:.4f} ({weight:.2f})"


def log_drift(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """log(now / before) where both are positive, NaN elsewhere."""
    ok = (now > 0) & (before > 0)
    return np.where(ok, np.log(np.where(ok, now, 1.0) / np.where(ok, before, 1.0)), np.nan)


def context_bounds(world: Path) -> list[list[str]]:
    """The world's table (:data:`BOUND_COLUMNS` per K and count task): what K days of the new scenario allow."""
    size = json.loads((world / "synth.json").read_text())
    frame = pd.read_csv(world / "new_scenario.csv")
    others = pd.concat([pd.read_csv(world / f"{name}.csv") for name in ("validation", "test")], ignore_index=True)
    launch = int(frame["day"].min())
    scored = frame[frame["day"] >= launch + NEW_SCENARIO_FROM].merge(
        zero_shot_oracle(size["advertisers"], size["days"], size["seed"]), on=[*KEYS, "scenario"], how="left", validate="1:1")
    tasks = [c.removeprefix(ZERO_SHOT_PREFIX) for c in scored.columns if c.startswith(ZERO_SHOT_PREFIX) and c != f"{ZERO_SHOT_PREFIX}active"]
    units = scored["advertiser_id"]
    # the advertiser's expected count in its other scenarios per day, and on the scored rows' days
    elsewhere = {task: others.groupby(KEYS)[f"true_{task}"].sum() for task in tasks}
    on_scored_day = {task: sums.reindex(pd.MultiIndex.from_frame(scored[KEYS])).to_numpy(np.float64) for task, sums in elsewhere.items()}
    rows = []
    for k in K_VALUES:
        context = frame[frame["day"] < launch + k]
        before = others[(others["day"] < launch + k) & (others["day"] >= launch + k - LEVEL_DAYS)]
        beside = others[(others["day"] < launch + k) & (others["day"] >= launch)]  # the other scenarios on the K days
        for task in tasks:
            y, truth = scored[task].to_numpy(np.float64), f"true_{task}"
            mean, denoised = (k_day_mean(frame, scored, ["advertiser_id"], "day", column, k) for column in (task, truth))
            per_unit = context.groupby("advertiser_id")[task].mean()  # the new scenario: one unit per advertiser
            level = (before.groupby("advertiser_id")[task].sum() / LEVEL_DAYS).reindex(per_unit.index).fillna(0.0)
            prior = units.map(level * per_unit.sum() / max(level.sum(), 1e-12)).to_numpy(np.float64)
            own = log_drift(scored[truth].to_numpy(np.float64), denoised)
            theirs = log_drift(on_scored_day[task],
                               units.map(beside.groupby(KEYS)[truth].sum().groupby("advertiser_id").mean()).to_numpy(np.float64))
            both = np.isfinite(own) & np.isfinite(theirs)
            rows.append([str(k), task, f"{scaled_nmae(mean, y):.4f}", mix_cell(mean, prior, y),
                         mix_cell(mean, scored[f"{ZERO_SHOT_PREFIX}{task}"].to_numpy(np.float64), y),
                         f"{scaled_nmae(denoised, y):.4f}", f"{np.corrcoef(own[both], theirs[both])[0, 1]:+.2f}",
                         f"{nmae(y, scored[truth].to_numpy(np.float64)):.4f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="*")
    ap.add_argument("--data", type=Path, required=True, help="the simulator world's folder (its new_scenario.csv)")
    args = ap.parse_args()
    by_folder: dict[str, list] = defaultdict(list)
    for run in args.runs:
        by_folder[run.parent.name].append(run_levels(run, args.data / "new_scenario.csv"))
    rows = (
        [folder, str(k), task, *(mean_std(v) for v in zip(*(r[(k, task)] for r in results)))]
        for folder, results in by_folder.items() for k, task in results[0]
    )
    if args.runs:
        print(markdown_table(["runs", "K", "task", *COLUMNS], rows), end="\n\n")
    print(markdown_table(["K", "task", *BOUND_COLUMNS], context_bounds(args.data)))


if __name__ == "__main__":
    main()
