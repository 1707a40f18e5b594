"""The refit before the test split (docs/results/refit.md): does training once more on the training
and validation rows (``train.refit``) pay where the data drift, and what does it do where they do not?

    .venv/bin/python benchmarks/refit.py [--online-seeds 0 .. 9] [--advertisers 1200] [--days 90]
        [--seed 2026] [--seeds 0 1 2] [--world-models m2m] [--skip-world] [--models NAME ...]
        [--threads 1] [--work runs/forecasting] [--default KEY=VALUE ...] [--set KEY=VALUE ...]
        [--out docs/results/refit.md]

Online ads (real data: the regime changes on 1 May 2020, validation and test are May's, 82% of the
training rows April's): every trained variant of the forecasting study's online section with the
offset that page chose (``model.forecast=blend``) and again with ``train.refit``
(:func:`msmt.experiments.forecasting.refit_variants`), the naive forecasters beside them. The
simulator world of ``benchmarks/forecasting.py`` (stationary by construction): the variants of
``--world-models`` likewise. The runs live where the forecasting study keeps its own (same
``--work``, ``--threads`` and ``--default``: shared, reused when the same code trained them).
``--models`` trains only those variants (and their refit twins) — to split the work over
processes; one more run without it writes the page. Differences are paired by training seed.
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
    MEDIAN_ORACLE,
    NAIVE,
    REFIT,
    Study,
    Variant,
    add_study_arguments,
    add_world_arguments,
    main_variants,
    median_oracle_records,
    refit_variants,
    study_records,
    summarise,
)
from msmt.experiments.forecasting_page import COUNTS, MINOR, WORLD_COLS, best_naive, check, paired_differences, table, values
from msmt.experiments.results_page import simulator_config
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.spec.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
ONLINE = REPO / "configs" / "online_ads.yaml"
ONLINE_COLS = [(t, "nmae") for t in ("displays", "clicks", "post_click_conversions")]
BLEND = " offset=blend"  # the forecasting page's online rows: the offset its validation split chose


def _log(message: str) -> None:
    print(message, flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(ap)
    ap.add_argument("--online-seeds", type=int, nargs="+", default=list(range(10)), help="training seeds of the online-ads runs")
    ap.add_argument("--world-models", nargs="+", default=["m2m"], help="the simulator world's trained variants (with and without the refit)")
    ap.add_argument("--skip-world", action="store_true", help="online ads only")
    ap.add_argument("--models", nargs="+", default=None, help="train only these variants (and their refit twins)")
    add_study_arguments(ap, REPO / "runs" / "forecasting", REPO / "docs" / "results" / "refit.md")
    return ap.parse_args()


def online_variants() -> tuple[list[Variant], list[tuple[str, str]]]:
    """The naive forecasters, each trained main variant with the blend offset, and its refit twin;
    and the (without, with) name pairs."""
    naive = [v for v in main_variants() if v.name in NAIVE]
    blend = [Variant(v.name + BLEND, (*v.overrides, "model.forecast=blend")) for v in main_variants() if v.name not in NAIVE]
    twins = refit_variants(blend)
    return naive + blend + twins, [(v.name, v.name + REFIT) for v in blend]


def world_variants(models: list[str]) -> tuple[list[Variant], list[tuple[str, str]]]:
    naive = [v for v in main_variants() if v.name in NAIVE]
    trained = [v for v in main_variants() if v.name in models]
    return naive + trained + refit_variants(trained), [(v.name, v.name + REFIT) for v in trained]


def _chosen(variants: list[Variant], models: list[str] | None) -> list[Variant]:
    if models is None:
        return variants
    return [v for v in variants if v.name.removesuffix(REFIT).removesuffix(BLEND) in models]


def verdicts(v: dict, pairs: list[tuple[str, str]], split: str, scenario: str, cols) -> list[str]:
    """M2M with and without the refit against the best naive forecaster (count NMAE)."""
    lines = ["| | check | measured (mean over seeds) |", "|---|---|---|"]
    for pair in (p for p in pairs if p[0].startswith("m2m")):
        for name in pair:
            for task, metric in cols:
                ours, naive = v.get((name, split, scenario, task, metric)), best_naive(v, split, scenario, task, metric)
                if metric != "nmae" or ours is None or naive is None:
                    continue
                lines.append(check(f"{task}: {name} ≤ best naive", ours[0] <= naive[1], f"{ours[0]:.4f} vs {naive[1]:.4f} ({naive[0]})"))
    return lines


def _seconds(runs: dict) -> float:
    return sum(float(json.loads((r / CELL_RECORD).read_text())["seconds"]) for r in runs.values())


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    extra = (f"train.num_threads={args.threads}", *args.overrides)
    online, online_pairs = online_variants()
    online_study = Study(ONLINE, args.work / "runs" / "online_ads", args.online_seeds, _chosen(online, args.models), extra,
                         None, _log, tuple(args.defaults))
    online_runs = online_study.train()
    world_runs: dict = {}
    if not args.skip_world:
        world = {"advertisers": args.advertisers, "days": args.days, "seed": args.seed}
        config = simulator_config("advertiser", world, args.work, "world", _log)
        variants, world_pairs = world_variants(args.world_models)
        world_study = Study(config, args.work / "runs" / "world", args.seeds, _chosen(variants, args.models), extra,
                            None, _log, tuple(args.defaults))  # the new scenario: not the refit's question
        world_runs = world_study.train()
    if args.models is not None:
        _log(f"trained {len(online_runs) + len(world_runs)} runs of {sorted(args.models)}; run again without --models to write the page")
        return

    tables = args.out.with_suffix("")
    tables.mkdir(parents=True, exist_ok=True)
    online_records = study_records(online_study, online_runs)
    write_table(online_records[online_records["scenario"].eq("overall") & online_records["metric"].eq("nmae")], tables / "online_records.csv")
    v = values(summarise(online_records))
    shown = [*NAIVE, *(name for pair in online_pairs for name in pair)]
    diff_rows = [(f"{twin} − {base}", twin, base) for base, twin in online_pairs]
    defaults = " ".join(f"--default {d}" for d in args.defaults)
    command = (f"--online-seeds {' '.join(map(str, args.online_seeds))} "
               + ("--skip-world" if args.skip_world else f"--advertisers {args.advertisers} --days {args.days} --seed {args.seed} "
                  f"--seeds {' '.join(map(str, args.seeds))} --world-models {' '.join(args.world_models)}")
               + f" --threads {args.threads}" + (f" {defaults}" if defaults else ""))
    page = [
        "# The refit before the test split", "",
        f"Generated by `.venv/bin/python benchmarks/refit.py` (`{command}`) with msmt's source {source_hash()[:12]} on "
        f"{describe_cpu()}; training its {len(online_runs) + len(world_runs)} runs took "
        f"{(_seconds(online_runs) + _seconds(world_runs)) / 3600:.1f} h summed over the runs, this command "
        f"{(time.perf_counter() - started) / 3600:.1f} h (it reuses the runs it finds). The numbers behind every table: "
        f"[`{tables.name}/`]({tables.name}/).", "",
        "**`train.refit: true`** (`msmt.training.refit`): after early stopping on the validation split has chosen the "
        "best epoch E, a fresh model with the run's seed is trained E epochs on the training and validation rows "
        "together and is the one the run stores — what a forecasting system does before it forecasts the next period. "
        "The validation metrics, and the point forecast's factors (`train.point_forecast: median`), stay the first "
        "fit's: the validation rows are in-sample for the refit. So with and without the refit a run's validation "
        "numbers are the same and only the test split tells them apart. The naive forecasters are not refitted "
        "(they read each row's history as it is).", "",
        "## Online ads (real data)", "",
        f"`configs/online_ads.yaml`, training seeds {args.online_seeds}, every trained model with the offset "
        "[the forecasting study](forecasting.md) chose on the validation split for this data (`model.forecast=blend`). "
        "The data change regime on 1 May 2020: 82% of the training rows (1 April – 10 May) are April's, validation and "
        "test (10 – 31 May) all May's; the refit adds the validation split's May days to what the model trains on.", "",
        "### Test split", "",
        *table(v, shown, "test", "overall", ONLINE_COLS, bounds=()), "",
        "**With the refit minus without**, paired by training seed, mean and 95% t-interval over the "
        f"{len(args.online_seeds)} seeds; * = the interval excludes 0 (negative = the refit lowers the NMAE).", "",
        *paired_differences(online_records, "overall", diff_rows, ONLINE_COLS, "with the refit − without"), "",
        "**M2M against the best naive forecaster** (test, overall):", "",
        *verdicts(v, online_pairs, "test", "overall", ONLINE_COLS), "",
        *paired_differences(online_records, "overall", [(f"{twin} − naive_last", twin, "naive_last") for _, twin in online_pairs],
                            ONLINE_COLS, "the refit models minus the last value"), "",
    ]
    if world_runs:
        spec = load_experiment(config).dataset
        records = pd.concat([study_records(world_study, world_runs), median_oracle_records(spec, *world.values())], ignore_index=True)
        keep = records["scenario"].isin(["overall", MINOR]) & records["metric"].isin(["nmae", "auc"])
        write_table(records[keep], tables / "world_records.csv")
        w = values(summarise(records))
        shown = [*NAIVE, *(name for pair in world_pairs for name in pair)]
        diff_rows = [(f"{twin} − {base}", twin, base) for base, twin in world_pairs]
        bounds = ("oracle", MEDIAN_ORACLE)
        page += [
            f"## The simulator world ({args.advertisers:,} advertisers × {args.days} days, seed {args.seed})", "",
            f"The forecasting study's world and config (`benchmarks/forecasting.py`), training seeds {args.seeds}. Its "
            "days are drawn from one stationary process, so the validation days teach nothing the training days do not, "
            "beyond 20% more rows and the most recent days of each unit.", "",
            "**Test split, overall**", "", *table(w, shown, "test", "overall", WORLD_COLS, bounds), "",
            *paired_differences(records, "overall", diff_rows, WORLD_COLS, "test, overall (with the refit minus without)"), "",
            f"**The minor scenario `{MINOR}`**", "", *table(w, shown, "test", MINOR, WORLD_COLS, bounds), "",
            *paired_differences(records, MINOR, diff_rows, WORLD_COLS, f"test, `{MINOR}`"), "",
            "**M2M against the best naive forecaster** (test, overall):", "",
            *verdicts(w, world_pairs, "test", "overall", [(t, "nmae") for t in COUNTS]), "",
        ]
    atomic_write_text(args.out, "\n".join(page))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
