"""The forecasting study (docs/results/forecasting.md): the naive forecasts, the multi-task models
with history and M2M on a simulator world of a size and seed the project had not used, its minor
and new scenarios, M2M's ablations and curves, and the online-ads data.

    .venv/bin/python benchmarks/forecasting.py [--advertisers 1200] [--days 90] [--seed 2026]
        [--seeds 0 1 2] [--curve-seeds 0 1] [--online-seeds 0 .. 9] [--windows 7 14 28 56]
        [--scenario-dims 4 16 64] [--meta-layers 1 2 3] [--threads 2] [--jobs 1] [--work runs/forecasting]
        [--skip-curves] [--skip-online] [--unseen-correction 1] [--default KEY=VALUE ...] [--set KEY=VALUE ...]
        [--out docs/results/forecasting.md]

A thin command line over :mod:`msmt.experiments.forecasting` (what is trained and scored) and
:mod:`msmt.experiments.forecasting_page` (tables, target checks, plots). Runs are ordinary run
directories under ``WORK`` (git-ignored) and are reused when the same code trained them with the
same overrides, so a stopped study continues where it stopped. ``--jobs N --threads 1`` trains N runs
at a time in worker processes (the runs are the same as one at a time). Several processes may also share
one ``--work`` folder (each with its own ``--seeds`` / ``--online-seeds`` / curve values, then one more
with the full arguments to reuse every run and write the page), but start the first alone until
``WORK/data/world/synth.json`` exists: two processes that find no world both write it, and the second
deletes the first's files mid-write; and give no two of them the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from msmt.data.io import atomic_write_text, write_table
from msmt.experiments.bench import CELL_RECORD
from msmt.experiments.forecasting import (
    MEDIAN_ORACLE,
    WHOLE_CORRECTION,
    ZERO_SHOT,
    Study,
    Variant,
    ablation_variants,
    add_study_arguments,
    add_world_arguments,
    curve_variants,
    history_oracle_name,
    history_oracle_records,
    main_variants,
    median_oracle_records,
    study_records,
    summarise,
    trained_by_curves,
    zero_shot_records,
)
from msmt.experiments.forecasting_page import (
    COUNTS,
    MINOR,
    WORLD_COLS,
    curve_plot,
    naive_checks,
    offset_wins,
    online_targets,
    paired_differences,
    table,
    values,
    with_offset_chosen,
    world_targets,
)
from msmt.experiments.results_page import simulator_config
from msmt.experiments.twins import OFFSET, ONLINE_OFFSETS
from msmt.rundir.layout import load_run
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.scoring.point import lad_scale
from msmt.spec.config import load_experiment
from msmt.synth.advertiser import MEDIAN_REPLICAS, ZERO_SHOT_REPLICAS

REPO = Path(__file__).resolve().parents[1]
ONLINE = REPO / "configs" / "online_ads.yaml"
ONLINE_TASKS = ("displays", "clicks", "post_click_conversions")


def _log(message: str) -> None:
    print(message, flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_world_arguments(ap)
    ap.add_argument("--curve-seeds", type=int, nargs="+", default=[0, 1], help="training seeds of the ablations and curves")
    add_study_arguments(ap, REPO / "runs" / "forecasting", REPO / "docs" / "results" / "forecasting.md", threads=2)
    ap.add_argument("--windows", type=int, nargs="+", default=[7, 14, 28, 56], help="the window curve's T values")
    ap.add_argument("--scenario-dims", type=int, nargs="+", default=[4, 16, 64], help="the S̃-size curve's values")
    ap.add_argument("--meta-layers", type=int, nargs="+", default=[1, 2, 3], help="the meta-depth curve's values")
    ap.add_argument("--skip-curves", action="store_true", help="main variants only (no ablations or curves)")
    ap.add_argument("--skip-online", action="store_true")
    ap.add_argument("--online-seeds", type=int, nargs="+", default=list(range(10)),
                    help="training seeds of the online-ads runs (small data, large seed-to-seed spread: more seeds)")
    ap.add_argument("--unseen-correction", type=float, default=1.0,
                    help="model.unseen_scenario_correction of the simulator world's M2M runs (1: off), chosen on a held-out "
                         "known scenario (benchmarks/held_out_scenario.py --unseen-corrections); the new-scenario tables "
                         "also show M2M with w = 1")
    return ap.parse_args()


def _extra(args) -> tuple[str, ...]:
    return (f"train.num_threads={args.threads}", *args.overrides)


def _curves(args) -> list:
    return curve_variants(args.windows, args.scenario_dims, args.meta_layers)


def history_windows(spec) -> tuple:
    """The history oracles' windows: the panel's, and every day since the first."""
    return (spec.panel.window, None)


TRAINED: dict[Path, float] = {}  # every run directory the page reads -> the seconds its training took (its bench.json)


def _train(study: Study) -> dict[tuple[str, int], Path]:
    """``study.train()``, recording each run's own training seconds in :data:`TRAINED`."""
    runs = study.train()
    for run in runs.values():
        TRAINED[run] = float(json.loads((run / CELL_RECORD).read_text())["seconds"])
    return runs


def _study(args, config: Path, runs: str, seeds, variants: list[Variant], new_scenario: Path | None = None,
           unseen_correction: float = 1.0) -> Study:
    """A study of the command line's settings: runs under ``WORK/runs/<runs>``, its overrides and defaults."""
    return Study(config, args.work / "runs" / runs, seeds, variants, _extra(args), new_scenario, _log, tuple(args.defaults),
                 args.jobs, unseen_correction)


def world_study(args, config: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    main = _study(args, config, "world", args.seeds, main_variants(), config.parent / "new_scenario.csv", args.unseen_correction)
    records = study_records(main, _train(main))
    spec = load_experiment(config).dataset
    world = (args.advertisers, args.days, args.seed)
    records = pd.concat([records, zero_shot_records(spec, config.parent / "new_scenario.csv", *world),
                         history_oracle_records(spec, *world, windows=history_windows(spec)),
                         median_oracle_records(spec, *world, config.parent / "new_scenario.csv")], ignore_index=True)
    extra_records = pd.DataFrame()
    if not args.skip_curves:
        variants = ablation_variants() + trained_by_curves(_curves(args))
        more = _study(args, config, "world", args.curve_seeds, variants, unseen_correction=args.unseen_correction)
        extra_records = study_records(more, _train(more))
    return records, extra_records


# online ads: every trained model with each offset; the suffix its runs' names carry after the model's
# (the blend and blend_backtest runs are those the twin benchmarks compare with, `--online-offset`: the same names)
OFFSETS = {"auto": "", **{offset: OFFSET.format(offset) for offset in ONLINE_OFFSETS}}


def _online_training_note(ema: float | None) -> str:
    """The online config's weight average (``train.ema_epochs``), when it has one: every network below uses it."""
    return "" if ema is None else (
        f" Every network averages its weights (`train.ema_epochs: {ema:g}` in the config; "
        "[the weight-average study](weight_average_backtest.md)): validation, early stopping and the stored "
        "model use the average; the naive forecasters keep their fitted scale.")


def online_variants() -> list[Variant]:
    """The main variants, every trained one with each offset of :data:`OFFSETS` (``model.forecast``
    set on each trained run, whatever the config's own offset: the runs named without a suffix are
    ``auto``'s): :func:`online_section` keeps the offset whose validation NMAE is the lowest in the
    most (model, task) pairs."""
    main = main_variants()
    trained = [v for v in main if not v.name.startswith("naive_")]
    return [v for v in main if v not in trained] + [Variant(v.name + suffix, (*v.overrides, f"model.forecast={offset}"))
                                                    for offset, suffix in OFFSETS.items() for v in trained]


def online_study(args) -> pd.DataFrame:
    study = _study(args, ONLINE, "online_ads", args.online_seeds, online_variants())
    return study_records(study, _train(study))


def world_section(args, summary: pd.DataFrame, records: pd.DataFrame, config: Path, rows: dict[str, int]) -> list[str]:
    v = values(summary)
    rivals = [(m, "m2m", m) for m in (x.name for x in main_variants()) if m.endswith("+history")]
    test_bounds = (*(history_oracle_name(w) for w in history_windows(load_experiment(config).dataset)), "oracle", MEDIAN_ORACLE)
    main = [x.name for x in main_variants()]
    cols = WORLD_COLS
    out = [
        f"## The simulator world ({args.advertisers:,} advertisers × {args.days} days, seed {args.seed})", "",
        f"`msmt synth advertiser --advertisers {args.advertisers} --days {args.days} --seed {args.seed}`: "
        + ", ".join(f"{k} {n:,} rows" for k, n in rows.items())
        + f". Training seeds {args.seeds}; cells are mean ± std over seeds; **bold** = best model in the column. "
        "The oracle is the true expected value of each row given the latent state (the issue's reference: the bound "
        "under squared error and Poisson deviance, and of `active` AUC); on NMAE the bound is the "
        f"`{MEDIAN_ORACLE}` row, the median of the day's outcomes given the same state "
        f"(`msmt.synth.advertiser.median_oracle`, {MEDIAN_REPLICAS} replicas of each day), since absolute error is minimised by the "
        "median: the Gamma-mixed, sometimes-paused counts are right-skewed, and on rare counts (the minor scenario's "
        "clicks) the median is 0.", "",
        "### Targets", "", *world_targets(v, main), "",
        "### Test split, overall", "", *table(v, main, "test", "overall", cols, test_bounds), "",
        f"### The minor scenario `{MINOR}`", "", *table(v, main, "test", MINOR, cols, test_bounds), "",
        paired_note(args.seeds, "overall, then on the minor scenario"), "",
        *paired_differences(records, "overall", rivals, cols, "M2M − (overall)"), "",
        *paired_differences(records, MINOR, rivals, cols, f"M2M − (`{MINOR}`)"), "",
        "The `oracle (history, …)` rows forecast `active` as well as anything can from the unit's observed live and paused "
        "days over the panel's window or over every day since the first (`msmt.synth.advertiser.history_oracle_active`: the "
        "exact Bayes posterior of the unit's propensities to pause and resume, knowing the world's priors and the advertiser's "
        "own propensity); the oracle knows the unit's propensities themselves.", "",
        "### The new scenario (never in training)", "",
        "Its rows from launch + 7 days on, each unit's own history limited to its first K days of the new scenario "
        "(K = 0: zero-shot, none of its rows as history; no naive forecast exists there). The trained models also read "
        "the group channel (`panel.group_keys: [advertiser_id]`): the advertiser's other scenarios in the validation and "
        "test files, never a row of the new scenario.", "",
    ]
    out += unseen_note(args.unseen_correction)
    shown = [*main, "m2m" + WHOLE_CORRECTION]  # the second: only with --unseen-correction below 1
    for k in (0, 3, 7):
        bounds = (ZERO_SHOT, "oracle", MEDIAN_ORACLE) if k == 0 else ("oracle", MEDIAN_ORACLE)
        out += [f"**K = {k}**", "", *table(v, shown if k else main, f"new K={k}", "overall", cols, bounds), ""]
    return out + zero_shot_level(args, config)


def unseen_note(w: float) -> list[str]:
    """A line on ``--unseen-correction`` (empty when it is off)."""
    if w == 1.0:
        return []
    return [f"M2M keeps w = {w:g} of its correction on the new scenario's rows with their own history "
            "(`model.unseen_scenario_correction`, log λ = log(b + ε) + w · f(x) there; the rows without it, K = 0, keep f "
            "whole), w chosen on a held-out known scenario before any test day "
            "([held_out_unseen_correction.md](held_out_unseen_correction.md)); it changes nothing but these rows, "
            f"so the `m2m{WHOLE_CORRECTION}` row is the same runs scored with the whole correction. The other trained "
            "models keep theirs whole.", ""]


def zero_shot_level(args, config: Path) -> list[str]:
    """Why zero-shot misses the oracle: M2M's total forecast over the new scenario's scored rows
    against the total observed (Σŷ / Σy), and its NMAE with the best single scale per task (a level
    correction that K days of the scenario could reveal): what is left is the ranking of units."""
    from msmt.data.tensorize import encode_frame
    from msmt.experiments.forecasting import NEW_SCENARIO_FROM, new_scenario_context, new_scenario_rows
    from msmt.scoring.predict import predict_batches

    cells: dict[str, list[tuple[float, float, float]]] = {t: [] for t in COUNTS}
    for seed in args.seeds:
        run = load_run(args.work / "runs" / "world" / "m2m" / f"seed{seed}")
        spec = run.schema.spec
        frame, scored, others = new_scenario_rows(spec, config.parent / "new_scenario.csv")
        if scored.empty:  # a test period shorter than NEW_SCENARIO_FROM days (a small smoke world)
            return ["**Where zero-shot loses**: no new-scenario row is scored in this world (its test period is shorter "
                    f"than {NEW_SCENARIO_FROM} days).", ""]
        context = new_scenario_context(spec, frame, others, 0)
        pred = predict_batches(run.model, encode_frame(scored, run.schema, context=context, own_history=False))
        for t in COUNTS:
            y, p = scored[t].to_numpy(float), pred[t].astype(float)
            cells[t].append((p.sum() / y.sum(), abs(p - y).sum() / y.sum(), abs(lad_scale(p, y) * p - y).sum() / y.sum()))
    rows = ["| task | Σŷ / Σy | NMAE | NMAE with the best single scale c · ŷ |", "|---|---|---|---|"]
    for t, c in cells.items():
        a = pd.DataFrame(c, columns=["ratio", "nmae", "leveled"])
        rows.append(f"| {t} | " + " | ".join(f"{a[k].mean():.3f} ± {a[k].std(ddof=0):.3f}" for k in a.columns) + " |")
    return ["**Where zero-shot loses.** M2M at K = 0, seeds "
            f"{args.seeds}, the same scored rows (`benchmarks/forecasting.py: zero_shot_level`). The scenario's level "
            "(reach, CTR base, prices) has to be read off four attributes shared by six training scenarios, and the last "
            "column is the best any single correction of that level can do. The rest of the gap is how units rank within "
            "the scenario and what state each unit is in.", "", *rows, "",
            f"**The zero-shot oracle** (the `{ZERO_SHOT}` row of the K = 0 table; `msmt.synth.advertiser.zero_shot_oracle`) "
            "is the bound of a forecast made before the scenario's units have rows: it knows the whole world (every "
            "advertiser's latent budget, quality and pause propensity, the new scenario's parameters and its draws per "
            "industry and region, `imp_ind`, `ctr_ind`, `comp_ind`, `region_imp`, even each unit's own propensities to "
            "pause and resume) but not the unit's state (live or paused, bid and budget multipliers, creative freshness), "
            "which the simulator draws independently of the advertiser's other scenarios. It reruns the units' dynamics "
            f"{ZERO_SHOT_REPLICAS} times in the same world and forecasts each row by the median of the replicas (the NMAE-optimal point). "
            "The oracle itself knows the unit's state, so the target 'zero-shot NMAE ≤ 1.3 × the oracle's' is out of reach "
            "in this world by construction wherever the zero-shot oracle's own ratio exceeds 1.3 (see the targets). "
            "What separates M2M from the zero-shot oracle is what no model can learn before the scenario has rows "
            "(its industry and region draws, each unit's propensities) and the level read off the attributes.", ""]


def curves_section(summary: pd.DataFrame, args) -> list[str]:
    if summary.empty:
        return []
    v = values(summary)
    abl = ["m2m", *[x.name for x in ablation_variants()]]
    out = ["## M2M's ablations and curves", "", f"Training seeds {args.curve_seeds}; the `m2m` and `naive_mean` rows are the main study's runs (seeds {args.seeds}), "
           "which are also the curves' default points (T = 14, S̃ = 16, K = 2).", "",
           "### Ablations (test, overall)", "", *table(v, abl, "test", "overall", WORLD_COLS, bounds=()), ""]
    groups: dict[str, list[tuple[float, str]]] = {}
    for x in _curves(args):
        groups.setdefault(x.group.split(":")[1], []).append((x.value, x.name))
    for name, points in groups.items():
        out += [f"### {name}", "", *table(v, [p for _, p in sorted(points, key=lambda p: (p[1].split(' ')[0], p[0]))], "test", "overall", WORLD_COLS, bounds=()), ""]
    plot = args.out.parent / "img" / f"{args.out.stem}_curves.png"  # forecasting.md -> img/forecasting_curves.png
    curve_plot(summary, groups, "clicks", "nmae", plot)
    out += [f"![curves]({plot.relative_to(args.out.parent).as_posix()})", ""]
    return out


def paired_note(seeds: Sequence[int], what: str) -> str:
    return (f"**Which differences are more than seed noise.** M2M's test value minus each rival's, paired by training seed "
            f"({what}), mean and 95% t-interval over the {len(seeds)} seeds; * = the interval excludes 0 (NMAE: negative = "
            "M2M lower, better; AUC: positive = M2M higher, better; `msmt.experiments.forecasting_page.paired_differences`).")


def online_section(summary: pd.DataFrame, records: pd.DataFrame, args) -> list[str]:
    if summary.empty:
        return []
    v = values(summary)
    main = [x.name for x in main_variants()]
    trained = [m for m in main if not m.startswith("naive_")]
    cols = [(t, "nmae") for t in ONLINE_TASKS]
    auto = load_run(args.work / "runs" / "online_ads" / "m2m" / f"seed{args.online_seeds[0]}").model
    auto_chosen = ", ".join(f"{t}: naive {m}" for t, m in auto.forecast.chosen().items())

    val_wins = offset_wins(v, trained, ONLINE_TASKS, OFFSETS, "val")
    test_wins = offset_wins(v, trained, ONLINE_TASKS, OFFSETS, "test")
    config = load_experiment(ONLINE)
    own = config.model.forecast
    # a tie goes to the config's own offset (a change needs more pairs than what it replaces), then the one listed first
    chosen = min(OFFSETS, key=lambda o: (-val_wins[o], o != own))
    v = with_offset_chosen(v, trained, OFFSETS, chosen)
    others = [o for o in OFFSETS if o != chosen]
    rows = [*main, *(f"{m} offset={o}" for o in others for m in trained)]
    suffix = OFFSETS[chosen]  # the records keep the runs' own names
    counts = ", ".join(f"`{o}` {val_wins[o]} (test: {test_wins[o]})" for o in OFFSETS)
    return [
        "## Online ads (real data)",
        "",
        f"`configs/online_ads.yaml`, training seeds {args.online_seeds}. On 1 May 2020 the data changes regime (conversions per "
        "click about 3× April's, clicks per display about two thirds); 82% of the training rows (1 April – 10 May) are "
        "April's, validation and test (10 – 31 May) are all May's, and in the test days (the last 15% by date) the "
        "trailing mean falls far behind the last value." + _online_training_note(config.train.ema_epochs),
        "",
        "**The offset, chosen on the validation split.** Every trained model runs three times: with "
        f"`model.forecast: auto` (one naive forecast per task, the best on the training split: {auto_chosen}), with "
        "`blend` (per row a learnt softmax mix of the naive forecasts, steered by how far the last value and the same "
        "weekday sit from the trailing mean) and with `blend_backtest` (the blend whose mix also reads each naive "
        "forecast's error over the row's last `model.backtest_days` days; both `msmt.layers.naive.ForecastOffset`). "
        f"In how many of the {sum(val_wins.values())} (model, task) pairs each has the lowest validation NMAE of the three: "
        f"{counts}; so the model rows and the targets below use **`{chosen}`**"
        + (" (a tie, which goes to the config's own offset)" if list(val_wins.values()).count(val_wins[chosen]) > 1 else "")
        + "; the rows marked `offset=…` are the same "
        "models with the others (`benchmarks/forecasting.py: online_section`).",
        "",
        "### Test split",
        "",
        *online_targets(v, main, ONLINE_TASKS),
        *naive_checks(v, ONLINE_TASKS),
        "",
        *table(v, rows, "test", "overall", cols, bounds=()),
        "",
        paired_note(args.online_seeds, f"both with the `{chosen}` offset; the naive forecasts have none"),
        "",
        *paired_differences(records, "overall", [
            (rival, "m2m" + suffix, rival if rival.startswith("naive_") else rival + suffix)
            for rival in [m for m in trained if m != "m2m"] + ["naive_last", "naive_mean"]
        ], cols),
        "",
        "### Validation split (where the offset was chosen)",
        "",
        *table(v, rows, "val", "overall", cols, bounds=()),
        "",
    ]


def gap_note(config: Path) -> list[str]:
    """A line on the simulator config's ``model.history_gap_dropout`` (empty when it is off)."""
    rate = load_experiment(config).model.history_gap_dropout
    if not rate:
        return []
    return [
        f"On the simulator world every trained model (not the naive forecasters, which fit their scale on the histories "
        f"as they are) sees {rate:.0%} of its training rows with the history cut to a block of earlier days that ends "
        "g ≥ 1 days before the row (`model.history_gap_dropout` in the simulator's experiment config): the new scenario's "
        "units are scored days after the K days of context they have, a pattern a complete training panel never shows.", "",
    ]


def point_note(args) -> list[str]:
    """What the count tasks' NMAE scores when the runs were trained with ``train.point_forecast=scaled | median``."""
    given = [*args.defaults, *args.overrides]
    option = next((o for o in ("scaled", "median") if f"train.point_forecast={o}" in given), None)
    if option is None:
        return []
    point = ("the expected count times a factor per task and scenario" if option == "scaled" else
             "the median of a Poisson whose rate is the expected count times a factor per task and scenario (an integer: "
             "on counts of 0, 1 or 2 a forecast of 0.6 is never the NMAE-optimal one)")
    return [
        f"Each run's count NMAE, SMAPE and MAPE score its point forecast for absolute errors (`train.point_forecast: {option}`, "
        f"`msmt.scoring.point`): {point}, the factor the one that minimises NMAE of factor × expected count on the "
        "validation split (a scenario with under 200 validation rows, and the new scenario, take the task's factor), kept "
        "only where the point forecast fitted on the validation split's earlier half also lowers its later half's NMAE "
        "(else the expected count); Poisson deviance and RMSE score the expected count. Every model and naive forecaster gets "
        "its own factors. The oracle rows are not scaled: `oracle` is the expected value (the issue's reference), "
        "`oracle (median)` NMAE's own bound.", "",
    ]


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    config = simulator_config("advertiser", {"advertisers": args.advertisers, "days": args.days, "seed": args.seed}, args.work, "world", _log)
    rows = {s: sum(1 for _ in open(config.parent / f"{s}.csv")) - 1 for s in ("train", "validation", "test", "new_scenario")}
    world, extra = world_study(args, config)
    online = pd.DataFrame() if args.skip_online else online_study(args)
    summaries = {name: summarise(r) for name, r in (("world", world), ("curves", extra), ("online", online)) if not r.empty}
    tables = args.out.with_suffix("")  # the numbers behind the page: docs/results/forecasting.md -> docs/results/forecasting/
    for name, s in summaries.items():
        keep = s["scenario"].isin(["overall", MINOR]) & s["metric"].isin(["nmae", "auc", "smape", "poisson_deviance", "logloss"])
        write_table(s[keep], tables / f"{name}.csv")
    hours = (time.perf_counter() - start) / 3600
    curve_args = "--skip-curves" if args.skip_curves else f"--curve-seeds {' '.join(map(str, args.curve_seeds))}"
    online_args = "--skip-online" if args.skip_online else f"--online-seeds {' '.join(map(str, args.online_seeds))}"
    page = [
        "# Forecasting: the naive forecasts, the multi-task models and M2M", "",
        "Generated by `.venv/bin/python benchmarks/forecasting.py` "
        f"(`--advertisers {args.advertisers} --days {args.days} --seed {args.seed} --seeds {' '.join(map(str, args.seeds))} "
        f"{curve_args} {online_args}"
        f"{f' --unseen-correction {args.unseen_correction:g}' if args.unseen_correction != 1.0 else ''}"
        f"{''.join(f' --default {d}' for d in args.defaults)}`) "
        f"with msmt's source {source_hash()[:12]} on {describe_cpu()}, "
        f"{args.threads} threads per run; training its {len(TRAINED)} runs took {sum(TRAINED.values()) / 3600:.1f} h summed over "
        f"the runs (each run's `bench.json`), this command {hours:.1f} h (it reuses the runs it finds). The numbers behind every "
        f"table: [`{tables.name}/`]({tables.name}/).", "",
        "Every model forecasts relative to a naive forecast of the unit (`model.forecast: auto`, log λ = log(b + ε) + f(x)): "
        "per count task the one of trailing 14-day mean, last value and same weekday last week with the smallest absolute error "
        "on the training split (the simulator world: the trailing mean for every task; online ads: see its section); "
        "`+history` models also read a summary of the window (`model.history_summary`); on the simulator world every trained "
        "model also reads the group channel (`panel.group_keys: [advertiser_id]`: per past day, the unit's advertiser's metrics "
        "summed over its other scenarios); the naive forecasters read only the unit's own history and fit only "
        "a scale per task. NMAE = Σ|y − ŷ| / Σ|y| (lower is better), AUC for `active` (higher is better). "
        f"Count tasks: {', '.join(COUNTS)}.", "",
        *point_note(args),
        *gap_note(config),
        *world_section(args, summaries["world"], world, config, rows),
        *curves_section(pd.concat([summaries["world"], summaries["curves"]]) if "curves" in summaries else pd.DataFrame(), args),
        *online_section(summaries.get("online", pd.DataFrame()), online, args),
    ]
    atomic_write_text(args.out, "\n".join(page))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
