"""Hand-set against tuned hyper-parameters on the real datasets -> ``docs/results/tuned.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuned.py [--datasets movielens census online_ads]
        [--models mmoe ple ...] [--trials 20] [--seeds 0 1 2] [--jobs 2] [--work runs/tuned] [--out PAGE]

A thin command line over :mod:`msmt.experiments.tuned`: per dataset (``configs/<name>.yaml``
and its ``configs/<name>.tune.yaml``) and model, ``msmt tune`` on the validation metric, then the
hand-set and the tuned config over the seeds on the test split. The default models are every
registered model with hyper-parameters to search: all but the naive forecasters and item
popularity (no optimiser, no layers). A model takes the settings the results page gives it on a
dataset (``benchmarks/results_page.py: DATASETS``, e.g. ESMM's funnel on MovieLens); one that
does not apply is listed as n/a. Each table starts with the models that have nothing to search
(the naive forecasters, item popularity) where they apply, trained over the same seeds.
``--jobs`` pairs run at once, one thread each. Studies and runs stay in ``--work`` (git-ignored);
running the command again continues unfinished studies and reuses finished runs of the same code.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from msmt.data.io import atomic_write_text
from msmt.experiments.results_page import ordered_models
from msmt.experiments.tuned import NOTHING_TO_SEARCH, pair_not_applicable, reference_runs, render, tuned_pair
from msmt.spec.sections import model_names
from results_page import DATASETS as PAGE_DATASETS

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["movielens", "census", "online_ads"])
    ap.add_argument("--models", nargs="+", default=[m for m in ordered_models(model_names()) if m not in NOTHING_TO_SEARCH])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="(dataset, model) pairs searched at once, one thread each")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "tuned")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "tuned.md")
    return ap.parse_args(argv)


def command_line(argv: list[str]) -> str:
    return " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuned.py", *argv])


def _log(message: str) -> None:
    print(message, flush=True)


def _pair(name: str, config: Path, model: str, args: argparse.Namespace, extra: tuple[str, ...]):
    _log(f"== {name} {model}")
    return tuned_pair(name, config, model, args.trials, args.seeds, args.work.resolve(), log=_log, extra=extra)


def _references(name: str, config: Path, args: argparse.Namespace):
    _log(f"== {name} references")
    return reference_runs(name, config, args.seeds, args.work.resolve(), log=_log)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configs = {name: REPO / "configs" / f"{name}.yaml" for name in args.datasets}
    settings = {d.name: d.models for d in PAGE_DATASETS}
    extras = {(name, m): tuple(settings.get(name, {}).get(m, ())) for name in configs for m in args.models}
    skipped = {key: why for key in extras if (why := pair_not_applicable(configs[key[0]], key[1], extras[key]))}
    todo = [key for key in extras if key not in skipped]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_pair, name, configs[name], model, args, extras[(name, model)]) for name, model in todo]
        reference_futures = {name: pool.submit(_references, name, config, args) for name, config in configs.items()}
        pairs = [f.result() for f in futures]
        references = {name: f.result() for name, f in reference_futures.items()}
    text = render(pairs, configs, args.seeds, args.trials, command_line(argv), skipped=skipped, extras=extras,
                  references=references)
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
