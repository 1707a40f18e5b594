"""Choosing ``model.m2m.scenario_dropout`` and ``model.unseen_scenario_correction`` without the new scenario's rows (docs/results/held_out_scenario.md).

A validation split holds no new scenario, so the rate cannot be chosen on it. Instead one *known*
scenario is held out of training entirely (every row, every day) and launched on a day inside
the training period; it is scored as the forecasting study scores its new scenario — from launch
+ 7 days to the validation split's last day, with K = 0 / 3 / 7 of its first days as history and
the other scenarios' rows as context (:func:`msmt.experiments.forecasting.new_scenario_blocks`).
No day of the test split is read, and the world's real new scenario is never touched.

With ``--references --unseen-corrections W ...`` the plain M2M runs (no channel) are also scored
keeping w of their correction on the held-out scenario's rows with history
(``model.unseen_scenario_correction``: scoring only, so the same runs serve every w;
:func:`msmt.experiments.forecasting.new_scenario_blocks`), and the page names the w with the lowest
mean count NMAE over K = 3 and 7: the value ``benchmarks/forecasting.py --unseen-correction`` takes.

    .venv/bin/python benchmarks/held_out_scenario.py [--work runs/forecasting] [--scenario live_stream]
        [--launch 53] [--rates 0 0.1 0.2 0.4] [--seeds 0] [--threads 1] [--references]
        [--unseen-corrections 1 0.75 0.5 0.25 0] [--default KEY=VALUE ...] [--out docs/results/held_out_scenario.md]

The world is the forecasting study's (``WORK/data/world``, made by ``benchmarks/forecasting.py``
or ``benchmarks/cross_section.py``, its size and seed in ``synth.json``); the held-out copy goes to ``WORK/data/held_out_<scenario>``.
Runs are reused when the same code trained them; several processes may share ``--work``, each
with its own ``--rates``, then one more with every rate writes the page.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from msmt.data.io import atomic_write_text, write_table
from msmt.experiments.forecasting import NEW_SCENARIO_K, Study, Variant, new_scenario_blocks_by_correction
from msmt.experiments.forecasting_page import COUNTS
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.spec.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
NO_CHANNEL = "m2m"
NAIVE = "naive_mean"


def _log(message: str) -> None:
    print(message, flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="live_stream", help="the known scenario held out of training")
    ap.add_argument("--launch", type=int, default=None,
                    help="the held-out scenario's first day (default: 14 days before the validation split ends, the span of the "
                         "simulator's new scenario, so that every scored day's window reaches back to the first K days)")
    ap.add_argument("--rates", type=float, nargs="*", default=[0.0, 0.1, 0.2, 0.4],
                    help="scenario_dropout values to compare (none: only the references and the correction's scan)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "forecasting")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "held_out_scenario.md")
    ap.add_argument("--references", action="store_true", help="also train M2M without the channel and the trailing mean")
    ap.add_argument("--unseen-corrections", type=float, nargs="+", default=[],
                    help="model.unseen_scenario_correction values to score the plain M2M runs with (needs --references)")
    ap.add_argument("--default", dest="defaults", action="append", default=[], metavar="KEY=VALUE")
    return ap.parse_args()


def held_out_world(config: Path, scenario: str, launch: int | None) -> tuple[Path, Path, int]:
    """(the experiment config of the world without ``scenario``, the held-out scenario's rows from
    ``launch`` to the validation split's last day, ``launch``); written once per (scenario, launch).
    ``launch`` None: the validation split's last day − 13, 14 days like the simulator's new scenario
    (a later scored day's window would no longer reach its first K days)."""
    spec = load_experiment(config).dataset
    time = spec.panel.time
    last = int(pd.read_csv(config.parent / "validation.csv", usecols=[time])[time].max())
    launch = last - 13 if launch is None else launch
    out = config.parent.parent / f"held_out_{scenario}"
    record = {"scenario": scenario, "launch": launch, "world": json.loads((config.parent / "synth.json").read_text())}
    stamp = out / "held_out.json"
    if stamp.exists() and json.loads(stamp.read_text()) == record:
        return out / config.name, out / "held_out.csv", launch
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    column = spec.scenario.column
    held = []
    for split in ("train", "validation", "test"):
        frame = pd.read_csv(config.parent / f"{split}.csv")
        if scenario not in set(frame[column]):
            raise SystemExit(f"{config.parent / f'{split}.csv'}: scenario {scenario!r} has no rows")
        frame[frame[column] != scenario].to_csv(out / f"{split}.csv", index=False)
        if split != "test":
            held.append(frame[frame[column] == scenario])
    rows = pd.concat(held, ignore_index=True)
    write_table(rows[(rows[time] >= launch) & (rows[time] <= last)], out / "held_out.csv")
    for name in ("dataset.yaml", config.name):
        shutil.copy(config.parent / name, out / name)
    atomic_write_text(stamp, json.dumps(record))
    return out / config.name, out / "held_out.csv", launch


def variants(rates, references: bool) -> list[Variant]:
    out = [Variant(f"m2m +cross-section p={r:g}", ("model.name=m2m", "dataset.panel.cross_section_keys=[scenario]",
                                                   f"model.m2m.scenario_dropout={r:g}")) for r in rates]
    if references:
        out += [Variant(NO_CHANNEL, ("model.name=m2m",)), Variant(NAIVE, ("model.name=naive_mean", "train.epochs=2"))]
    return out


def scores(run: Path, held: Path, corrections=(None,)) -> dict:
    """{w: {K: {count task: NMAE}}} on the held-out scenario's scored rows, w of ``corrections`` the
    ``model.unseen_scenario_correction`` scored with (None: the run's own); each cached in the run
    folder with the held-out world's record (another launch day is scored again), the missing ones
    scored together (:func:`msmt.experiments.forecasting.new_scenario_blocks_by_correction`)."""
    record = json.loads((held.parent / "held_out.json").read_text())

    def cache_of(w: float | None) -> Path:
        return run / ("held_out.json" if w is None else f"held_out_w{w:g}.json")

    out = {}
    for w in corrections:
        cache = cache_of(w)
        if cache.exists() and cache.stat().st_mtime >= (run / "metrics.json").stat().st_mtime:
            kept = json.loads(cache.read_text())
            if kept.get("held_out") == record:
                out[w] = {int(k): v for k, v in kept["scores"].items()}
    missing = [w for w in corrections if w not in out]
    for w, blocks in (new_scenario_blocks_by_correction(run, held, missing) if missing else {}).items():
        out[w] = {k: {t: float(b["overall"][t]["nmae"]) for t in COUNTS} for k, b in blocks.items()}
        cache_of(w).write_text(json.dumps({"held_out": record, "scores": out[w]}))
    return out


def correction_section(runs: dict, held: Path, corrections, naive: pd.DataFrame | None) -> tuple[list[str], float, pd.DataFrame]:
    """The page's section on ``model.unseen_scenario_correction``, the chosen w and the scan's records: the
    plain M2M runs scored at each w, chosen the lowest mean of the count NMAEs over K = 3 and 7 (ties: the larger w)."""
    rows = [dict(w=w, seed=seed, K=k, task=t, nmae=v) for (name, seed), run in runs.items() if name == NO_CHANNEL
            for w, by_k in scores(run, held, corrections).items() for k, tasks in by_k.items() if k > 0 for t, v in tasks.items()]
    scan = pd.DataFrame(rows)
    cell = scan.groupby(["w", "K", "task"])["nmae"].agg(["mean", "std"]).fillna(0.0)
    mean = scan.groupby("w")["nmae"].mean()
    chosen = float(max(w for w in mean.index if mean[w] == mean.min()))
    ks = sorted(scan["K"].unique())
    out = ["## The unseen scenario's correction", "",
           "The plain M2M runs above (`m2m`, no channel) scored again with `model.unseen_scenario_correction` w: on the "
           "held-out scenario's rows that have their own history the count heads keep w of the network's correction, "
           "log λ = log(b + ε) + w · f(x) (w = 1: the runs as trained; scoring only, no training row is of an unseen "
           "scenario; `msmt.layers.naive.ForecastOffset`). K = 0 rows have no history of their own and keep f whole. "
           "NMAE mean ± std over seeds; the last column is the mean over the six cells.", "",
           "| w | " + " | ".join(f"K = {k} {t}" for k in ks for t in COUNTS) + " | mean |", "|---" * (len(ks) * len(COUNTS) + 2) + "|"]
    for w in corrections:
        text = " | ".join(f"{cell.loc[(w, k, t), 'mean']:.4f} ± {cell.loc[(w, k, t), 'std']:.4f}" for k in ks for t in COUNTS)
        out.append(f"| {'**' if w == chosen else ''}{w:g}{'**' if w == chosen else ''} | {text} | {mean[w]:.4f} |")
    if naive is not None:
        out.append(f"| {NAIVE} | " + " | ".join(f"{naive.loc[(NAIVE, k, t), 'mean']:.4f}" for k in ks for t in COUNTS)
                   + f" | {np.mean([naive.loc[(NAIVE, k, t), 'mean'] for k in ks for t in COUNTS]):.4f} |")
    out += ["", f"**Chosen**: w = {chosen:g} (the lowest mean; `benchmarks/forecasting.py --unseen-correction {chosen:g}`).", ""]
    return out, chosen, scan


def main() -> None:
    args = parse_args()
    if args.unseen_corrections and not args.references:
        raise SystemExit("--unseen-corrections: scores the plain M2M runs, which only --references trains")
    if not args.rates and not args.unseen_corrections:
        raise SystemExit("--rates: none given, and no --unseen-corrections: nothing to choose")
    world = args.work / "data" / "world" / "experiment.yaml"
    if not world.exists():
        raise SystemExit(f"{world}: no forecasting world here; make it with benchmarks/forecasting.py or benchmarks/cross_section.py --work {args.work}")
    config, held, launch = held_out_world(world, args.scenario, args.launch)
    chosen = variants(args.rates, args.references)
    study = Study(config, args.work / "runs" / f"held_out_{args.scenario}", args.seeds, chosen,
                  (f"train.num_threads={args.threads}",), None, _log, tuple(args.defaults), args.jobs)
    runs = study.train()
    rows = [dict(variant=name, seed=seed, K=k, task=t, nmae=v)
            for (name, seed), run in runs.items() for k, tasks in scores(run, held)[None].items() for t, v in tasks.items()]
    records = pd.DataFrame(rows)
    tables = args.out.with_suffix("")
    tables.mkdir(parents=True, exist_ok=True)
    write_table(records, tables / "records.csv")
    cell = records.groupby(["variant", "K", "task"])["nmae"].agg(["mean", "std"]).fillna(0.0)
    rated = [v.name for v in chosen if "p=" in v.name]
    mean3 = {name: float(np.mean([cell.loc[(name, 3, t), "mean"] for t in COUNTS])) for name in rated}
    best = min(mean3, key=mean3.get) if mean3 else None
    n_rows = len(pd.read_csv(held))
    size = json.loads((world.parent / "synth.json").read_text())
    corrections = " --unseen-corrections " + " ".join(f"{w:g}" for w in args.unseen_corrections) if args.unseen_corrections else ""
    chosen_what = [what for what, given in (("the scenario dropout", args.rates), ("the unseen scenario's correction", args.unseen_corrections)) if given]
    page = [
        f"# Choosing {' and '.join(chosen_what)} on a held-out known scenario", "",
        "Generated by `.venv/bin/python benchmarks/held_out_scenario.py` "
        f"(`--scenario {args.scenario} --launch {launch} --rates{''.join(f' {r:g}' for r in args.rates)} --seeds "
        f"{' '.join(map(str, args.seeds))} --threads {args.threads}{' --references' if args.references else ''}"
        f"{corrections}"
        f"{''.join(f' --default {d}' for d in args.defaults)}`) with msmt's source {source_hash()[:12]} on {describe_cpu()}.", "",
        f"The forecasting study's world ({size['advertisers']:,} advertisers × {size['days']} days, seed {size['seed']}) "
        f"with every row of `{args.scenario}` removed from training, validation and test; "
        f"`{args.scenario}` then plays a new scenario launched on day {launch}: its {n_rows:,} rows from then to the "
        "validation split's last day, scored from launch + 7 days on with K days of its own history (K = 0: none), the "
        "other scenarios' rows as context — the forecasting study's new-scenario protocol on days before the test split. "
        + ("Every `m2m +cross-section` here reads the cross-section channel (`panel.cross_section_keys: [scenario]`) and they "
           "differ only in `model.m2m.scenario_dropout` (p). " if args.rates else "")
        + ("`m2m` is the simulator config's M2M (no channel), `naive_mean` the trailing mean. " if args.references else "")
        + "NMAE of the point forecast (lower is better), mean ± std over seeds.", "",
    ]
    for k in NEW_SCENARIO_K:
        page += [f"**K = {k}**", "", "| model | " + " | ".join(f"{t} NMAE" for t in COUNTS) + " |", "|---" * (len(COUNTS) + 1) + "|"]
        for v in chosen:
            if (v.name, k, COUNTS[0]) in cell.index and not (k == 0 and v.name == NAIVE):  # no history: no naive forecast
                page.append(f"| {v.name} | " + " | ".join(
                    f"{cell.loc[(v.name, k, t), 'mean']:.4f} ± {cell.loc[(v.name, k, t), 'std']:.4f}" for t in COUNTS) + " |")
        page.append("")
    if best is not None:
        page += [f"**Chosen**: {best} (the lowest mean of the three count NMAEs at K = 3: "
                 + ", ".join(f"{n.split('p=')[1]}: {m:.4f}" for n, m in mean3.items()) + ")."]
        for name, what in ((NO_CHANNEL, "M2M without the channel"), (NAIVE, "The trailing mean")):
            if (name, 3, COUNTS[0]) in cell.index:
                page[-1] += f" {what}: {np.mean([cell.loc[(name, 3, t), 'mean'] for t in COUNTS]):.4f}."
        page.append("")
    if args.unseen_corrections:
        naive = cell if (NAIVE, 3, COUNTS[0]) in cell.index else None
        section, w, scan = correction_section(runs, held, args.unseen_corrections, naive)
        write_table(scan, tables / "unseen_correction.csv")
        page += section
        _log(f"unseen_scenario_correction: chosen w = {w:g}")
    atomic_write_text(args.out, "\n".join(page))
    _log(f"wrote {args.out}" + (f"; chosen {best}" if best else ""))


if __name__ == "__main__":
    main()
