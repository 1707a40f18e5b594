"""The generated section of ``docs/results.md``: every registered model on every dataset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results_page.py [--seeds 0 1 2] [--jobs 2]
        [--work runs/results_page] [--models NAME ...] [--datasets NAME ...] [--tiny] [--render]

A thin command line over :func:`msmt.experiments.results_page.generate`:

1. Writes the two simulators' data with fixed seeds into ``WORK/data/<name>/`` (the sizes of the
   published pages: ``msmt synth advertiser --advertisers 300 --days 60 --seed 0`` as in
   ``docs/results/models.md``, ``msmt synth funnel --rows 200000 --seed 0``
   as the smaller table of ``models.md``). A data folder records its parameters in
   ``synth.json``; when they change, the data and that dataset's bench cells are rebuilt.
2. Runs ``msmt bench`` (``msmt.experiments.bench.bench``) over MovieLens MSMT, census, online ads, the
   advertiser simulator and the funnel simulator × every registered model × the seeds into
   ``WORK/bench/`` (run directories stay there, git-ignored; finished cells are reused), with
   ``train.num_threads=1`` and the per-dataset model settings of ``DATASETS`` below. A model
   that cannot apply to a dataset is an n/a cell with its one-line reason.
3. Copies the small outputs (``leaderboard.md/.csv``, ``not_applicable.csv``, ``cells.csv``,
   ``plots/``) to ``docs/results/leaderboard/`` and rewrites the part of ``docs/results.md``
   between the markers ``msmt.experiments.results_page.BEGIN`` and ``END``; the hand-written text outside the markers is kept byte for
   byte (when the page has no markers yet, the section goes before its first ``## `` heading).

Primary metric per task in the page: AUC for binary tasks (higher is better), NMAE for count and
regression tasks (lower is better; SMAPE is in the full leaderboard: it is not minimised by the
expected value, so even the oracle can lose on it).

``--render`` rewrites only the page's section from the leaderboard files already in ``docs/results/leaderboard/``
(no bench, no training): for a change of the generated text alone.

``--tiny`` runs the same pipeline on small simulators for one epoch and writes the page and the
leaderboard under ``WORK/tiny/`` instead of ``docs/``: a smoke run, not numbers for the docs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from msmt.experiments.bench import bench_models
from msmt.experiments.results_page import Dataset, generate, ordered_models, render_page, simulator_config

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "results.md"
LEADERBOARD = REPO / "docs" / "results" / "leaderboard"
WORK = REPO / "runs" / "results_page"
# Every cell: one thread (2 cells train at once on 2 cores), and an epoch budget that early stopping, not the cap,
# ends: the configs' budgets (10 epochs; 4 on the funnel simulator) cut logistic regression off on MovieLens (click AUC
# 0.7107 at 10 epochs, 0.7199 when it stops at epochs 33-37) and most networks on census and the funnel simulator.
# The page lists every cell that still ran to its cap.
COMMON = ["train.num_threads=1", "train.epochs=60"]
ADVERTISER = {"advertisers": 300, "days": 60, "seed": 0}
FUNNEL = {"rows": 200_000, "seed": 0}
# --tiny: a smoke run of the whole pipeline in minutes (not for the docs)
TINY_ADVERTISER = {"advertisers": 40, "days": 20, "seed": 0}
TINY_FUNNEL = {"rows": 5_000, "seed": 0}
TINY_COMMON = ["train.epochs=1"]


def _log(message: str) -> None:
    print(message, flush=True)


def _repo_config(rel: str):
    return lambda work: REPO / rel


def _synth_command(kind: str, params: dict) -> str:
    """The command that writes the simulator data, for the page."""
    return f"`msmt synth {kind} " + " ".join(f"--{k} {v}" for k, v in params.items()) + "` → `experiment.yaml`"


def _simulator(kind: str, params: dict, name: str):
    return lambda work: simulator_config(kind, params, work, name, log=_log)


# M2M's S̃ reads the advertiser profile only when it is named (the simulator's own experiment config names them too).
M2M_PROFILE = "model.m2m.profile_features=[industry,size_tier,region,account_age,budget_level]"
# MovieLens has a funnel: like (rating > 4) implies click (rating > 3), so like = click × P(like | click).
ESMM_MOVIELENS = (
    "dataset.tasks=[{name: click, label: click, kind: binary}, {name: like, label: like, kind: binary, product_of: [click, cvr]}]",
    "dataset.auxiliary=[{name: cvr, kind: binary}]",
)

FUNNEL_MODELS = {"esmm": ESMM_MOVIELENS, "escm2": ESMM_MOVIELENS, "aitm": ESMM_MOVIELENS}
FUNNEL_WHY = {"esmm": "declares `like` = click × cvr with `cvr` an auxiliary output (every like is a click, "
                      "as in `docs/results/models.md`); `like` is then scored by pCTCVR over all rows",
              "escm2": "the same funnel declaration as `esmm` (ESMM's network plus the counterfactual regulariser)",
              "aitm": "the same funnel declaration: click → like, `like` predicted over all rows by its own funnel tower"}

DATASETS = [
    Dataset(
        "movielens", "MovieLens-100K MSMT", _repo_config("configs/movielens.yaml"), "`configs/movielens.yaml`",
        models=FUNNEL_MODELS, why=FUNNEL_WHY,
    ),
    Dataset(
        "movielens_behaviour", "MovieLens-100K MSMT with the user's earlier ratings",
        _repo_config("configs/movielens_behaviour.yaml"), "`configs/movielens_behaviour.yaml`",
        models=FUNNEL_MODELS, why=FUNNEL_WHY,
        note="The same data, splits and models as `movielens`, plus `dataset.behaviour`: each rating's user's click and "
             "like rates over their latest 100 earlier ratings (strictly earlier timestamps, test ratings included once "
             "they are past) and their count, dense features every model reads (logistic regression and LightGBM too)",
    ),
    Dataset("census", "census-income 1994", _repo_config("configs/census.yaml"), "`configs/census.yaml`"),
    Dataset(
        "online_ads", "online ads performance", _repo_config("configs/online_ads.yaml"), "`configs/online_ads.yaml`",
        note="Every trained model's offset is `model.forecast: blend_backtest`, set in the config: per row a learnt mix of the "
             "naive forecasts whose gate reads each one's error over the row's last 7 days (the data change regime on 1 May; "
             "the forecasting study's validation split prefers this offset to `auto` and `blend`: `results/forecasting.md`)",
    ),
    Dataset(
        "advertiser_sim", "advertiser simulator",
        _simulator("advertiser", ADVERTISER, "advertiser_sim"),
        _synth_command("advertiser", ADVERTISER),
        models={"m2m": (M2M_PROFILE,)},
        why={"m2m": "`model.m2m.profile_features=[industry,size_tier,region,account_age,budget_level]`: the "
                    "advertiser profile feeds M2M's scenario knowledge S̃; without it S̃ sees only the scenario"},
    ),
    Dataset(
        "funnel_sim", "funnel simulator",
        _simulator("funnel", FUNNEL, "funnel_sim"),
        _synth_command("funnel", FUNNEL),
        note="`ctcvr` is the conversion label over all impressions; every model but ESMM predicts it with its own "
             "tower, ESMM as pCTR × pCVR. ESMM's own claim (its CVR tower ranks *all* impressions better than a CVR "
             "model trained on clicked rows) needs the counterfactual label and is measured in `results/models.md`",
    ),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=None, help="registry names or lightgbm (default: every registered model and lightgbm)")
    ap.add_argument("--datasets", nargs="+", default=None, help=f"subset of {[d.name for d in DATASETS]}")
    ap.add_argument("--jobs", type=int, default=2, help="cells trained at once (one thread each)")
    ap.add_argument("--work", type=Path, default=WORK, help="simulator data and bench run directories (git-ignored)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the page's section from the leaderboard files already there (no bench, no training)")
    ap.add_argument("--tiny", action="store_true",
                    help="a smoke run: small simulators, one epoch, page and leaderboard written under WORK/tiny/ (docs/ untouched)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.models or []) - set(bench_models()))
    if unknown:
        ap.error(f"unknown model(s) {unknown}")
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command shown on the page: the options that differ from the defaults."""
    parts = ["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results_page.py"]
    if args.tiny:
        parts.append("--tiny")
    if args.seeds != [0, 1, 2]:
        parts.append("--seeds " + " ".join(map(str, args.seeds)))
    if args.models:
        parts.append("--models " + " ".join(args.models))
    if args.datasets:
        parts.append("--datasets " + " ".join(args.datasets))
    return " ".join(parts)


def tiny_datasets() -> list[Dataset]:
    """DATASETS with the simulators at smoke-run sizes."""
    small = {"advertiser_sim": ("advertiser", TINY_ADVERTISER), "funnel_sim": ("funnel", TINY_FUNNEL)}
    return [replace(d, config=_simulator(*small[d.name], d.name), source=_synth_command(*small[d.name])) if d.name in small else d
            for d in DATASETS]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the worker processes
    models = args.models or ordered_models(bench_models())
    work, page, leaderboard, common, datasets = args.work.resolve(), PAGE, LEADERBOARD, COMMON, DATASETS
    if args.tiny:
        work = work / "tiny"
        page, leaderboard, common, datasets = work / "results.md", work / "leaderboard", [*(o for o in COMMON if not o.startswith("train.epochs=")), *TINY_COMMON], tiny_datasets()
    datasets = [d for d in datasets if args.datasets is None or d.name in args.datasets]
    if args.render:  # the generated text only, from the published leaderboard files
        configs = {d.name: d.config(work) for d in datasets}
        render_page(datasets, configs, models, args.seeds, page, leaderboard, common, args.jobs, command_line(args))
    else:
        generate(datasets, models, args.seeds, work, page, leaderboard, common, args.jobs, command_line(args), log=_log)
    print(f"wrote {page} and {leaderboard}/", flush=True)


if __name__ == "__main__":
    sys.exit(main())
