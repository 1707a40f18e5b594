"""Why adaptation does not pay off on new advertisers (issue 18's advertiser target): the cold-start
study's new-advertiser state (docs/results/cold_start.md) rescored three ways, on the same runs.

    .venv/bin/python benchmarks/cold_start_diagnosis.py --seeds 0 1 2 3 4 --threads 1 --work runs/cold_start
        [--ks 5 10] [--cut-day 21] [--groups 100] [--advertisers 600] [--days 60] [--out docs/results/cold_start_diagnosis.md]

1. **The oracle** on the page's query rows: the simulator's ``true_<task>``, the expected count given the
   latent state (:mod:`msmt.synth.advertiser`): how far any forecaster could go.
2. **Smaller personal blocks**: plain fine-tuning of the task heads' output layer, or of its bias alone (a
   per-advertiser log-rate offset per task), against the default block (the whole heads).
3. **Fresher support**: support = each advertiser's K rows right before day ``--cut-day`` and query = its rows
   from that day on (how meta-training's time-ordered episodes draw them) against the page's support = its
   first K rows: every method of the page on both.

The runs are those of ``benchmarks/cold_start.py`` with the same ``--work``, ``--groups``, ``--advertisers``,
``--days`` and ``--threads`` (its default K values): reused when present, trained when not (about 20 min per
seed). Scoring takes about 8 min per seed on one core.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from msmt.data.io import atomic_write_text, write_table
from msmt.data.tensorize import encode_frame
from msmt.experiments.cold_start_score import Blocks, group_measures, label_table, pooled_measures, splits_at, support_means
from msmt.experiments.cold_start_stats import paired, seed_means, summary
from msmt.meta import adapt_groups, split_parameters
from msmt.meta.algorithms import numeric_time
from msmt.meta.episodes import GroupIndex, group_values
from msmt.rundir.layout import LoadedRun, load_meta_rates, load_run
from msmt.rundir.provenance import source_hash
from msmt.scoring.predict import predict
from msmt.spec.batch import take

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
    return ap.parse_args(argv)


def first_rows(frame: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The page's split: each advertiser's first k rows, then the rest."""
    return splits_at(frame, GROUP, TIME, k)


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


def score(runs: dict[str, LoadedRun], frame: pd.DataFrame, encoded: dict, split, k: int, personal: dict[str, list[str]]) -> list[dict]:
    """Records (method, group, task, metric, value, rows) of each run adapted on ``split``'s support rows
    and scored on its query rows, as :func:`msmt.experiments.cold_start_score.score_state` scores one K.
    ``personal``: {method name: meta.personal} of the base run's fine-tuning variants."""
    s_rows, q_rows = split(frame, k)
    labels, mask = encoded["labels"].numpy(), encoded["task_mask"].numpy()
    groups = group_values(frame, GROUP)
    query, support = take(encoded, torch.from_numpy(q_rows)), take(encoded, torch.from_numpy(s_rows))
    tasks = runs["base"].schema.spec.tasks
    methods = [(name, runs["base"], blocks) for name, blocks in personal.items()]
    methods += [(m, run, None) for m, run in runs.items()]
    out = []
    for name, run, block in methods:
        blocks = {}
        if name not in ("base", "naive_mean"):  # forecasts without adaptation
            meta = run.config.meta if block is None else run.config.meta.model_copy(update={"personal": block})
            rates = load_meta_rates(run.path) if name == "metasgd" else None
            blocks, _ = adapt_groups(run.model, split_parameters(run.model, meta), frame.iloc[s_rows].reset_index(drop=True),
                                     support, GROUP, tasks, meta, rates)
        preds = predict(run.model, query, groups=groups[q_rows] if blocks else None, blocks=Blocks(blocks) if blocks else None).values
        scored = group_measures(groups[q_rows], labels[q_rows], mask[q_rows], preds, tasks) + pooled_measures(labels[q_rows], mask[q_rows], preds, tasks)
        out += [dict(method=name, **r) for r in scored]
    table = label_table(groups, encoded["scenario"].numpy(), labels, mask)
    naive = support_means(table.iloc[s_rows], table.iloc[q_rows], tasks)
    out += [dict(method="naive", **r) for r in group_measures(groups[q_rows], labels[q_rows], mask[q_rows], naive, tasks)
            + pooled_measures(labels[q_rows], mask[q_rows], naive, tasks)]
    truth = {t.name: frame[f"true_{t.label}"].to_numpy()[q_rows] for t in tasks if f"true_{t.label}" in frame.columns}
    scored = group_measures(groups[q_rows], labels[q_rows], mask[q_rows], truth, tasks) + pooled_measures(labels[q_rows], mask[q_rows], truth, tasks)
    return out + [dict(method="oracle", **r) for r in scored]


def records(args) -> pd.DataFrame:
    study = cold_start.build_study(cold_start.parse_args([
        "--worlds", "advertisers", "--seeds", *map(str, args.seeds), "--groups", str(args.groups),
        "--advertisers", str(args.advertisers), "--days", str(args.days), "--threads", str(args.threads), "--work", str(args.work)]))
    world = study.worlds[0]
    out = []
    for seed in study.seeds:
        held, run_dirs = study.prepare(world, seed)
        runs = {m: load_run(d) for m, d in run_dirs.items()}
        frame = held.states[STATE]
        encoded = encode_frame(frame, runs["base"].schema, with_labels=True)
        for section, split, personal in (("first K rows", first_rows, BLOCKS),
                                         (f"K rows before day {args.cut_day}", rows_before(args.cut_day), {"finetune": ["auto"]})):
            for k in args.ks:
                study.log(f"scoring seed {seed}: {section}, K = {k}")
                out += [dict(state=section, seed=seed, K=k, **r) for r in score(runs, frame, encoded, split, k, personal)]
    return pd.DataFrame(out)


def fmt_interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]"


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


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rec = records(args)
    summ = summary(seed_means(rec))
    diffs = pd.concat([paired(rec, "finetune"), paired(rec, "base")], ignore_index=True)
    tables = args.out.parent / "cold_start_diagnosis"
    write_table(summ, tables / "summary.csv")
    write_table(diffs, tables / "paired.csv")
    first, before = "first K rows", f"K rows before day {args.cut_day}"
    meta = [m for m in cold_start.META if m in set(rec.method)]
    command = "python benchmarks/cold_start_diagnosis.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Cold start on new advertisers: why adaptation does not pay off", "",
        f"Generated by `{command}` with msmt's source {source_hash()[:12]}; {(time.perf_counter() - start) / 60:.1f} min "
        "including reused runs. The runs are those of [`cold_start.md`](cold_start.md) (its command, same `--work`); "
        f"{len(args.seeds)} seeds, up to {args.groups} held-out advertisers per seed; clicks NMAE = Σ|y − ŷ| / Σ y per "
        "advertiser (averaged over advertisers) and pooled over all query rows; mean over seeds [95% t-interval]. "
        f"Numbers behind the tables: [`cold_start_diagnosis/`](cold_start_diagnosis/).", "",
        "## 1. The oracle and smaller personal blocks (the page's split: support = an advertiser's first K rows)", "",
        "`naive_mean`: the trailing-mean forecaster; `naive`: the advertiser's mean of its support rows in the query "
        "row's scenario. `oracle`: the simulator's expected count given the latent state (the best any forecaster can do). "
        "`finetune (heads' output layer)` / `finetune (output bias)`: the base's fine-tuning with only that part of "
        "its task heads personal (the page's `finetune` adapts the whole heads).", "",
        *table(summ, first, args.ks, ["oracle", "naive_mean", "naive", "base", *BLOCKS, *meta]), "",
        *diff_table(diffs, first, args.ks, [*list(BLOCKS)[1:], *meta], "finetune"), "",
        f"## 2. Fresher support: the K rows right before day {args.cut_day}, query from that day on", "",
        *table(summ, before, args.ks, ["oracle", "naive_mean", "naive", "base", "finetune", *meta]), "",
        *diff_table(diffs, before, args.ks, ["finetune", *meta], "base"), "",
    ]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
