"""Choosing ``model.m2m.scenario_dropout`` without the new scenario's rows (docs/results/held_out_scenario.md).

A validation split holds no new scenario, so the rate cannot be chosen on it. Instead one *known*
scenario is held out of training entirely (every row, every day) and launched on a day inside
the training period; it is scored as the forecasting study scores its new scenario — from launch
+ 7 days to the validation split's last day, with K = 0 / 3 / 7 of its first days as history and
the other scenarios' rows as context (:func:`msmt.experiments.forecasting.new_scenario_blocks`).
No day of the test split is read, and the world's real new scenario is never touched.

    .venv/bin/python benchmarks/held_out_scenario.py [--work runs/forecasting] [--scenario live_stream]
        [--launch 53] [--rates 0 0.1 0.2 0.4] [--seeds 0] [--threads 1] [--default KEY=VALUE ...]
        [--out docs/results/held_out_scenario.md]

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
from msmt.experiments.forecasting import NEW_SCENARIO_K, Study, Variant, new_scenario_blocks
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
    ap.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4], help="scenario_dropout values to compare")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "forecasting")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "held_out_scenario.md")
    ap.add_argument("--references", action="store_true", help="also train M2M without the channel and the trailing mean")
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


def scores(run: Path, held: Path) -> dict[int, dict[str, float]]:
    """{K: {count task: NMAE}} on the held-out scenario's scored rows; cached in the run folder
    with the held-out world's record (another launch day is scored again)."""
    cache = run / "held_out.json"
    record = json.loads((held.parent / "held_out.json").read_text())
    if cache.exists() and cache.stat().st_mtime >= (run / "metrics.json").stat().st_mtime:
        kept = json.loads(cache.read_text())
        if kept.get("held_out") == record:
            return {int(k): v for k, v in kept["scores"].items()}
    blocks = new_scenario_blocks(run, held)
    out = {k: {t: float(b["overall"][t]["nmae"]) for t in COUNTS} for k, b in blocks.items()}
    cache.write_text(json.dumps({"held_out": record, "scores": out}))
    return out


def main() -> None:
    args = parse_args()
    world = args.work / "data" / "world" / "experiment.yaml"
    if not world.exists():
        raise SystemExit(f"{world}: no forecasting world here; make it with benchmarks/forecasting.py or benchmarks/cross_section.py --work {args.work}")
    config, held, launch = held_out_world(world, args.scenario, args.launch)
    chosen = variants(args.rates, args.references)
    study = Study(config, args.work / "runs" / f"held_out_{args.scenario}", args.seeds, chosen,
                  (f"train.num_threads={args.threads}",), None, _log, tuple(args.defaults), args.jobs)
    runs = study.train()
    rows = [dict(variant=name, seed=seed, K=k, task=t, nmae=v)
            for (name, seed), run in runs.items() for k, tasks in scores(run, held).items() for t, v in tasks.items()]
    records = pd.DataFrame(rows)
    tables = args.out.with_suffix("")
    tables.mkdir(parents=True, exist_ok=True)
    write_table(records, tables / "records.csv")
    cell = records.groupby(["variant", "K", "task"])["nmae"].agg(["mean", "std"]).fillna(0.0)
    rated = [v.name for v in chosen if "p=" in v.name]
    mean3 = {name: float(np.mean([cell.loc[(name, 3, t), "mean"] for t in COUNTS])) for name in rated}
    best = min(mean3, key=mean3.get)
    n_rows = len(pd.read_csv(held))
    size = json.loads((world.parent / "synth.json").read_text())
    page = [
        "# Choosing the scenario dropout on a held-out known scenario", "",
        "Generated by `.venv/bin/python benchmarks/held_out_scenario.py` "
        f"(`--scenario {args.scenario} --launch {launch} --rates {' '.join(f'{r:g}' for r in args.rates)} --seeds "
        f"{' '.join(map(str, args.seeds))} --threads {args.threads}{' --references' if args.references else ''}"
        f"{''.join(f' --default {d}' for d in args.defaults)}`) with msmt's source {source_hash()[:12]} on {describe_cpu()}.", "",
        f"The forecasting study's world ({size['advertisers']:,} advertisers × {size['days']} days, seed {size['seed']}) "
        f"with every row of `{args.scenario}` removed from training, validation and test; "
        f"`{args.scenario}` then plays a new scenario launched on day {launch}: its {n_rows:,} rows from then to the "
        "validation split's last day, scored from launch + 7 days on with K days of its own history (K = 0: none), the "
        "other scenarios' rows as context — the forecasting study's new-scenario protocol on days before the test split. "
        "Every M2M here reads the cross-section channel (`panel.cross_section_keys: [scenario]`) and differs only in "
        "`model.m2m.scenario_dropout` (p). NMAE of the point forecast (lower is better), mean ± std over seeds.", "",
    ]
    for k in NEW_SCENARIO_K:
        page += [f"**K = {k}**", "", "| model | " + " | ".join(f"{t} NMAE" for t in COUNTS) + " |", "|---" * (len(COUNTS) + 1) + "|"]
        for v in chosen:
            if (v.name, k, COUNTS[0]) in cell.index and not (k == 0 and v.name == NAIVE):  # no history: no naive forecast
                page.append(f"| {v.name} | " + " | ".join(
                    f"{cell.loc[(v.name, k, t), 'mean']:.4f} ± {cell.loc[(v.name, k, t), 'std']:.4f}" for t in COUNTS) + " |")
        page.append("")
    page += [f"**Chosen**: {best} (the lowest mean of the three count NMAEs at K = 3: "
             + ", ".join(f"{n.split('p=')[1]}: {m:.4f}" for n, m in mean3.items()) + ")."]
    for name, what in ((NO_CHANNEL, "M2M without the channel"), (NAIVE, "The trailing mean")):
        if (name, 3, COUNTS[0]) in cell.index:
            page[-1] += f" {what}: {np.mean([cell.loc[(name, 3, t), 'mean'] for t in COUNTS]):.4f}."
    page.append("")
    atomic_write_text(args.out, "\n".join(page))
    _log(f"wrote {args.out}; chosen {best}")


if __name__ == "__main__":
    main()
