"""Hand-set against tuned hyper-parameters on the real datasets -> ``docs/results/tuned.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuned.py [--datasets movielens census online_ads]
        [--models mmoe ple logistic_regression] [--trials 20] [--seeds 0 1 2] [--work runs/tuned] [--out PAGE]

A thin command line over :mod:`msmt.experiments.tuned`: per dataset (``configs/<name>.yaml``
and its ``configs/<name>.tune.yaml``) and model, ``msmt tune`` on the validation metric, then the
hand-set and the tuned config over the seeds on the test split. Studies and runs stay in
``--work`` (git-ignored); running the command again continues unfinished studies and reuses
finished runs of the same code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msmt.data.io import atomic_write_text
from msmt.experiments.tuned import render, tuned_pair

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["movielens", "census", "online_ads"])
    ap.add_argument("--models", nargs="+", default=["mmoe", "ple", "logistic_regression"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "tuned")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "tuned.md")
    return ap.parse_args(argv)


def command_line(argv: list[str]) -> str:
    return " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuned.py", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configs = {name: REPO / "configs" / f"{name}.yaml" for name in args.datasets}
    pairs = []
    for name, config in configs.items():
        for model in args.models:
            print(f"== {name} {model}", flush=True)
            pairs.append(tuned_pair(name, config, model, args.trials, args.seeds, args.work.resolve()))
    text = render(pairs, configs, args.seeds, args.trials, command_line(argv))
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
