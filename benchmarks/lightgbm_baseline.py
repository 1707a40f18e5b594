"""LightGBM on an experiment config's own features and splits -> ``OUT/metrics.json``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lightgbm_baseline.py configs/movielens.yaml \\
        --out runs/lightgbm/movielens [--set train.seed=1 ...] [--seed 0] [--threads 1]
        [--learning-rate 0.05] [--num-leaves 31] [--n-estimators 2000] [--early-stopping 50]

A thin command line over :func:`msmt.experiments.lightgbm_baseline.lightgbm_baseline`: the same
train / validation / test split and encodings as ``msmt train CONFIG``, one tree model per task
(early-stopped on validation), and ``metrics.json`` holding the same ``val`` / ``test`` blocks as a
run directory (overall and per scenario), plus the trees per task, the seconds and the multi-valued
features left out. Needs ``pip install 'msmt[bench]'`` (lightgbm).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msmt.experiments.lightgbm_baseline import TreeSettings, lightgbm_baseline
from msmt.spec.config import load_experiment
from msmt.spec.errors import ConfigError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path, help="an experiment YAML (the dataset and its split)")
    ap.add_argument("--out", type=Path, required=True, help="folder for metrics.json")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE, as for msmt train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--learning-rate", type=float, default=TreeSettings.learning_rate)
    ap.add_argument("--num-leaves", type=int, default=TreeSettings.num_leaves)
    ap.add_argument("--n-estimators", type=int, default=TreeSettings.n_estimators)
    ap.add_argument("--early-stopping", type=int, default=TreeSettings.early_stopping_rounds)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = TreeSettings(
        n_estimators=args.n_estimators, learning_rate=args.learning_rate, num_leaves=args.num_leaves,
        early_stopping_rounds=args.early_stopping, threads=args.threads, seed=args.seed,
    )
    try:
        result = lightgbm_baseline(load_experiment(args.config, args.overrides), settings, args.out)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split in ("val", "test"):
        for task, measures in result.get(split, {}).get("overall", {}).items():
            shown = ", ".join(f"{k}={v:.4f}" for k, v in measures.items() if isinstance(v, float))
            print(f"{split} {task}: {shown}")
    print(f"trees {result['trees']}; {result['seconds']} s; wrote {args.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
