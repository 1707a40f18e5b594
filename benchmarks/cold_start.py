"""The cold-start protocol (docs/results/cold_start.md): warm / new users and new items on
MovieLens, new advertisers and the new scenario on the advertiser simulator; K support rows per
group; base, fine-tuning, MAML, first-order MAML, Reptile, Meta-SGD, ID warm-up and the naive
forecasts; paired differences with t-intervals over seeds; issue 18's targets checked.

Full size (the targets' scale: 5 seeds, 100 held-out groups per state; the issue sets no world size, so the
simulator world is 600 advertisers × 60 days, each advertiser active in several scenarios; about 25 min for the
MovieLens worlds and 40 min for the advertiser world on 2 free CPU threads):

    nice -n 15 .venv/bin/python benchmarks/cold_start.py --seeds 0 1 2 3 4 --groups 100 \\
        --ks 0 1 5 10 20 50 --advertisers 600 --days 60 --threads 2 --work runs/cold_start

Smoke (tiny everything, seconds): ``--smoke --out /tmp/cold_start.md``. Runs are ordinary run
directories under ``WORK`` (git-ignored), reused when the same code trained them with the same
overrides, so a stopped study continues where it stopped.

**A study in parts.** Seeds are independent, so a study can be split over processes, machines or sessions:
run each part with its own ``--seeds`` and ``--out``, then ``--merge PART_TABLES... --out PAGE`` writes the page
from the parts' per-seed tables alone (no runs needed). Every part writes beside its page ``cold_start/``:
``seed_means.csv`` and ``paired_by_seed.csv`` (per seed; the page's intervals are taken over them),
``meta_curves.csv`` and ``study.json`` (source, settings, seeds, host); the merge refuses parts whose source or
settings differ from each other or from the code merging them, or whose seeds overlap. A thin command line over
:mod:`msmt.experiments.cold_start` (worlds, held-out groups, runs), ``cold_start_score``
(adaptation and per-group measures), ``cold_start_stats`` and ``cold_start_page``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from msmt.data.io import atomic_write_text, write_table
from msmt.experiments.cold_start import KS, META, WORLDS, Study, World, meta_curves, method_overrides
from msmt.experiments.cold_start_page import render, scale_note
from msmt.experiments.cold_start_score import study_records
from msmt.experiments.cold_start_stats import CELL, paired_by_seed, seed_means, summary, t_interval
from msmt.experiments.results_page import simulator_config
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.spec.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MSMT_SHARED_DATA", REPO.parent / "shared" / "data"))
MOVIELENS = SHARED_DATA / "movielens100k_msmt" / "ml100k_msmt_train.csv"
FULL = ("nice -n 15 .venv/bin/python benchmarks/cold_start.py --seeds 0 1 2 3 4 --groups 100 --ks 0 1 5 10 20 50 "
        "--advertisers 600 --days 60 --threads 2 --work runs/cold_start")
# --smoke: tiny data and models, a few steps of everything (for tests)
SMOKE = ("train.epochs=1", "model.embedding_dim=4", "model.hidden_dims=[16]", "model.tower_dims=[8]", "meta.episodes=3",
         "meta.groups_per_episode=2", "meta.warmup_steps=2", "meta.warmup_rows=2", "meta.inner_steps=1")


def _log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2 3 4; --smoke: 0 1)")
    ap.add_argument("--groups", type=int, default=100, help="held-out groups per state and seed (fewer where the data has fewer)")
    ap.add_argument("--ks", type=int, nargs="+", default=list(KS), help="support rows per group")
    ap.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=WORLDS)
    ap.add_argument("--meta", nargs="+", default=list(META), choices=META, help="meta algorithms")
    ap.add_argument("--advertisers", type=int, default=600)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--world-seed", type=int, default=2026, help="the simulator world's seed")
    ap.add_argument("--movielens", type=Path, default=MOVIELENS, help="the MovieLens table (default: $MSMT_SHARED_DATA's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "cold_start")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "cold_start.md")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    ap.add_argument("--smoke", action="store_true", help="tiny everything (tests): 2 seeds unless --seeds, 4 groups, K 0 1 3, a 24 × 20 world")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="TABLES",
                    help="write the page from parts of one study (each part's cold_start/ folder: its per-seed tables), running nothing")
    args = ap.parse_args(argv)
    args.seeds = args.seeds or ([0, 1] if args.smoke else [0, 1, 2, 3, 4])
    if args.smoke:
        args.groups, args.ks, args.advertisers, args.days = min(args.groups, 4), [0, 1, 3], 24, 20
        args.overrides = [*SMOKE, *args.overrides]
    return args


def build_study(args) -> Study:
    worlds = []
    ml = REPO / "configs" / "movielens.yaml"
    if "movielens_users" in args.worlds:
        worlds.append(World("movielens_users", ml, "user_id", id_warmup=True))
    if "movielens_items" in args.worlds:
        worlds.append(World("movielens_items", ml, "item_id", id_warmup=True))
    new_scenario = None
    if "advertisers" in args.worlds:
        sim = simulator_config("advertiser", {"advertisers": args.advertisers, "days": args.days, "seed": args.world_seed}, args.work, "advertiser_world", _log)
        worlds.append(World("advertisers", sim, "advertiser_id", id_warmup=False, naive=True))
        new_scenario = sim.parent / "new_scenario.csv"
    extra = (f"train.num_threads={args.threads}", *args.overrides)
    return Study(worlds, args.seeds, args.groups, args.ks, args.work, args.meta, extra, args.movielens, new_scenario, _log)


def meta_line(study: Study) -> str:
    """The meta-training and adaptation settings every meta run of the study uses (from its config)."""
    world = study.worlds[0]
    m = load_experiment(world.config, method_overrides(world, study.meta[0], {}, 0, study.extra, max(study.ks))).meta
    return (f"Meta-training (after the base's training, `meta.shared` = {m.shared or 'none'}, personal = {m.personal}): "
            f"{m.episodes} episodes of {m.groups_per_episode} groups, support size drawn from [{m.support_min}, {m.support_size}] "
            f"(time-ordered episodes: `{m.episode_split}`), query ≤ {m.query_size} rows, outer {m.outer_optimizer} lr {m.outer_lr:g}, "
            f"outer gradient clipped to norm {m.outer_max_grad_norm}; "
            f"adaptation (every method): {m.inner_steps} inner steps of lr {m.inner_lr:g}, gradient clip {m.inner_max_grad_norm}, "
            f"up to {m.inner_backtrack} halvings of a step that would raise the support loss; "
            f"ID warm-up: {m.warmup_steps} steps of {m.warmup_rows} + {m.warmup_rows} rows.")


REFERENCES = ("finetune", "base")
TABLES = ("seed_means.csv", "paired_by_seed.csv", "meta_curves.csv")  # a part's per-seed tables, in write_page's order


def per_seed_diffs(records: pd.DataFrame, references=REFERENCES, absolute: bool = False) -> pd.DataFrame:
    """Per seed, ``method − reference`` averaged over groups (:func:`paired_by_seed`) for each reference,
    with a ``reference`` column: what a study's parts keep so that their intervals can be taken together.
    Seed-major, as parts concatenate."""
    both = pd.concat([paired_by_seed(records, r, absolute=absolute).assign(reference=r) for r in references], ignore_index=True)
    return both.sort_values("seed", kind="stable", ignore_index=True)


def over_seeds(per_seed: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """:func:`per_seed_diffs`'s rows given their t-interval over seeds: one row per (state, K, task,
    metric, method, reference), as :func:`msmt.experiments.cold_start_stats.paired` gives from the records."""
    rows = []
    for key, part in per_seed.groupby([*CELL, "method", "reference"], sort=False):
        mean, low, high, n = t_interval(part["diff"], level)
        rows.append(dict(zip([*CELL, "method", "reference"], key), mean=mean, low=low, high=high, seeds=n, groups=float(part["groups"].mean())))
    return pd.DataFrame(rows)


def part_info(args, command: str, minutes: float, seeds, extra: dict) -> dict:
    """``study.json`` of one part: what must agree for parts to merge (source, settings) and what the page
    names per part (command, seeds, host, threads, minutes)."""
    return {"source": source_hash(), "settings": extra, "seeds": sorted(seeds), "command": command, "minutes": round(minutes, 1),
            "host": {"cpu": describe_cpu(), "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__}}


def read_parts(folders, names, what: str) -> tuple[list[dict], dict[str, pd.DataFrame]]:
    """Each part's ``study.json`` (a merged page's folder counts as its parts, so a page can take in one more
    part) and its tables ``names`` concatenated in seed order; SystemExit with one
    line naming the folder and the problem when a part is missing, from other code or settings, or
    repeats a seed."""
    infos, tables, seen, source = [], {n: [] for n in names}, {}, source_hash()
    for folder in folders:
        path = Path(folder) / "study.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (not the tables folder of a part of {what})")
        info = json.loads(path.read_text())
        if info["source"] != source:
            raise SystemExit(f"{path}: source {info['source'][:12]} is not this code's ({source[:12]}); rerun that part")
        if infos and info["settings"] != infos[0]["settings"]:
            raise SystemExit(f"{path}: settings differ from {folders[0]}'s: {info['settings']} against {infos[0]['settings']}")
        for seed in info["seeds"]:
            if seed in seen:
                raise SystemExit(f"{path}: seed {seed} is also in {seen[seed]}")
            seen[seed] = folder
        for n in names:
            if not (Path(folder) / n).is_file():
                raise SystemExit(f"{Path(folder) / n}: missing")
            tables[n].append(pd.read_csv(Path(folder) / n, dtype={"group": str}))
        infos += info.get("parts", [info])  # a merged page's tables are a part too: its parts are named
    return infos, {n: pd.concat(t, ignore_index=True).sort_values("seed", kind="stable", ignore_index=True) for n, t in tables.items()}


def write_part(tables: Path, frames: dict[str, pd.DataFrame], info: dict) -> None:
    """A part's (or a merged page's) per-seed tables and its ``study.json`` into ``tables``."""
    for name, frame in frames.items():
        write_table(frame, tables / name)
    atomic_write_text(tables / "study.json", json.dumps(info, indent=1) + "\n")


def merge_parts(folders, names, tables: Path, what: str, command: str) -> tuple[dict[str, pd.DataFrame], dict, list[int], str]:
    """:func:`read_parts`, written to ``tables`` as one part of its own: (tables, settings, seeds, the header's
    provenance line)."""
    infos, t = read_parts(folders, names, what)
    seeds = sorted(s for i in infos for s in i["seeds"])
    write_part(tables, t, {"source": infos[0]["source"], "settings": infos[0]["settings"], "seeds": seeds, "command": command, "parts": infos})
    return t, infos[0]["settings"], seeds, parts_line(infos, command)


def run_line(command: str, threads: int, minutes: float) -> str:
    """The header's provenance line of a page written by one run."""
    return (f"Generated by `{command}` with msmt's source {source_hash()[:12]} on {describe_cpu()}, {threads} threads; "
            f"{minutes:.1f} min including reused runs.")


def parts_line(infos: list[dict], merge_command: str) -> str:
    """The header's provenance of a merged page: each part's command, seeds, host and time."""
    parts = "; ".join(f"`{i['command']}` (seeds {i['seeds']}, {i['host']['cpu']}, {i['host']['threads']} threads, {i['minutes']} min)"
                      for i in sorted(infos, key=lambda i: min(i["seeds"], default=0)))
    return (f"Generated by `{merge_command}` with msmt's source {infos[0]['source'][:12]} from {len(infos)} parts of one study, each "
            f"run by the same code: {parts}.")


def settings(args, study: Study) -> dict:
    """What every part of one study must share: the protocol's arguments and the configs' content (the
    MovieLens config without its file paths, which differ between machines; the meta settings)."""
    cfg = load_experiment(REPO / "configs" / "movielens.yaml").model_dump(mode="json")
    cfg["dataset"]["files"] = None
    return {"groups": args.groups, "ks": list(args.ks), "worlds": list(args.worlds), "meta": list(args.meta), "advertisers": args.advertisers,
            "days": args.days, "world_seed": args.world_seed, "movielens": Path(args.movielens).name, "overrides": list(args.overrides),
            "smoke": args.smoke, "movielens_config": hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12],
            "meta_line": meta_line(study)}


def write_page(out: Path, provenance: str, config: dict, seeds, means: pd.DataFrame, per_seed: pd.DataFrame, curves: pd.DataFrame) -> None:
    """The page and its tables from the per-seed tables (a whole study's or its merged parts')."""
    summ, diffs = summary(means), over_seeds(per_seed)
    tables = out.parent / "cold_start"
    write_table(summ, tables / "summary.csv")
    write_table(diffs, tables / "paired.csv")
    header = [
        "# Cold start: new users, items, advertisers and scenarios from K rows", "",
        scale_note(len(seeds), config["groups"], config["ks"], config["worlds"], config["smoke"]), "",
        f"{provenance} Full size: `{FULL}`. Numbers behind every table: [`{tables.name}/`]({tables.name}/).", "",
        "Per group, rows in time order: support = its earliest K rows, query = its rows after them (a group counts at K "
        "only with more than K rows). Methods, scored on the same query rows: `base` (no adaptation); `finetune` (the base's "
        "personal block, gradient steps on the support rows, `meta.inner_steps` × `meta.inner_lr`, backtracked); `maml`, `fomaml`, "
        "`reptile`, `metasgd` (meta-trained after the same base training, adapted the same way; Meta-SGD with its learned rates); "
        "`idwarmup` (Meta-Embedding's generated ID embedding, fine-tuned like `finetune` for K > 0); on the simulator `naive_mean` "
        "(the trailing-mean forecaster) and `naive` (each advertiser's mean of its support rows in the query row's scenario, "
        "over all its support rows when it has none there), and `oracle` (the simulator's expected value given its latent "
        "state, `true_<task>`: how far any forecaster could go; black dashed in the plots). Measures per group (AUC: groups with both "
        "classes; NMAE = Σ|y − ŷ| / Σ y), averaged over groups within a seed (the new scenario's `active` AUC is pooled over its query rows: an "
        "advertiser has a few days there, rarely both classes); intervals are 95% Student-t over seeds; paired "
        "differences are per group on the same rows, averaged per seed. The simulator's model reads no advertiser ID, so ID "
        "warm-up applies to MovieLens only.", "",
        config["meta_line"],
    ]
    atomic_write_text(out, render(header, summ, diffs, means, out, curves))


def merge(args, command: str) -> None:
    t, config, seeds, provenance = merge_parts(args.merge, TABLES, args.out.parent / "cold_start", "a cold-start study", command)
    write_page(args.out, provenance, config, seeds, *t.values())
    _log(f"wrote {args.out}, seeds {seeds}")


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/cold_start.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.merge:
        return merge(args, command)
    start = time.perf_counter()
    study = build_study(args)
    records = study_records(study)
    means, per_seed = seed_means(records), per_seed_diffs(records)
    curves = meta_curves(study).sort_values("seed", kind="stable", ignore_index=True)  # seed-major, as parts concatenate
    minutes = (time.perf_counter() - start) / 60
    config = settings(args, study)
    write_part(args.out.parent / "cold_start", dict(zip(TABLES, (means, per_seed, curves))), part_info(args, command, minutes, args.seeds, config))
    write_page(args.out, run_line(command, args.threads, minutes), config, args.seeds, means, per_seed, curves)
    _log(f"wrote {args.out} ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
