"""The cross-section channel on the forecasting world (docs/results/cross_section.md): does reading
a scenario's other advertisers per past day (``panel.cross_section_keys: [scenario]``) let the
models forecast a new scenario from its first days, and what does it cost on the known ones?

    .venv/bin/python benchmarks/cross_section.py [--advertisers 1200] [--days 90] [--seed 2026]
        [--seeds 0 1 2] [--scenario-dropout 0.2] [--models NAME ...] [--threads 1]
        [--work runs/forecasting] [--default KEY=VALUE ...] [--set KEY=VALUE ...] [--out docs/results/cross_section.md]

Every trained variant of the forecasting study (the ``+history`` models and M2M,
:func:`msmt.experiments.forecasting.main_variants`) is trained per seed as the study has it and
again with the channel (:func:`msmt.experiments.forecasting.cross_section_variants`; M2M also
with ``model.m2m.scenario_dropout``), with the naive forecasters beside them, on the world of
``benchmarks/forecasting.py`` in the same ``WORK/runs/world`` folder: with the same ``--work``,
``--threads`` and ``--default`` the two commands share their runs (reused when the same code trained
them, :func:`msmt.experiments.bench.train_missing`). ``--models`` trains only those variants (and
their channel twins) — to split the work over processes, then one more run without it writes the
page. Every difference is paired by training seed (the same seed's two runs), with its 95%
t-interval over seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from msmt.data.io import atomic_write_text, write_table
from msmt.experiments.bench import CELL_RECORD
from msmt.experiments.forecasting import (
    CROSS_SECTION,
    MEDIAN_ORACLE,
    NAIVE,
    NEW_SCENARIO_FROM,
    ZERO_SHOT,
    Study,
    add_study_arguments,
    add_world_arguments,
    cross_section_variants,
    main_variants,
    median_oracle_records,
    study_records,
    summarise,
    zero_shot_records,
)
from msmt.experiments.forecasting_page import COUNTS, MINOR, WORLD_COLS, best_naive, check, paired_differences, table, values
from msmt.experiments.results_page import simulator_config
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.spec.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
NEW_K = (0, 3, 7)


def _log(message: str) -> None:
    print(message, flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(ap)
    ap.add_argument("--scenario-dropout", type=float, default=0.2, help="M2M's model.m2m.scenario_dropout with the channel")
    ap.add_argument("--models", nargs="+", default=None, help="train only these main variants (and their channel twins)")
    add_study_arguments(ap, REPO / "runs" / "forecasting", REPO / "docs" / "results" / "cross_section.md")
    return ap.parse_args()


def verdicts(v: dict, name: str) -> list[str]:
    """``name`` against the best naive forecaster on the new scenario's count NMAE, K = 3 and 7."""
    lines = ["| | check | measured (mean over seeds) |", "|---|---|---|"]
    for k in NEW_K[1:]:
        for task in COUNTS:
            split = f"new K={k}"
            ours = v.get((name, split, "overall", task, "nmae"))
            naive = best_naive(v, split, "overall", task, "nmae")
            if ours is None or naive is None:
                continue
            lines.append(check(f"K = {k}, {task}: {name} ≤ best naive", ours[0] <= naive[1],
                               f"{ours[0]:.4f} vs {naive[1]:.4f} ({naive[0]})"))
    return lines


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    world = {"advertisers": args.advertisers, "days": args.days, "seed": args.seed}
    config = simulator_config("advertiser", world, args.work, "world", _log)
    new_scenario = config.parent / "new_scenario.csv"
    chosen = set(args.models) if args.models else None
    with_channel = sorted(cross_section_variants(args.scenario_dropout), key=lambda v: v.name != "m2m" + CROSS_SECTION)  # M2M first
    variants = [v for v in main_variants() + with_channel if chosen is None or v.name.removesuffix(CROSS_SECTION) in chosen]
    twins = [(v.name.removesuffix(CROSS_SECTION), v.name) for v in with_channel]  # (the study's variant, its twin with the channel)
    study = Study(config, args.work / "runs" / "world", args.seeds, variants,
                  (f"train.num_threads={args.threads}", *args.overrides), new_scenario, _log, tuple(args.defaults), args.jobs)
    runs = study.train()
    if chosen is not None:
        _log(f"trained {len(runs)} runs of {sorted(chosen)}; run again without --models to write the page")
        return
    seconds = sum(float(json.loads((r / CELL_RECORD).read_text())["seconds"]) for r in runs.values())
    spec = load_experiment(config).dataset
    records = pd.concat([study_records(study, runs), zero_shot_records(spec, new_scenario, *world.values()),
                         median_oracle_records(spec, *world.values(), new_scenario)], ignore_index=True)
    summary = summarise(records)
    tables = args.out.with_suffix("")
    tables.mkdir(parents=True, exist_ok=True)
    for name, frame in (("records", records), ("summary", summary)):  # what the tables show; records: per seed
        write_table(frame[frame["scenario"].isin(["overall", MINOR]) & frame["metric"].isin(["nmae", "auc"])], tables / f"{name}.csv")
    v = values(summary)
    shown = [*NAIVE, *(name for pair in twins for name in pair)]
    diff_rows = [(f"{twin} − {base}", twin, base) for base, twin in twins]
    extra = " ".join(f"--default {d}" for d in args.defaults)
    page = [
        "# The cross-section channel: a new scenario read off its other advertisers", "",
        "Generated by `.venv/bin/python benchmarks/cross_section.py` "
        f"(`--advertisers {args.advertisers} --days {args.days} --seed {args.seed} --seeds {' '.join(map(str, args.seeds))} "
        f"--scenario-dropout {args.scenario_dropout} --threads {args.threads}{' ' + extra if extra else ''}`) with msmt's source "
        f"{source_hash()[:12]} on {describe_cpu()}; training its {len(runs)} runs took {seconds / 3600:.1f} h summed over the "
        f"runs, this command {(time.perf_counter() - started) / 3600:.1f} h (it reuses the runs it finds). The numbers behind "
        f"every table: [`{tables.name}/`]({tables.name}/).", "",
        "The world, the models and the scoring are those of [the forecasting study](forecasting.md) (same command-line "
        "defaults: the same runs). Each trained model is trained twice per seed: as the study has it, and with "
        f"**`panel.cross_section_keys: [scenario]`** (`{CROSS_SECTION.strip()}`): every row also reads, per past day, "
        "the metrics summed over its scenario's other advertisers, how many had a row and how many of those were active "
        "(`seq.cross_*`; M2M's sequence encoder reads them per step like the group channel, the `+history` models' "
        "summary their window mean and last day). `model.history_gap_dropout` hides the channel on the days it hides the "
        "unit's own, as a new scenario has neither before its launch. M2M with the channel also trains with "
        f"`model.m2m.scenario_dropout: {args.scenario_dropout}`: that share of its training rows build S̃ from a learned "
        "\"unknown scenario\" S instead of the scenario's attributes, so it learns to read a scenario's level off the "
        "channel rather than only off what it was told about the scenario. The rate was first picked from 0.1 / 0.2 / 0.4 "
        "on this world's new-scenario rows in an exploratory run; [the held-out-scenario check](held_out_scenario.md) "
        "(`benchmarks/held_out_scenario.py`: a known scenario left out of training and launched before the test split, "
        "no test day read) chooses the same 0.2 among 0 / 0.1 / 0.2 / 0.4 — and there M2M without the channel is "
        "ahead of every rate with it.", "",
        "## The new scenario (never in training)", "",
        f"Scored from launch + {NEW_SCENARIO_FROM} days on, each unit's history limited to the scenario's first K days "
        "(K = 0: none of its rows; the channel is then empty too). The naive forecasters exist only for K > 0.", "",
    ]
    for k in NEW_K:
        bounds = (ZERO_SHOT, "oracle", MEDIAN_ORACLE) if k == 0 else ("oracle", MEDIAN_ORACLE)
        page += [f"**K = {k}**", "", *table(v, shown, f"new K={k}", "overall", WORLD_COLS, bounds), ""]
    page += [
        "**With the channel minus without**, paired by training seed, mean and 95% t-interval over the "
        f"{len(args.seeds)} seeds; * = the interval excludes 0 (NMAE: negative = the channel helps; AUC: positive).", "",
    ]
    for k in NEW_K:
        page += [*paired_differences(records, "overall", diff_rows, WORLD_COLS, f"K = {k}", split=f"new K={k}"), ""]
    page += ["**Against the best naive forecaster** (the forecasting issue's new-scenario target):", ""]
    page += [*verdicts(v, "m2m"), "", *verdicts(v, dict(twins)["m2m"]), ""]
    page += [
        "## The known scenarios (test split)", "",
        "What the channel costs or gives where every unit has its own history.", "",
        "**Overall**", "", *table(v, shown, "test", "overall", WORLD_COLS, ("oracle", MEDIAN_ORACLE)), "",
        *paired_differences(records, "overall", diff_rows, WORLD_COLS, "test, overall"), "",
        f"**The minor scenario `{MINOR}`**", "", *table(v, shown, "test", MINOR, WORLD_COLS, ("oracle", MEDIAN_ORACLE)), "",
        *paired_differences(records, MINOR, diff_rows, WORLD_COLS, f"test, `{MINOR}`"), "",
    ]
    atomic_write_text(args.out, "\n".join(page))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
