"""One training option against the same runs without it, on the forecasting study's data.

``benchmarks/refit.py`` (``train.refit``), ``benchmarks/weight_average.py`` (``train.ema_epochs``) and
``benchmarks/backtest_blend.py`` (``model.forecast=blend_backtest``) ask the same question of one option:
on online ads (real data, every trained variant with ``model.forecast=blend``, the offset the forecasting
page's validation split chose before ``blend_backtest`` existed, or with ``--online-offset blend_backtest``,
the one it chooses now) and on the simulator world (the
variants of ``--world-models``), does a twin with the option beat the run without it, paired by
training seed, and where does M2M then stand against the best naive forecaster? The runs are
the forecasting study's (:class:`msmt.experiments.forecasting.Study`), reused when the same code
trained them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from msmt.data.io import atomic_write_text, write_table
from msmt.experiments.bench import CELL_RECORD, config_digest
from msmt.experiments.forecasting import (
    MEDIAN_ORACLE,
    NAIVE,
    NEW_SCENARIO_K,
    Study,
    Variant,
    add_study_arguments,
    add_world_arguments,
    main_variants,
    median_oracle_records,
    study_records,
    summarise,
    twin_variants,
)
from msmt.experiments.forecasting_page import COUNTS, MINOR, WORLD_COLS, best_naive, check, paired_differences, table, values
from msmt.experiments.results_page import simulator_config
from msmt.rundir.layout import HISTORY, REFIT_HISTORY
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.spec.config import ExperimentConfig, load_experiment

ONLINE_COLS = [(t, "nmae") for t in ("displays", "clicks", "post_click_conversions")]
OFFSET = " offset={}"  # the online runs' name suffix: the offset every run without and with the option has
BLEND = OFFSET.format("blend")  # the online runs twins are compared with by default (the forecasting study's blend runs)
ONLINE_OFFSETS = ("blend", "blend_backtest")  # --online-offset: the forecasting study trains both, so its runs are shared
COST_NOTE = "seconds of one run on one thread, beside the study's other processes: compare them within a row"


@dataclass(frozen=True)
class Twin:
    """The option under study: the override that turns it on, and the suffix its runs' names carry."""

    suffix: str  # e.g. " +refit"
    setting: str  # e.g. "train.refit=true"
    group: str  # the variants' group in the study's records
    requires: tuple[str, ...] = ()  # settings the option needs, given to each twin whose variant lacks them


@dataclass(frozen=True)
class TwinPage:
    """What a twin study's page says around its tables."""

    title: str
    script: str  # the benchmark that writes it, e.g. "benchmarks/refit.py"
    intro: str  # what the option does
    online_note: str  # after the online-ads data's description
    world_note: str  # after the world's description
    label: str  # the option as the tables name it, e.g. "the refit"
    validation: bool = False  # show the validation split too (an option that changes the validation numbers)
    new_scenario: bool = False  # score the world's runs on the new scenario (K days of its history) too


def online_variants(twin: Twin, offset: str = "blend") -> tuple[list[Variant], list[tuple[str, str]]]:
    """The naive forecasters, each trained main variant with the offset ``model.forecast=<offset>``
    (named as the forecasting study names its run with it), and its twin; and the (without, with)
    name pairs."""
    if twin.setting == f"model.forecast={offset}":
        raise ValueError(f"--online-offset {offset}: the twin's option is that offset, so both runs would be the same")
    naive = [v for v in main_variants() if v.name in NAIVE]
    blend = [Variant(v.name + OFFSET.format(offset), (*v.overrides, f"model.forecast={offset}"))
             for v in main_variants() if v.name not in NAIVE]
    return naive + blend + twin_variants(blend, twin.suffix, twin.setting, twin.group, twin.requires), [(v.name, v.name + twin.suffix) for v in blend]


def world_variants(models: Sequence[str], twin: Twin) -> tuple[list[Variant], list[tuple[str, str]]]:
    """The naive forecasters, the main variants named in ``models`` and their twins; the name pairs."""
    naive = [v for v in main_variants() if v.name in NAIVE]
    trained = [v for v in main_variants() if v.name in models]
    return naive + trained + twin_variants(trained, twin.suffix, twin.setting, twin.group, twin.requires), [(v.name, v.name + twin.suffix) for v in trained]


def chosen(variants: list[Variant], models: Sequence[str] | None, twin: Twin) -> list[Variant]:
    """The variants of ``models`` (by their main variant's name) and their twins; all without ``models``."""
    if models is None:
        return variants
    return [v for v in variants if v.name.removesuffix(twin.suffix).split(OFFSET.format(""))[0] in models]


def verdicts(v: dict, pairs: list[tuple[str, str]], split: str, scenario: str, cols) -> list[str]:
    """M2M with and without the option against the best naive forecaster (count NMAE), as table rows."""
    lines = ["| | check | measured (mean over seeds) |", "|---|---|---|"]
    for pair in (p for p in pairs if p[0].startswith("m2m")):
        for name in pair:
            for task, metric in cols:
                ours, naive = v.get((name, split, scenario, task, metric)), best_naive(v, split, scenario, task, metric)
                if metric != "nmae" or ours is None or naive is None:
                    continue
                lines.append(check(f"{task}: {name} ≤ best naive", ours[0] <= naive[1], f"{ours[0]:.4f} vs {naive[1]:.4f} ({naive[0]})"))
    return lines


def training_seconds(run_dirs: Iterable[Path]) -> float:
    """The runs' training time summed (each run's ``bench.json``)."""
    return sum(float(json.loads((r / CELL_RECORD).read_text())["seconds"]) for r in run_dirs)


def epochs_trained(run_dir: Path) -> int:
    """The epochs a run trained: its ``history.csv`` rows, and its refit's (``refit_history.csv``) if any."""
    return sum(len(pd.read_csv(run_dir / name)) for name in (HISTORY, REFIT_HISTORY) if (run_dir / name).exists())


def cost_table(runs: dict[tuple[str, int], Path], pairs: list[tuple[str, str]]) -> list[str]:
    """Markdown rows: per variant of ``pairs`` (without, with the option) the epochs trained and the
    seconds of training per run, mean over its seeds (seconds as each run's ``bench.json`` measured them)."""
    lines = ["| model | epochs trained, without → with | seconds per run, without → with |", "|---|---:|---:|"]
    for base, twin in pairs:
        epochs, seconds = {}, {}
        for name in (base, twin):
            dirs = [d for (variant, _), d in runs.items() if variant == name]
            epochs[name] = sum(epochs_trained(d) for d in dirs) / len(dirs)
            seconds[name] = training_seconds(dirs) / len(dirs)
        lines.append(f"| {base} | {epochs[base]:.1f} → {epochs[twin]:.1f} | {seconds[base]:.0f} → {seconds[twin]:.0f} |")
    return lines


def add_twin_arguments(ap: argparse.ArgumentParser, repo: Path, out: Path, world_models: Sequence[str] = ("m2m",)) -> None:
    """A twin study's command line: the world and seeds, ``--online-seeds``, ``--world-models``,
    ``--skip-world``, ``--models`` (train only those variants and their twins: to split the work over
    processes; one more run without it writes the page) and where the runs and the page go."""
    add_world_arguments(ap)
    ap.add_argument("--online-seeds", type=int, nargs="+", default=list(range(10)), help="training seeds of the online-ads runs")
    ap.add_argument("--world-models", nargs="+", default=list(world_models), help="the simulator world's trained variants (with and without the option)")
    ap.add_argument("--skip-world", action="store_true", help="online ads only")
    ap.add_argument("--online-offset", choices=ONLINE_OFFSETS, default="blend",
                    help="model.forecast of every online run, without and with the option")
    ap.add_argument("--models", nargs="+", default=None, help="train only these main variants (m2m, mmoe+history...) and their twins")
    add_study_arguments(ap, repo / "runs" / "forecasting", out)
    ap.set_defaults(default_out=out, repo=repo)  # for the page's command (page_command)


def twin_main(doc: str, repo: Path, page_name: str, study: Callable[[argparse.Namespace], tuple[Twin, TwinPage]],
              arguments: Callable[[argparse.ArgumentParser], None] | None = None, world_models: Sequence[str] = ("m2m",)) -> None:
    """A twin benchmark's command (``benchmarks/refit.py``, ``weight_average.py``, ``backtest_blend.py``,
    ``history_live.py``): its own options (``arguments``) and the shared ones (``--world-models``
    defaulting to ``world_models``), then the study of the twin and page that ``study`` makes of the
    parsed arguments; the page is ``docs/results/<page_name>`` by default."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if arguments is not None:
        arguments(ap)
    add_twin_arguments(ap, repo, repo / "docs" / "results" / page_name, world_models)
    args = ap.parse_args()
    twin, page = study(args)
    run_twin_study(args, twin, page, repo / "configs" / "online_ads.yaml")


def _log(message: str) -> None:
    print(message, flush=True)


def page_command(args: argparse.Namespace) -> str:
    """The benchmark's arguments as the page's header shows them: enough to write the same page again."""
    defaults = " ".join(f"--default {d}" for d in args.defaults)
    return (f"--online-seeds {' '.join(map(str, args.online_seeds))} "
            + ("" if args.online_offset == "blend" else f"--online-offset {args.online_offset} ")
            + ("--skip-world" if args.skip_world else f"--advertisers {args.advertisers} --days {args.days} --seed {args.seed} "
               f"--seeds {' '.join(map(str, args.seeds))} --world-models {' '.join(args.world_models)}")
            + f" --threads {args.threads}" + (f" {defaults}" if defaults else "") + _out_option(args))


def _out_option(args: argparse.Namespace) -> str:
    """`` --out PATH`` where the page was written elsewhere than the benchmark's own page (the command
    the page shows must write that page again, not overwrite another), PATH relative to the repository
    when inside it."""
    out, repo = Path(args.out).resolve(), Path(args.repo).resolve()
    if out == Path(args.default_out).resolve():
        return ""
    return f" --out {out.relative_to(repo) if out.is_relative_to(repo) else out}"


def backtest_fold_note(cfg: ExperimentConfig) -> list[str]:
    """A paragraph when the runs (``cfg``: the config as loaded with their defaults and overrides) are a
    rolling-origin backtest fold (``dataset.split.backtest_fold`` k > 0): every "test" below is then the
    fold's test split, not the data's."""
    fold = cfg.dataset.split.backtest_fold
    if not fold:
        return []
    return [f"**Backtest fold {fold}** (`dataset.split.backtest_fold={fold}`): every split is moved {fold} test size(s) earlier and the "
            "latest rows are in none, so the \"test split\" below is the rows just before the data's own test split (fold 1: "
            "the data's validation rows where validation and test are the same size). A setting chosen here is not chosen "
            "on the data's test split.", ""]


def refuse_option_in_effect(config: Path, defaults: Sequence[str], overrides: Sequence[str], twin: Twin) -> None:
    """Stop with one line when ``config``, after the runs' ``defaults`` (before the variant's settings, the
    twin's among them) and ``overrides`` (after them), already has the twin's option, or has it undone:
    each twin would train the same config as its run without the option, and the page would call their
    difference the option's. E.g. ``train.ema_epochs: 3`` in the config and the weight average's twin."""
    def digest(settings: Sequence[str]) -> str:
        return config_digest(load_experiment(config, list(settings)))

    if digest([*defaults, *twin.requires, *overrides]) == digest([*defaults, *twin.requires, twin.setting, *overrides]):
        key = twin.setting.split("=", 1)[0]
        raise SystemExit(f"{config}: {twin.setting} changes nothing there (the config's own value, or a --default / --set "
                         f"of {key}), so each twin would be its run without the option; give --default {key}=<the value "
                         "without it> to measure the option against runs without it")


def _split_sections(records: pd.DataFrame, v: dict, shown: list[str], pairs: list[tuple[str, str]], split: str,
                    scenario: str, cols, bounds: Sequence[str], label: str) -> list[str]:
    """One split's table of every shown variant and the option's paired differences on it."""
    diff_rows = [(f"{twin} − {base}", twin, base) for base, twin in pairs]
    return [*table(v, shown, split, scenario, cols, bounds), "",
            *paired_differences(records, scenario, diff_rows, cols, f"{split}, `{scenario}`: with {label} − without", split=split), ""]


def run_twin_study(args: argparse.Namespace, twin: Twin, text: TwinPage, online_config: Path) -> None:
    """Train (or reuse) the online-ads and world runs with and without the option; without
    ``--models``, write the page and its records (``args.out`` and the folder beside it)."""
    started = time.perf_counter()
    extra = (f"train.num_threads={args.threads}", *args.overrides)
    try:
        online, online_pairs = online_variants(twin, args.online_offset)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    offset = f"model.forecast={args.online_offset}"
    refuse_option_in_effect(online_config, [*args.defaults, offset], args.overrides, twin)
    fold_note = backtest_fold_note(load_experiment(online_config, [*args.defaults, offset, *args.overrides]))
    if not args.skip_world:
        world = {"advertisers": args.advertisers, "days": args.days, "seed": args.seed}
        config = simulator_config("advertiser", world, args.work, "world", _log)
        refuse_option_in_effect(config, args.defaults, args.overrides, twin)
    online_study = Study(online_config, args.work / "runs" / "online_ads", args.online_seeds, chosen(online, args.models, twin),
                         extra, None, _log, tuple(args.defaults), args.jobs)
    online_runs = online_study.train()
    world_runs: dict = {}
    if not args.skip_world:
        variants, world_pairs = world_variants(args.world_models, twin)
        world_study = Study(config, args.work / "runs" / "world", args.seeds, chosen(variants, args.models, twin), extra,
                            config.parent / "new_scenario.csv" if text.new_scenario else None, _log, tuple(args.defaults), args.jobs)
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
    splits = ("test", "val") if text.validation else ("test",)
    page = [
        f"# {text.title}", "",
        f"Generated by `.venv/bin/python {text.script}` (`{page_command(args)}`) with msmt's source {source_hash()[:12]} on "
        f"{describe_cpu()}; training its {len(online_runs) + len(world_runs)} runs took "
        f"{training_seconds([*online_runs.values(), *world_runs.values()]) / 3600:.1f} h summed over the runs, this command "
        f"{(time.perf_counter() - started) / 3600:.1f} h (it reuses the runs it finds). The numbers behind every table: "
        f"[`{tables.name}/`]({tables.name}/).", "",
        text.intro, "",
        *fold_note,
        "## Online ads (real data)", "",
        f"`configs/online_ads.yaml`, training seeds {args.online_seeds}, every trained model with "
        f"`model.forecast={args.online_offset}` "
        + ("(the offset [the forecasting study](forecasting.md) chose on the validation split for this data before "
           "`blend_backtest` existed; it now chooses that one). " if args.online_offset == "blend" else
           "(the offset [the forecasting study](forecasting.md) chooses on the validation split for this data, and "
           "`configs/online_ads.yaml`'s). ")
        + "The data change regime on 1 May 2020: 82% of the training rows (1 April – 10 May) are April's, validation and "
        f"test (10 – 31 May) all May's. {text.online_note}", "",
        f"Cells: mean ± std over the {len(args.online_seeds)} seeds. The paired differences: with {text.label} minus without, "
        "paired by training seed, mean and 95% t-interval over the seeds; * = the interval excludes 0 (negative = "
        f"{text.label} lowers the NMAE).", "",
    ]
    for split in splits:
        page += [f"### {'Test' if split == 'test' else 'Validation'} split", "",
                 *_split_sections(online_records, v, shown, online_pairs, split, "overall", ONLINE_COLS, (), text.label)]
    page += [
        f"**What {text.label} costs** (mean over seeds; {COST_NOTE}):", "",
        *cost_table(online_runs, online_pairs), "",
        "**M2M against the best naive forecaster** (test, overall):", "",
        *verdicts(v, online_pairs, "test", "overall", ONLINE_COLS), "",
        *paired_differences(online_records, "overall", [(f"{twin} − naive_last", twin, "naive_last") for _, twin in online_pairs],
                            ONLINE_COLS, f"the models with {text.label} minus the last value"), "",
    ]
    if world_runs:
        page += _world_page(args, world, config, world_study, world_runs, world_pairs, text, tables)
    atomic_write_text(args.out, "\n".join(page))
    _log(f"wrote {args.out}")


def _world_page(args, world: dict, config: Path, study: Study, runs: dict, pairs: list[tuple[str, str]], text: TwinPage,
                tables: Path) -> list[str]:
    spec = load_experiment(config).dataset
    records = pd.concat([study_records(study, runs), median_oracle_records(spec, *world.values())], ignore_index=True)
    keep = records["scenario"].isin(["overall", MINOR]) & records["metric"].isin(["nmae", "auc"])
    write_table(records[keep], tables / "world_records.csv")
    w = values(summarise(records))
    shown = [*NAIVE, *(name for pair in pairs for name in pair)]
    bounds = ("oracle", MEDIAN_ORACLE)
    page = [
        f"## The simulator world ({args.advertisers:,} advertisers × {args.days} days, seed {args.seed})", "",
        f"The forecasting study's world and config (`benchmarks/forecasting.py`), training seeds {args.seeds}. "
        f"{text.world_note}", "",
    ]
    for split in ("test", "val") if text.validation else ("test",):
        page += [f"**{'Test' if split == 'test' else 'Validation'} split, overall**", "",
                 *_split_sections(records, w, shown, pairs, split, "overall", WORLD_COLS, bounds, text.label)]
    page += [f"**The minor scenario `{MINOR}`** (test)", "",
             *_split_sections(records, w, shown, pairs, "test", MINOR, WORLD_COLS, bounds, text.label)]
    if text.new_scenario:
        cols = [(t, "nmae") for t in COUNTS]
        for k in (k for k in NEW_SCENARIO_K if any(key[1] == f"new K={k}" for key in w)):  # none in a short world's test days
            page += [f"**The new scenario, {'zero-shot' if k == 0 else f'K = {k} days of its history'}** (overall NMAE)", "",
                     *_split_sections(records, w, shown, pairs, f"new K={k}", "overall", cols, ("oracle",), text.label)]
    return page + [f"**What {text.label} costs** (mean over seeds; {COST_NOTE}):", "", *cost_table(runs, pairs), "",
                   "**M2M against the best naive forecaster** (test, overall):", "",
                   *verdicts(w, pairs, "test", "overall", [(t, "nmae") for t in COUNTS]), ""]
