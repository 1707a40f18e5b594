"""A practitioner's `active` forecast: logistic regression on the unit's live and paused days
(docs/results/active_baseline.md).

The forecasting study's world (``WORK/data/world``, made by ``benchmarks/forecasting.py``) and its
binary task ``active`` (the unit spends in the next 7 days). Each row's features are its unit's
live / paused / unobserved days over the panel window before it
(:func:`msmt.experiments.live_history.live_history_features`: the last state, days since the last
live and paused day, state changes, live and observed days, each day's state) and its scenario
(one-hot). scikit-learn's logistic regression (standardised features, C chosen on the validation
split's AUC) and, beside it, a gradient-boosted tree model on the same features. The page sets
them against the forecasting page's rows (``docs/results/forecasting/world.csv``): the naive
forecasts, M2M, the ``+history`` models and the simulator's bounds.

    .venv/bin/python benchmarks/active_baseline.py [--work runs/forecasting] [--page-records docs/results/forecasting/world.csv]
        [--out docs/results/active_baseline.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from msmt.data.io import atomic_write_text
from msmt.data.loading import read_data
from msmt.experiments.forecasting_page import MINOR
from msmt.experiments.live_history import live_history_features
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.spec.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
TASK = "active"
SPLITS = ("train", "validation", "test")
PAGE_ROWS = ("naive_last", "naive_mean", "logistic_regression+history", "single_task+history", "shared_bottom+history", "mmoe+history", "ple+history", "m2m",
             "oracle (history, T=14)", "oracle (history, all days)", "oracle")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "forecasting")
    ap.add_argument("--page-records", type=Path, default=REPO / "docs" / "results" / "forecasting" / "world.csv")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "active_baseline.md")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    config = args.work / "data" / "world" / "experiment.yaml"
    if not config.exists():
        raise SystemExit(f"{config}: no forecasting world here; make it with benchmarks/forecasting.py --work {args.work}")
    spec = load_experiment(config).dataset
    task = spec.task(TASK)
    panel, scenario = spec.panel, spec.scenario.column
    files = {"train": spec.files.train, "validation": spec.files.validation, "test": spec.files.test}
    frames = {s: read_data(files[s], spec) for s in SPLITS}
    history = pd.concat(frames.values(), ignore_index=True)
    scenarios = sorted(frames["train"][scenario].unique())

    def features(split: str) -> np.ndarray:
        f = frames[split]
        live = live_history_features(f, history, list(panel.keys), panel.time, spec.history_of(task), panel.window)
        return np.hstack([live, (f[scenario].to_numpy()[:, None] == np.array(scenarios)[None, :]).astype(float)])

    X = {s: features(s) for s in SPLITS}
    y = {s: frames[s][task.label].to_numpy(int) for s in SPLITS}
    models = {}
    val_auc = {}
    for c in (0.01, 0.1, 1.0, 10.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(X["train"], y["train"])
        val_auc[c] = roc_auc_score(y["validation"], model.predict_proba(X["validation"])[:, 1])
        models[c] = model
    best_c = max(val_auc, key=val_auc.get)
    fitted = {"logistic regression (live history)": models[best_c],
              "gradient-boosted trees (live history)": HistGradientBoostingClassifier(random_state=0).fit(X["train"], y["train"])}
    rows = []
    for name, model in fitted.items():
        cells = {}
        for split in ("validation", "test"):
            p = model.predict_proba(X[split])[:, 1]
            cells[split] = roc_auc_score(y[split], p)
            minor = frames[split][scenario].to_numpy() == MINOR
            cells[f"{split} {MINOR}"] = roc_auc_score(y[split][minor], p[minor])
        rows.append((name, cells))
    page_records = pd.read_csv(args.page_records)
    auc = page_records[(page_records["task"] == TASK) & (page_records["metric"] == "auc")]

    def page_cell(variant: str, split: str, where: str) -> str:
        hit = auc[(auc["variant"] == variant) & (auc["split"] == split) & (auc["scenario"] == where)]
        return "–" if hit.empty else f"{hit['mean'].iloc[0]:.4f}" + (f" ± {hit['std'].iloc[0]:.4f}" if hit["std"].iloc[0] >= 5e-5 else "")

    size = json.loads((config.parent / "synth.json").read_text())
    lines = [
        "# `active`: a logistic regression on the unit's live days against the forecasting page's models", "",
        f"Generated by `.venv/bin/python benchmarks/active_baseline.py` with msmt's source {source_hash()[:12]} on {describe_cpu()}.", "",
        f"The forecasting study's world ({size['advertisers']:,} advertisers × {size['days']} days, seed {size['seed']}); `active` = "
        f"the unit spends in the next 7 days. Features of each row: its unit's days over the {panel.window}-day window before it "
        f"(live: `{spec.history_of(task)}` > 0; `msmt.experiments.live_history`: the last state, days since the last live and "
        "paused day, state changes, live and observed days, each day's state) and its scenario (one-hot). The logistic "
        f"regression is scikit-learn's on standardised features, C = {best_c:g} chosen on the validation AUC "
        f"({', '.join(f'{c:g}: {a:.4f}' for c, a in val_auc.items())}); the trees are scikit-learn's `HistGradientBoostingClassifier` "
        "with its defaults. The other rows are the forecasting page's (`docs/results/forecasting/world.csv`, mean ± std over "
        "its training seeds), the same rows and splits. AUC (higher is better).", "",
        f"| model | test AUC | test AUC, `{MINOR}` | validation AUC |", "|---|---|---|---|",
    ]
    for name, cells in rows:
        lines.append(f"| {name} | {cells['test']:.4f} | {cells[f'test {MINOR}']:.4f} | {cells['validation']:.4f} |")
    for variant in PAGE_ROWS:
        lines.append(f"| {variant} | {page_cell(variant, 'test', 'overall')} | {page_cell(variant, 'test', MINOR)} | "
                     f"{page_cell(variant, 'val', 'overall')} |")
    lines.append("")
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
