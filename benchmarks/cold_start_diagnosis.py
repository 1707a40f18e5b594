"""Why adaptation does not pay off (issue 18): the cold-start study's new advertisers rescored two more ways on
the same runs, and its MovieLens new users read from its records.

    .venv/bin/python benchmarks/cold_start_diagnosis.py --seeds 0 1 2 3 4 --threads 1 --work runs/cold_start
        [--ks 5 10] [--cut-day 21] [--groups 100] [--advertisers 600] [--days 60] [--out docs/results/cold_start_diagnosis.md]

1. **The oracle and smaller personal blocks** on the page's split: the simulator's ``true_<task>`` (how far any
   forecaster could go), and plain fine-tuning of the task heads' output layer, or of its bias alone (a
   per-advertiser log-rate offset per task), against the default block (the whole heads).
2. **Fresher support**: support = each advertiser's K rows right before day ``--cut-day`` and query = its rows
   from that day on (how meta-training's time-ordered episodes draw them) against the page's support = its
   first K rows: every method of the page on both.
3. **MovieLens new users**: how far each method moves a user's click AUC from the base at all, and meta − fine-tuning
   seed by seed, from the study's records (no rescoring).

Both go through :func:`msmt.experiments.cold_start_score.score_state`, the page's scoring. The runs are those of
``benchmarks/cold_start.py`` with the same ``--work``, ``--groups``, ``--advertisers``, ``--days`` and ``--threads``
(its default K values): reused when present, trained when not (about 20 min per seed). Scoring takes about 8 min per
seed on one core; a seed's scores are kept beside its runs, so seeds can be scored by separate processes first.

A diagnosis in parts (as ``benchmarks/cold_start.py``'s): each part with its own ``--seeds`` and ``--out`` writes its
per-seed tables and ``study.json`` beside its page, and ``--merge PART_TABLES... --out PAGE`` writes the page from them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from msmt.data.io import atomic_write_text, write_table
from msmt.experiments.cold_start_page import fmt_interval
from msmt.experiments.cold_start_score import first_k, newer_than_runs, score_state, study_records
from msmt.experiments.cold_start_stats import seed_means, summary
from msmt.meta.algorithms import numeric_time
from msmt.meta.episodes import GroupIndex, group_values
from msmt.rundir.layout import load_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cold_start  # noqa: E402  (the study's command line: the same runs)

REPO = Path(__file__).resolve().parents[1]
STATE, GROUP, TIME, TASK = "new advertisers", "advertiser_id", "day", "clicks"
# personal blocks for section 2: globs over M2M's parameter names (its heads: towers.<task>.net.{0,2})
BLOCKS = {"finetune": ["auto"], "finetune (heads' output layer)": ["towers.*.net.2.*"], "finetune (output bias)": ["towers.*.net.2.bias"]}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 10], help="support rows per advertiser (scored)")
    ap.add_argument("--cut-day", type=int, default=21, help="section 3: support before this day, query from it")
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--advertisers", type=int, default=600)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "cold_start")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "cold_start_diagnosis.md")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="TABLES",
                    help="write the page from parts (each part's cold_start_diagnosis/ folder: its per-seed tables), running nothing")
    return ap.parse_args(argv)


def rows_before(cut_day: int):
    """A split: each advertiser's k rows right before ``cut_day``, and its rows from that day on
    (advertisers with fewer than k rows before it, or none from it, are left out)."""

    def split(frame: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = GroupIndex(group_values(frame, GROUP), numeric_time(frame, TIME))
        day = frame[TIME].to_numpy()
        support, query = [], []
        for rows in index.rows:
            r = rows.numpy()
            cut = int(np.searchsorted(day[r], cut_day))  # the group's rows are in time order
            if k <= cut < len(r):
                support.append(r[cut - k : cut])
                query.append(r[cut:])
        return np.concatenate(support), np.concatenate(query)

    return split


def study_args(args, worlds: str) -> list[str]:
    """The cold-start command line of the same runs (``benchmarks/cold_start.py``), for ``worlds``."""
    return ["--worlds", worlds, "--seeds", *map(str, args.seeds), "--groups", str(args.groups), "--advertisers", str(args.advertisers),
            "--days", str(args.days), "--threads", str(args.threads), "--work", str(args.work)]


def records(args) -> pd.DataFrame:
    """Sections 1 and 2: (state = the split, seed, K, method, group, task, metric, value, rows) on the
    new advertisers; one seed's records kept beside its runs and reused while they are (so seeds can be
    scored by separate processes)."""
    study = cold_start.build_study(cold_start.parse_args(study_args(args, "advertisers")))
    world = study.worlds[0]
    sections = (("first K rows", first_k(GROUP, TIME), BLOCKS), (f"K rows before day {args.cut_day}", rows_before(args.cut_day), {"finetune": ["auto"]}))
    out = []
    for seed in study.seeds:
        held, run_dirs = study.prepare(world, seed)
        key = hashlib.sha1(json.dumps([held.held, args.ks, args.cut_day, len(held.states[STATE])]).encode()).hexdigest()[:10]
        cached = args.work / "runs" / world.name / f"seed{seed}" / f"diagnosis-{key}.csv"
        if newer_than_runs(cached, run_dirs.values()):
            out.append(pd.read_csv(cached, dtype={"group": str}))
            continue
        runs = {m: load_run(d) for m, d in run_dirs.items()}
        parts = []
        for section, split, personal in sections:
            study.log(f"scoring seed {seed}: {section}, K = {args.ks}")
            parts.append(score_state(runs, held.states[STATE], GROUP, args.ks, split, personal).assign(state=section, seed=seed))
        write_table(part := pd.concat(parts, ignore_index=True), cached)
        out.append(part)
    return pd.concat(out, ignore_index=True)


def movielens_records(args) -> pd.DataFrame:
    """The cold-start study's own records of MovieLens new users (its cache, same ``--work``; scored
    when absent)."""
    study = cold_start.build_study(cold_start.parse_args(study_args(args, "movielens_users")))
    rec = study_records(study)
    return rec[rec["state"] == "new users"]


def movement_section(moved: pd.DataFrame, vs_finetune: pd.DataFrame, ks, focus: int = 10) -> list[str]:
    """Section 3's Markdown from per-seed tables of MovieLens new users' click AUC: ``moved`` (mean
    |method − base| over a seed's users) given its interval over seeds, and ``vs_finetune`` (method −
    fine-tuning) at ``focus``, seed by seed."""
    methods = [m for m in ("finetune", *cold_start.META) if m in set(moved["method"])]
    ks = [k for k in ks if k in set(moved["K"])]
    over = cold_start.over_seeds(moved)
    lines = ["| mean over users and seeds of abs(method − base), click AUC | " + " | ".join(f"K={k}" for k in ks) + " |",
             "|---|" + "---|" * len(ks)]
    for m in methods:
        cells = [over[(over.method == m) & (over.K == k)]["mean"] for k in ks]
        lines.append(f"| {m} | " + " | ".join(f"{c.iloc[0]:.4f}" if len(c) else "–" for c in cells) + " |")
    by_seed = vs_finetune[vs_finetune.K == focus]
    seeds = sorted(by_seed["seed"].unique())
    lines += ["", f"| method − finetune, click AUC at K = {focus}, mean over users | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for m in [m for m in methods if m != "finetune"] + ["base"]:
        cells = [by_seed[(by_seed.method == m) & (by_seed.seed == s)]["diff"] for s in seeds]
        lines.append(f"| {m} | " + " | ".join(f"{c.iloc[0]:+.4f}" if len(c) else "–" for c in cells) + " |")
    return lines


def users_by_seed(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Section 3's per-seed tables (click AUC of MovieLens new users): |method − base| and method − fine-tuning."""
    rec = movielens_records(args)
    rec = rec[(rec.task == "click") & (rec.metric == "auc")]
    return (cold_start.per_seed_diffs(rec, ("base",), absolute=True), cold_start.per_seed_diffs(rec, ("finetune",)))


def cell(summ: pd.DataFrame, state: str, k: int, method: str, metric: str) -> str:
    row = summ[(summ.state == state) & (summ.K == k) & (summ.method == method) & (summ.task == TASK) & (summ.metric == metric)]
    return fmt_interval(*row[["mean", "low", "high"]].iloc[0]) if len(row) else "–"


def table(summ: pd.DataFrame, state: str, ks, methods) -> list[str]:
    head = [f"per advertiser, K={k}" for k in ks] + [f"pooled, K={k}" for k in ks]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for m in methods:
        values = [cell(summ, state, k, m, "nmae") for k in ks] + [cell(summ, state, k, m, "nmae_pooled") for k in ks]
        lines.append(f"| {m} | " + " | ".join(values) + " |")
    return lines


def diff_table(diffs: pd.DataFrame, state: str, ks, methods, reference: str) -> list[str]:
    lines = [f"| method − {reference} | " + " | ".join(f"per advertiser, K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    part = diffs[(diffs.state == state) & (diffs.reference == reference) & (diffs.task == TASK) & (diffs.metric == "nmae")]
    for m in methods:
        row = [part[(part.method == m) & (part.K == k)] for k in ks]
        lines.append(f"| {m} | " + " | ".join(fmt_interval(*r[["mean", "low", "high"]].iloc[0]) if len(r) else "–" for r in row) + " |")
    return lines


TABLES = ("seed_means.csv", "paired_by_seed.csv", "users_moved_by_seed.csv", "users_vs_finetune_by_seed.csv")


def write_page(args, provenance: str, config: dict, seeds, t: dict[str, pd.DataFrame]) -> None:
    """The page and its summary tables from the per-seed tables ``t`` (a whole diagnosis's or its merged parts')."""
    summ, diffs = summary(t["seed_means.csv"]), cold_start.over_seeds(t["paired_by_seed.csv"])
    tables = args.out.parent / "cold_start_diagnosis"
    write_table(summ, tables / "summary.csv")
    write_table(diffs, tables / "paired.csv")
    ks, first, before = config["ks"], "first K rows", f"K rows before day {config['cut_day']}"
    meta = [m for m in cold_start.META if m in set(t["seed_means.csv"].method)]
    lines = [
        "# Cold start on new advertisers: why adaptation does not pay off", "",
        f"{provenance} The runs are those of [`cold_start.md`](cold_start.md) (its command, same `--work`); "
        f"{len(seeds)} seeds, up to {config['groups']} held-out advertisers per seed; clicks NMAE = Σ|y − ŷ| / Σ y per "
        "advertiser (averaged over advertisers) and pooled over all query rows; mean over seeds [95% t-interval]. "
        f"Numbers behind the tables: [`cold_start_diagnosis/`](cold_start_diagnosis/).", "",
        "## 1. The oracle and smaller personal blocks (the page's split: support = an advertiser's first K rows)", "",
        "`naive_mean`: the trailing-mean forecaster; `naive`: the advertiser's mean of its support rows in the query "
        "row's scenario. `oracle`: the simulator's expected count given the latent state (the best any forecaster can do). "
        "`finetune (heads' output layer)` / `finetune (output bias)`: the base's fine-tuning with only that part of "
        "its task heads personal (the page's `finetune` adapts the whole heads).", "",
        *table(summ, first, ks, ["oracle", "naive_mean", "naive", "base", *BLOCKS, *meta]), "",
        *diff_table(diffs, first, ks, [*list(BLOCKS)[1:], *meta], "finetune"), "",
        f"## 2. Fresher support: the K rows right before day {config['cut_day']}, query from that day on", "",
        *table(summ, before, ks, ["oracle", "naive_mean", "naive", "base", "finetune", *meta]), "",
        *diff_table(diffs, before, ks, ["finetune", *meta], "base"), "",
        "## 3. MovieLens new users: how far adaptation moves a user's click AUC", "",
        "From the cold-start page's own records (its MovieLens new users, the same seeds): per user the absolute change of "
        "its query click AUC from the base's, averaged over users and seeds; then each method minus fine-tuning, per user "
        "and averaged over a seed's users, seed by seed. The page's target asks the best meta method for +0.01 over the "
        "base at K = 10.", "",
        *movement_section(t["users_moved_by_seed.csv"], t["users_vs_finetune_by_seed.csv"], cold_start.KS), "",
    ]
    atomic_write_text(args.out, "\n".join(lines) + "\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/cold_start_diagnosis.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    tables = args.out.parent / "cold_start_diagnosis"
    if args.merge:
        t, config, seeds, provenance = cold_start.merge_parts(args.merge, TABLES, tables, "a cold-start diagnosis", command)
        write_page(args, provenance, config, seeds, t)
        print(f"wrote {args.out}, seeds {seeds}")
        return
    start = time.perf_counter()
    rec = records(args)
    moved, vs_finetune = users_by_seed(args)
    t = dict(zip(TABLES, (seed_means(rec), cold_start.per_seed_diffs(rec), moved, vs_finetune)))
    minutes = (time.perf_counter() - start) / 60
    config = {"ks": list(args.ks), "cut_day": args.cut_day, "groups": args.groups, "advertisers": args.advertisers, "days": args.days}
    cold_start.write_part(tables, t, cold_start.part_info(args, command, minutes, args.seeds, config))
    write_page(args, cold_start.run_line(command, args.threads, minutes), config, args.seeds, t)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
