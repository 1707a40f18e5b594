"""Which setting a split chooses, read from published records by the rule that chooses the online offset.

    .venv/bin/python benchmarks/setting_choice.py [RECORDS ...] [--runs SUFFIX DIR ...] --models NAME [NAME ...]
        --settings LABEL=SUFFIX [LABEL=SUFFIX ...] [--split val] [--tasks TASK ...] [--per-model LABEL:KEY=VALUE ...]

RECORDS are records files study pages publish beside themselves (``docs/results/<page>/online_records.csv``:
one row per variant, seed, split, scenario, task and metric); several are read as one (a variant in two of
them must have the same rows there, e.g. the naive forecasters). ``--runs SUFFIX DIR`` reads a ``msmt bench``
grid's runs of one dataset instead (``DIR`` = ``OUT/runs/<dataset>``: ``<model>/seed<N>/metrics.json``), each
model's variant named ``<model><SUFFIX>``: two grids of the same models, one with a setting and one without,
are two settings. A setting's variant of a model is named
``<model><SUFFIX>`` (``m2m offset=blend +ema3``: model ``m2m``, suffix `` offset=blend +ema3``). Per (model,
task) the setting with the lowest overall NMAE on ``--split`` (mean over the seeds) gets the pair; the one
with the most pairs is chosen, a tie going to the setting listed first
(``msmt.experiments.forecasting_page.offset_wins``, the forecasting study's rule for the online offset).
Printed: each setting's pairs, then every setting against every other head to head (in how many pairs its
mean is the lower), then each model's own choice, the same rule over the model's tasks alone
(``msmt.experiments.setting_choice.per_model_choice``). ``--per-model LABEL:KEY=VALUE`` names the override a
setting stands for (``ema3:train.ema_epochs=3``; repeat it for more keys or settings): the script then also
prints the ``per_model`` block that, added to the config, trains each model with its own choice (a model
choosing a setting without overrides, the config's own, gets no entry). Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from msmt.experiments.bench import prefixed_overrides
from msmt.experiments.forecasting import summarise
from msmt.experiments.forecasting_page import offset_wins, values
from msmt.experiments.setting_choice import per_model_choice, per_model_entries
from msmt.spec.config import dump_yaml
from msmt.spec.errors import ConfigError

KEYS = ["variant", "seed", "split", "scenario", "task", "metric"]


def read_records(paths: list[Path], runs: list[tuple[str, Path]] = ()) -> pd.DataFrame:
    """The records of every file and bench folder, a row found in several kept once; one line and exit where a
    file is missing or two sources disagree on a row."""
    frames = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: no such records file")
        frames.append(pd.read_csv(path))
    frames += [bench_records(suffix, folder) for suffix, folder in runs]
    where = sources(paths, runs)
    records = pd.concat(frames, ignore_index=True).drop_duplicates()
    clash = records[records.duplicated(KEYS, keep=False)]
    if not clash.empty:
        row = clash.iloc[0]
        raise SystemExit(f"{where}: the sources disagree on {row['variant']!r} seed {row['seed']} "
                         f"{row['split']} {row['task']} {row['metric']}")
    return records


def sources(paths: list[Path], runs: list[tuple[str, Path]]) -> str:
    """The records files and bench folders read, as one line names them."""
    return ", ".join(map(str, [*paths, *(folder for _, folder in runs)]))


def bench_records(suffix: str, folder: Path) -> pd.DataFrame:
    """The overall metrics of a ``msmt bench`` grid's runs of one dataset (``folder/<model>/seed<N>/metrics.json``)
    as records, each variant named ``<model><suffix>``; one line and exit where there are none."""
    rows = []
    for path in sorted(folder.glob("*/seed*/metrics.json")):
        seed = path.parent.name.removeprefix("seed")
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"{path}: not a readable metrics file ({error})") from None
        if not seed.isdigit():
            raise SystemExit(f"{path.parent}: not a bench seed folder (seed<N>)")
        variant, seed = path.parent.parent.name + suffix, int(seed)
        splits = {k: v for k, v in metrics.items() if isinstance(v, dict) and "overall" in v}
        for split, block in splits.items():  # a LightGBM cell also records its trees and seconds
            for task, scores in block["overall"].items():
                rows += [dict(variant=variant, seed=seed, split=split, scenario="overall", task=task, metric=metric,
                              value=float(value), rows=scores["rows"])
                         for metric, value in scores.items() if metric != "rows" and value is not None]
    if not rows:
        raise SystemExit(f"{folder}: no runs (--runs takes a bench grid's runs/<dataset> folder: "
                         "<model>/seed<N>/metrics.json)")
    return pd.DataFrame(rows)


def parse_settings(items: list[str]) -> dict[str, str]:
    """``LABEL=SUFFIX`` items as {label: suffix}; the suffix keeps the space it starts with (``' offset=blend'``)."""
    settings = {}
    for item in items:
        label, sep, suffix = item.partition("=")
        if not sep or not label or label != label.strip() or " " in label:
            raise SystemExit(f"--settings {item!r}: expected LABEL=SUFFIX, a label without spaces and the suffix with "
                             "the space it starts with (e.g. 'blend+ema3= offset=blend +ema3')")
        settings[label] = suffix
    return settings


def parse_per_model(items: list[str], settings: dict[str, str]) -> dict[str, list[str]]:
    """``LABEL:KEY=VALUE`` items as {label: [KEY=VALUE, ...]}; one line and exit for a malformed item or a label
    that is not a setting."""
    try:
        return prefixed_overrides(items, list(settings), "--per-model", "LABEL", "'{name}' is not a setting (--settings: {names})")
    except ConfigError as error:
        raise SystemExit(str(error)) from None


def head_to_head(v: dict, models: list[str], tasks: list[str], settings: dict[str, str], split: str) -> list[str]:
    """A markdown table: row setting against column setting, in how many (model, task) pairs the row's mean is
    strictly lower (an equal mean counts for neither: a refit's validation numbers are its first fit's)."""
    def mean(setting: str, model: str, task: str) -> float:
        return v[(model + settings[setting], split, "overall", task, "nmae")][0]

    labels = list(settings)
    lines = ["| lower than → | " + " | ".join(f"`{b}`" for b in labels) + " |", "|---|" + "---:|" * len(labels)]
    for a in labels:
        cells = ["–" if a == b else str(sum(mean(a, m, t) < mean(b, m, t) for m in models for t in tasks)) for b in labels]
        lines.append(f"| `{a}` | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=Path, nargs="*", help="study pages' records CSVs")
    ap.add_argument("--runs", nargs=2, action="append", default=[], metavar=("SUFFIX", "DIR"),
                    help="a bench grid's runs of one dataset (OUT/runs/<dataset>), its variants named <model>SUFFIX")
    ap.add_argument("--models", nargs="+", required=True, help="the models, as their variants' names start")
    ap.add_argument("--settings", nargs="+", required=True, help="LABEL=SUFFIX: the suffix a setting's variants carry")
    ap.add_argument("--split", default="val")
    ap.add_argument("--tasks", nargs="+", default=None, help="default: every task of the records")
    ap.add_argument("--per-model", action="append", default=[], metavar="LABEL:KEY=VALUE",
                    help="the override setting LABEL stands for: prints the config's per_model block of each model's choice")
    args = ap.parse_args()
    if not args.records and not args.runs:
        raise SystemExit("setting_choice: give records files, --runs SUFFIX DIR, or both")
    runs = [(suffix, Path(folder)) for suffix, folder in args.runs]
    records = read_records(args.records, runs)
    settings = parse_settings(args.settings)
    overrides = parse_per_model(args.per_model, settings)
    where = sources(args.records, runs)
    missing = sorted({m + s for m in args.models for s in settings.values()} - set(records["variant"]))
    if missing:
        raise SystemExit(f"{where}: no variant {missing}")
    rows = records[(records["split"] == args.split) & (records["scenario"] == "overall") & (records["metric"] == "nmae")]
    if rows.empty:
        raise SystemExit(f"{where}: no overall nmae rows on split {args.split!r}")
    tasks = args.tasks or list(dict.fromkeys(rows["task"]))
    v = values(summarise(rows))
    wins = offset_wins(v, args.models, tasks, settings, args.split)
    chosen = max(wins, key=wins.get)
    print(f"{args.split}: the lowest mean NMAE in how many of the {len(args.models) * len(tasks)} (model, task) pairs: "
          + ", ".join(f"`{s}` {n}" for s, n in wins.items()) + f"; chosen: `{chosen}`")
    print()
    print("\n".join(head_to_head(v, args.models, tasks, settings, args.split)))
    print()
    choice = per_model_choice(v, args.models, tasks, settings, args.split)
    print("each model's own choice: " + ", ".join(f"{m} `{s}`" for m, s in choice.items()))
    if overrides:
        print()
        print(dump_yaml({"per_model": per_model_entries(choice, overrides)}), end="")


if __name__ == "__main__":
    main()
