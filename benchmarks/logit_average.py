"""Does a network add anything to a baseline? AUC of the average of their logits, per seed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/logit_average.py RUNS [--base logistic_regression]
        [--models m2m shared_bottom star] [--seeds 0 1 2] [--split test]

``RUNS`` is one dataset's folder of bench cells (``<bench out>/runs/<dataset>``, laid out
``<model>/seed<S>/`` as ``msmt bench`` and ``benchmarks/results_page.py`` write them). For every
binary task, each model and seed, the test rows are scored by the base run and the model's run
of the same seed (``msmt.api.load(run).predict``); the table gives the mean AUC over seeds of the
base alone, the model alone and the average of the two logits, overall and, where the data
declares a group (MovieLens: ``user_id``), on the rows whose group has no row in the training
split (the cold-start cohort of the results page). An average above both says the two rank
differently and the network carries something the baseline lacks; an average at the base's
level says it does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.special import logit
from sklearn.metrics import roc_auc_score

import msmt.api as api
from msmt.experiments.run import load_in_memory

EPS = 1e-7


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="one dataset's bench cells: <model>/seed<S>/")
    ap.add_argument("--base", default="logistic_regression")
    ap.add_argument("--models", nargs="+", default=["m2m", "shared_bottom", "star"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--split", default="test")
    return ap.parse_args(argv)


def aucs(y: np.ndarray, p: np.ndarray, cohort: np.ndarray | None) -> tuple[float, float | None]:
    """AUC over every row and over the cohort's rows (None without a cohort)."""
    return roc_auc_score(y, p), (roc_auc_score(y[cohort], p[cohort]) if cohort is not None else None)


def main(argv=None) -> None:
    args = parse_args(argv)
    base0 = api.load(args.runs / args.base / f"seed{args.seeds[0]}")
    splits, _, _ = load_in_memory(base0.config.dataset)
    rows, group = splits[args.split], base0.config.dataset.group
    cohort = None
    if group:
        cohort = ~rows[group].astype(str).isin(set(splits["train"][group].astype(str))).to_numpy()
    tasks = [t.name for t in base0.config.dataset.tasks if t.kind == "binary"]
    where = f"; `{group} ∉ train`: {int(cohort.sum())} rows" if cohort is not None else ""
    print(f"{args.runs}: {len(rows)} {args.split} rows{where}; mean AUC over seeds {args.seeds}\n")
    print("| task | model | base alone | model alone | logit average |" + (" … on the cohort (base / model / average) |" if group else ""))
    print("|---|---|---|---|---|" + ("---|" if group else ""))
    preds = {}
    for name in [args.base, *args.models]:
        for s in args.seeds:
            preds[name, s] = api.load(args.runs / name / f"seed{s}").predict(rows)
    for task in tasks:
        y = rows[task].to_numpy()
        for model in args.models:
            per_seed = []
            for s in args.seeds:
                p_base = preds[args.base, s][f"pred_{task}"].to_numpy()
                p_model = preds[model, s][f"pred_{task}"].to_numpy()
                avg = (logit(np.clip(p_base, EPS, 1 - EPS)) + logit(np.clip(p_model, EPS, 1 - EPS))) / 2
                per_seed.append([aucs(y, p, cohort) for p in (p_base, p_model, avg)])
            overall = [np.mean([seed[i][0] for seed in per_seed]) for i in range(3)]
            line = f"| {task} | {model} | " + " | ".join(f"{v:.4f}" for v in overall) + " |"
            if cohort is not None:
                line += " " + " / ".join(f"{np.mean([seed[i][1] for seed in per_seed]):.4f}" for i in range(3)) + " |"
            print(line, flush=True)


if __name__ == "__main__":
    main()
