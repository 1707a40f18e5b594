"""Paired differences read from a study's published records: one variant minus others, by training seed.

    .venv/bin/python benchmarks/paired_records.py RECORDS --variant NAME [--against NAME ...]
        [--split test] [--scenario overall] [--metric nmae]

RECORDS is a records file a study page publishes beside itself (``docs/results/<page>/online_records.csv``,
``world_records.csv``: one row per variant, seed, split, scenario, task and metric). Prints a markdown table:
per task, ``--variant`` minus each ``--against`` variant, paired by training seed, mean and 95% Student-t
interval over the seeds, * where it excludes 0 (``msmt.experiments.forecasting_page.paired_differences``, the
tables of the pages themselves). Without ``--against``: every other variant whose name ends in the same twin
suffix as ``--variant`` (the text from its last `` +``, e.g. ``+refit``), i.e. each rival with the same option —
the comparison a twin page does not print. Nothing is trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from msmt.experiments.forecasting_page import paired_differences


def rivals(variants: list[str], variant: str) -> list[str]:
    """The variants other than ``variant`` that carry its twin suffix (all others when it has none)."""
    suffix = variant[variant.rfind(" +"):] if " +" in variant else ""
    return [v for v in variants if v != variant and v.endswith(suffix)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=Path, help="a study page's records CSV")
    ap.add_argument("--variant", required=True, help="the variant the others are subtracted from")
    ap.add_argument("--against", nargs="+", default=None, help="the variants subtracted (default: the same option's)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--scenario", default="overall")
    ap.add_argument("--metric", default="nmae")
    args = ap.parse_args()
    if not args.records.is_file():
        raise SystemExit(f"{args.records}: no such records file")
    records = pd.read_csv(args.records)
    variants = list(dict.fromkeys(records["variant"]))
    against = args.against or rivals(variants, args.variant)
    unknown = [v for v in [args.variant, *against] if v not in variants]
    if unknown:
        raise SystemExit(f"{args.records}: no variant {unknown} (variants: {variants})")
    rows = records[(records["metric"] == args.metric) & (records["split"] == args.split) & (records["scenario"] == args.scenario)]
    if rows.empty:
        raise SystemExit(f"{args.records}: no {args.metric} rows on split {args.split!r}, scenario {args.scenario!r}")
    cols = [(task, args.metric) for task in dict.fromkeys(rows["task"])]
    table = paired_differences(records, args.scenario, [(f"{args.variant} − {v}", args.variant, v) for v in against], cols,
                               f"{args.split}, `{args.scenario}`: paired by seed", split=args.split)
    print("\n".join(table))


if __name__ == "__main__":
    main()
