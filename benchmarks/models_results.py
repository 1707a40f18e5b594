"""Results for issue 5: ESMM, PLE, STAR and the loss-balancing strategies -> docs/results/models.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/models_results.py [--seeds 0 1 2] [--epochs 3]
        [--only funnel movielens census] [--extra NAME=EXPERIMENT.yaml ...] [--render]
        [--funnel-seeds 0 1 2 3 4] [--funnel-rows 200000 500000] [--funnel-epochs 20] [--funnel-patience 3] [--out PAGE]

Sections (mean ± std over seeds, test split, 1 thread per run):

* funnel: sample-selection bias. ``msmt synth funnel`` data per seed; CVR AUC over *all* test
  impressions against the counterfactual label ``would_convert`` (and over clicked rows), for
  ESMM (CVR learnt only through pCTCVR = pCTR x pCVR over all impressions) versus the same
  network trained as a CVR model on clicked rows only; both stop early on an observable validation
  metric, and the page reports the paired per-seed difference (one table per ``--funnel-rows``).
  The rest of the ESMM family on the same worlds: ESCM² (its CVR tower with the counterfactual
  regulariser) and AITM (pCVR = pCTCVR / pCTR of its funnel towers), each paired with ESMM.
* movielens / census: every new model with fixed weights next to shared-bottom and MMoE, and PLE
  under every loss strategy. ESMM on MovieLens declares like = click x cvr (like ⊂ click); on data
  without a funnel it runs without a product task (one tower per task over shared embeddings).
* ``--extra name=path`` adds another experiment config (e.g. the advertiser data of issue 3)
  to the same model/strategy grid.

Every run's numbers are cached in ``benchmarks/out/models/<key>.json`` (ignored by git), so a
section can be re-run alone and ``--render`` rebuilds the page from the cache.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from msmt.data.io import atomic_write_text, write_table
from msmt.data.tensorize import encode_frame
from msmt.evaluation.evaluate import evaluate_model
from msmt.experiments.run import load_in_memory
from msmt.experiments.tables import mean_std
from msmt.models import build_model
from msmt.models.registry import model_class
from msmt.rundir.provenance import source_hash
from msmt.runtime.host import describe_cpu
from msmt.scoring.predict import predict, predict_batches
from msmt.spec.config import load_experiment, validate_experiment
from msmt.synth.funnel import write_funnel
from msmt.training.loop import fit, seed_everything

REPO = Path(__file__).resolve().parents[1]

# one cache per version of msmt's code (msmt.rundir.provenance): a code change recomputes every number
CACHE = REPO / "benchmarks" / "out" / "models" / source_hash()[:16]
PAGE = REPO / "docs" / "results" / "models.md"
REAL = {"movielens": REPO / "configs" / "movielens.yaml", "census": REPO / "configs" / "census.yaml"}
# the simplest things a practitioner would try first (item popularity where the data has an item ID,
# logistic regression), then the shared-bottom family and the models of issue 5
MODELS = ["popularity", "logistic_regression", "shared_bottom", "mmoe", "ple", "star", "esmm"]
BASELINE_EPOCHS = 20  # with a shorter --epochs, logistic regression again with this many at most (3 leave it far from its optimum)
STRATEGIES = ["fixed", "uncertainty", "gradnorm", "pcgrad", "dwa"]
RUN_FIELDS = {"seconds", "best_epoch", "epochs_run", "max_epochs"}  # a grid run's record besides its metrics
STRATEGY_MODEL = "ple"
NOTES_MARK = "<!-- reading: kept by --render -->"
FUNNEL_ROWS = 200_000  # --funnel-rows
FUNNEL_EPOCHS = 20  # --funnel-epochs: an upper bound; early stopping decides
FUNNEL_PATIENCE = 3  # --funnel-patience
FUNNEL_FAMILY = ["esmm", "escm2", "aitm"]  # trained over all impressions; CVR from the auxiliary output


def common_overrides(seed: int, epochs: int, patience: int = 2) -> list[str]:
    return [f"train.seed={seed}", f"train.epochs={epochs}", "train.num_threads=1", "train.progress=false", f"train.patience={patience}"]


def train_cfg_epochs(cfg):
    """Fit a config; returns (model, splits, encoded, seconds, (best epoch, epochs run))."""
    torch.set_num_threads(1)
    seed_everything(cfg.train.seed)
    splits, schema, encoded = load_in_memory(cfg.dataset)
    model = build_model(schema, cfg.model)
    start = time.perf_counter()
    result = fit(model, cfg.train, cfg.loss, encoded["train"], encoded["validation"], splits["validation"])
    return model, splits, encoded, time.perf_counter() - start, (int(result.best_epoch), int(len(result.history)))


def cached(key: str, compute) -> dict:
    path = CACHE / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    CACHE.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=1))
    print(f"{key}: {value}", flush=True)
    return value


# --------------------------------------------------------------------------- funnel (SSB)


def auc(y, p) -> float:
    return float(roc_auc_score(y, p))


def funnel_key(seed: int, rows: int, epochs: int, patience: int) -> str:
    return f"funnel-r{rows}-e{epochs}-p{patience}-s{seed}"


def funnel_seed(seed: int, rows: int, epochs: int, patience: int) -> dict:
    """One seed of the SSB experiment: both models stop early on what a practitioner can observe
    (ESMM: validation CTCVR AUC; clicked-only: validation CVR AUC on clicked rows), best epoch restored."""
    with tempfile.TemporaryDirectory() as tmp:
        data = write_funnel(Path(tmp) / "funnel", rows=rows, seed=seed)
        test_clicked_mask = None
        out = {}
        # the ESMM family over the entire space: losses on click and ctcvr (+ the model's own terms)
        for name in FUNNEL_FAMILY:
            cfg = load_experiment(data / "experiment.yaml", common_overrides(seed, epochs, patience) +
                                  [f"model.name={name}", "train.monitor=ctcvr.auc"])
            model, splits, enc, secs, esmm_epochs = train_cfg_epochs(cfg)
            test = splits["test"]
            test_clicked_mask = test["click"].to_numpy() == 1
            p_cvr = predict(model, enc["test"], auxiliary=True).values["cvr"]
            p_task = predict_batches(model, enc["test"])
            out[name] = {
                "cvr_auc_all": auc(test["would_convert"], p_cvr),
                "cvr_auc_clicked": auc(test["would_convert"][test_clicked_mask], p_cvr[test_clicked_mask]),
                "cvr_mean_bias": float(np.mean(p_cvr) - np.mean(test["true_cvr"])),  # over-estimation over all impressions
                "ctcvr_auc": auc(test["conversion"], p_task["ctcvr"]),
                "click_auc": auc(test["click"], p_task["click"]),
                "seconds": secs,
                "best_epoch": esmm_epochs[0],
                "epochs_run": esmm_epochs[1],
            }
        # the same network as a CVR model trained on clicked rows only (the SSB baseline)
        for name in ("train", "validation"):
            frame = splits[name]
            write_table(frame[frame["click"] == 1], data / f"{name}_clicked.csv")
        raw = cfg.to_dict()
        raw["dataset"]["files"] = {"train": str(data / "train_clicked.csv"), "validation": str(data / "validation_clicked.csv")}
        raw["dataset"]["tasks"] = [{"name": "cvr", "label": "conversion", "kind": "binary"}]
        raw["dataset"]["auxiliary"] = []
        raw["model"] = {**{k: v for k, v in raw["model"].items() if k != "esmm"}, "name": "single_task"}
        raw["train"]["monitor"] = "cvr.auc"
        base_cfg = validate_experiment(raw, "funnel clicked-only")
        base, _, _, secs, base_epochs = train_cfg_epochs(base_cfg)
        p_base = predict_batches(base, encode_frame(test, base.schema, with_labels=False))["cvr"]
        out["clicked_only"] = {
            "cvr_auc_all": auc(test["would_convert"], p_base),
            "cvr_auc_clicked": auc(test["would_convert"][test_clicked_mask], p_base[test_clicked_mask]),
            "seconds": secs,
            "best_epoch": base_epochs[0],
            "epochs_run": base_epochs[1],
        }
        out["oracle"] = {
            "cvr_auc_all": auc(test["would_convert"], test["true_cvr"]),
            "cvr_auc_clicked": auc(test["would_convert"][test_clicked_mask], test["true_cvr"][test_clicked_mask]),
        }
        out["clicked_train_rows"] = int((splits["train"]["click"] == 1).sum())
        out["train_rows"] = int(len(splits["train"]))
        return out


# --------------------------------------------------------------------------- real data grid


def esmm_overrides(path: Path) -> list[str]:
    """ESMM needs a product declaration; MovieLens has one (like = click x cvr), census has none."""
    if "movielens" in path.name:
        return [
            "dataset.tasks=[{name: click, label: click, kind: binary}, "
            "{name: like, label: like, kind: binary, product_of: [click, cvr]}]",
            "dataset.auxiliary=[{name: cvr, kind: binary}]",
        ]
    return []  # no funnel in the data: ESMM does not apply (:func:`left_out`)


def model_overrides(path: Path, model: str) -> list[str]:
    """The settings of ``model``'s run on the dataset at ``path``."""
    return [f"model.name={model}", *(esmm_overrides(path) if model == "esmm" else [])]


def grid(path: Path, epochs: int) -> list[tuple[str, list[str]]]:
    """(label, overrides) of every run on one dataset; a model that does not apply there (with the
    settings it gets, e.g. ESMM's funnel) is left out (:func:`left_out`). With ``epochs`` below
    BASELINE_EPOCHS logistic regression runs a second time with BASELINE_EPOCHS."""
    runs, skip = [], left_out(path)
    for m in (m for m in MODELS if m not in skip):
        runs.append((f"{m}+fixed", model_overrides(path, m)))
        if m == "logistic_regression" and epochs < BASELINE_EPOCHS:
            runs.append((f"{m}+fixed ({BASELINE_EPOCHS} epochs)", [*model_overrides(path, m), f"train.epochs={BASELINE_EPOCHS}"]))
    for s in STRATEGIES[1:]:
        runs.append((f"{STRATEGY_MODEL}+{s}", [f"model.name={STRATEGY_MODEL}", f"loss.strategy={s}"]))
    return runs


def real_run(path: Path, extra: list[str], seed: int, epochs: int) -> dict:
    cfg = load_experiment(path, common_overrides(seed, epochs) + extra)
    model, splits, enc, secs, (best, run) = train_cfg_epochs(cfg)
    M = evaluate_model(model, splits["test"], enc["test"])
    out = {f"{t}_{k}": v for t, block in M["overall"].items() for k, v in block.items() if k in ("auc", "logloss", "smape")}
    if cfg.dataset.auxiliary and "click" in splits["test"]:  # ESMM on MovieLens: CVR = P(like | click) on clicked rows
        p = predict(model, enc["test"], auxiliary=True).values["cvr"]
        clicked = splits["test"]["click"].to_numpy() == 1
        out["cvr_auc_clicked"] = auc(splits["test"]["like"].to_numpy()[clicked], p[clicked])
    out["seconds"] = secs
    out["best_epoch"], out["epochs_run"], out["max_epochs"] = best, run, cfg.train.epochs
    return out


# --------------------------------------------------------------------------- page


def ms(values) -> str:
    """``mean ± std`` (sample std) over seeds; one seed is marked as such."""
    return mean_std(values, ddof=1, single=" (1 seed)")


def best_over_run(records: list[dict]) -> str:
    """``mean best epoch / mean epochs run`` of some runs' records."""
    return f"{np.mean([r['best_epoch'] for r in records]):.1f} / {np.mean([r['epochs_run'] for r in records]):.1f}"


def funnel_table(frows, fseeds, fep, fpat) -> list[str]:
    lines = [
        "",
        f"### {frows:,} impressions",
        "",
        "| model | CVR AUC, all impressions | CVR AUC, clicked impressions | click AUC | CTCVR AUC | train rows | best epoch / epochs run |",
        "|---|---|---|---|---|---|---|",
    ]
    fun = [json.loads((CACHE / f"{funnel_key(s, frows, fep, fpat)}.json").read_text()) for s in fseeds
           if (CACHE / f"{funnel_key(s, frows, fep, fpat)}.json").exists()]
    if not fun:
        lines.append("| (not run yet) | | | | | | |")
    else:
        from scipy import stats

        rows_all = int(np.mean([f["train_rows"] for f in fun]))
        rows_clicked = int(np.mean([f["clicked_train_rows"] for f in fun]))
        e = [f["esmm"] for f in fun]
        c = [f["clicked_only"] for f in fun]
        o = [f["oracle"] for f in fun]

        d_all = np.array([a["cvr_auc_all"] - b["cvr_auc_all"] for a, b in zip(e, c)])
        d_clk = np.array([a["cvr_auc_clicked"] - b["cvr_auc_clicked"] for a, b in zip(e, c)])
        wins = int((d_all > 0).sum())
        t_all = stats.ttest_rel([x["cvr_auc_all"] for x in e], [x["cvr_auc_all"] for x in c]) if len(fun) > 1 else None
        t_clk = stats.ttest_rel([x["cvr_auc_clicked"] for x in e], [x["cvr_auc_clicked"] for x in c]) if len(fun) > 1 else None
        lines += [
            f"| ESMM | {ms([x['cvr_auc_all'] for x in e])} | {ms([x['cvr_auc_clicked'] for x in e])} | "
            f"{ms([x['click_auc'] for x in e])} | {ms([x['ctcvr_auc'] for x in e])} | {rows_all} | {best_over_run(e)} |",
            *[f"| {label} | {ms([f[m]['cvr_auc_all'] for f in fun])} | {ms([f[m]['cvr_auc_clicked'] for f in fun])} | "
              f"{ms([f[m]['click_auc'] for f in fun])} | {ms([f[m]['ctcvr_auc'] for f in fun])} | {rows_all} | {best_over_run([f[m] for f in fun])} |"
              for m, label in (("escm2", "ESCM²-IPS"), ("aitm", "AITM (pCTCVR / pCTR)")) if all(m in f for f in fun)],
            f"| CVR on clicked rows only | {ms([x['cvr_auc_all'] for x in c])} | {ms([x['cvr_auc_clicked'] for x in c])} | – | – | ~{rows_clicked} | {best_over_run(c)} |",
            f"| oracle (true pCVR) | {ms([x['cvr_auc_all'] for x in o])} | {ms([x['cvr_auc_clicked'] for x in o])} | – | – | – | – |",
            "",
            f"Seeds with results: {len(fun)} of {len(fseeds)}. **Paired difference ESMM − clicked-only** (same world, "
            f"same seed), CVR AUC over all impressions: {ms(d_all)} (per seed: {', '.join(f'{x:+.4f}' for x in d_all)}; "
            f"ESMM higher in {wins} of {len(fun)} seeds"
            + (f"; paired t-test p = {t_all.pvalue:.3g}" if t_all is not None else "")
            + f"). Over clicked impressions: {ms(d_clk)}"
            + (f" (paired t-test p = {t_clk.pvalue:.3g})" if t_clk is not None else "")
            + ".",
        ]
        family = [m for m in FUNNEL_FAMILY if all(m in f for f in fun)]
        if len(family) > 1:  # the ESMM family against ESMM, paired: CVR AUC over all impressions and CVR over-estimation
            lines += ["", "| model | CVR AUC over all impressions − ESMM's (paired) | mean pCVR − mean true pCVR (all impressions) |",
                      "|---|---|---|"]
            lines += [f"| {m} | {ms([f[m]['cvr_auc_all'] - f['esmm']['cvr_auc_all'] for f in fun]) if m != 'esmm' else '–'} | "
                      f"{ms([f[m]['cvr_mean_bias'] for f in fun])} |" for m in family]
    return lines


def grid_key(name: str, label: str, epochs: int, seed: int) -> str:
    """The cache key of one grid run (the epoch budget is part of it)."""
    return f"{name}-{label}-e{epochs}-s{seed}"


def cached_runs(name: str, path: Path, seeds: list[int], epochs: int) -> dict[str, list[dict]]:
    """label -> the cached results of the seeds that ran, for every grid entry with at least one."""
    results = {}
    for label, _ in grid(path, epochs):
        files = [CACHE / f"{grid_key(name, label, epochs, s)}.json" for s in seeds]
        vals = [json.loads(f.read_text()) for f in files if f.exists()]
        if vals:
            results[label] = vals
    return results


def dataset_section(name: str, path: Path, seeds: list[int], epochs: int) -> list[str]:
    """One dataset's table (model + strategy × metric) and how to read ESMM's row."""
    results = cached_runs(name, path, seeds, epochs)
    if not results:
        return ["(not run yet)"]
    baseline = (f"logistic regression, with the grid's epochs and again with at most {BASELINE_EPOCHS} (same early stopping): "
                f"its training is cheap, and with {epochs} epochs it is far from its optimum" if epochs < BASELINE_EPOCHS
                else "logistic regression")
    lines = [f"Test split; mean ± std (sample std) over seeds {list(seeds)}; at most {epochs} epochs, early "
             "stopping on the config's monitor (patience 2), best epoch restored (`best / run` = mean best epoch / mean "
             "epochs run; a run that ends at the cap may be under-trained). Every model with fixed "
             f"weights; every loss strategy on {STRATEGY_MODEL}. The first rows are the baselines: item popularity (the "
             f"training rate of each item, where the data has an item ID; nothing to train) and {baseline}.", ""]
    metrics = sorted({k for vals in results.values() for v in vals for k in v if k not in RUN_FIELDS})
    lines.append("| model + strategy | seeds | " + " | ".join(metrics) + " | best / run | train s |")
    lines.append("|---|---|" + "---|" * (len(metrics) + 2))
    for label, vals in results.items():
        cells = [ms([v.get(m) for v in vals]) for m in metrics]
        epochs_cell = best_over_run(vals) if all("epochs_run" in v for v in vals) else "–"
        lines.append(f"| {label} | {len(vals)} | " + " | ".join(cells) + f" | {epochs_cell} | {np.mean([v['seconds'] for v in vals]):.0f} |")
    if "esmm+fixed" in results:
        lines += ["", "ESMM here declares `like` = click × cvr (every like is a click); `like_auc` is its pCTCVR "
                  "over all test rows and `cvr_auc_clicked` the CVR tower's AUC of P(like | click) on clicked test rows."]
    skipped = left_out(path)
    lines += ["", *(f"* n/a `{m}`: {why}" for m, why in skipped.items())] if skipped else []
    return lines


@functools.cache
def left_out(path: Path) -> dict[str, str]:
    """{model: why it does not apply to this dataset} for the models :func:`grid` leaves out (read
    once per dataset: :func:`grid` is asked for every seed and every render)."""
    out = {}
    for m in MODELS:
        cfg = load_experiment(path, model_overrides(path, m))
        why = model_class(m).not_applicable(cfg.dataset)
        if why:
            out[m] = why
    return out


def render(args, datasets: dict[str, Path]) -> str:
    seeds, epochs = args.seeds, args.epochs
    fseeds, frows, fep, fpat = args.funnel_seeds, args.funnel_rows, args.funnel_epochs, args.funnel_patience
    extra = " ".join(f"--extra {n}={p.relative_to(REPO) if p.is_relative_to(REPO) else p}" for n, p in datasets.items() if n not in REAL)
    lines = [
        "# Results: ESMM, PLE, STAR and loss balancing (issue 5)",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/models_results.py --seeds {' '.join(map(str, seeds))} "
        f"--epochs {epochs} --funnel-seeds {' '.join(map(str, fseeds))} --funnel-rows {' '.join(map(str, frows))} --funnel-epochs {fep} "
        f"--funnel-patience {fpat}{' ' + extra if extra else ''}` (each section can be run alone with `--only NAME`; "
        "`--render` rebuilds this page from the cached runs). One CPU thread per run on a shared machine "
        f"({describe_cpu()}, torch {torch.__version__}).",
        "",
        "## Sample-selection bias on the funnel simulator",
        "",
        f"`msmt synth funnel --rows N --seed S` for N in {list(frows)}, S in {list(fseeds)} (80/10/10 time split; the seed draws a "
        "new world and trains both models). CVR AUC against the counterfactual label `would_convert` (would this "
        "impression have converted had it been clicked), over **all** test impressions and over the clicked ones. "
        "*ESMM*: CVR learnt only through pCTCVR = pCTR × pCVR over all impressions (early stopping on validation "
        "CTCVR AUC). *Clicked-only*: the same network (shared-size embeddings + the same MLP) trained as a CVR "
        "model on clicked training rows only (early stopping on validation CVR AUC over clicked validation rows). "
        f"Both: at most {fep} epochs, patience {fpat}, best epoch restored; neither ever sees `would_convert` or the "
        "true probabilities. *Oracle*: the simulator's true pCVR (the ceiling under Bernoulli label noise).",
        "",
    ]
    for frows_n in frows:
        lines += funnel_table(frows_n, fseeds, fep, fpat)
    for name, path in datasets.items():
        lines += ["", f"## {name} (`{path.relative_to(REPO) if path.is_relative_to(REPO) else path}`)", ""]
        lines += dataset_section(name, path, seeds, epochs)
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--funnel-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--funnel-rows", type=int, nargs="+", default=[FUNNEL_ROWS], help="one table per data size")
    ap.add_argument("--funnel-epochs", type=int, default=FUNNEL_EPOCHS)
    ap.add_argument("--funnel-patience", type=int, default=FUNNEL_PATIENCE)
    ap.add_argument("--extra", nargs="*", default=[], help="NAME=EXPERIMENT.yaml: another dataset for the grid")
    ap.add_argument("--render", action="store_true", help="only rebuild the page from the cache")
    ap.add_argument("--out", type=Path, default=PAGE, help="the page to write (default: docs/results/models.md)")
    return ap.parse_args()


def run_funnel(args) -> None:
    """Every (rows, seed) of the SSB experiment not in the cache yet."""
    for rows in args.funnel_rows:
        for s in args.funnel_seeds:
            cached(funnel_key(s, rows, args.funnel_epochs, args.funnel_patience),
                   lambda s=s, rows=rows: funnel_seed(s, rows, args.funnel_epochs, args.funnel_patience))


def run_grid(args, datasets: dict[str, Path], wanted: set[str]) -> None:
    """Every (dataset, model + strategy, seed) not in the cache yet, seed-major (every
    configuration gets its first seeds first)."""
    for s in args.seeds:
        for name, path in datasets.items():
            if name not in wanted:
                continue
            for label, extra in grid(path, args.epochs):
                cached(grid_key(name, label, args.epochs, s), lambda p=path, e=extra, s=s: real_run(p, e, s, args.epochs))


def write_page(text: str, page: Path) -> None:
    """Write ``text``; the hand-written reading after NOTES_MARK in the old page survives."""
    if page.exists() and NOTES_MARK in page.read_text():
        text += "\n" + NOTES_MARK + page.read_text().split(NOTES_MARK, 1)[1]
    atomic_write_text(page, text)
    print(text)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    datasets = dict(REAL)
    for item in args.extra:
        name, _, path = item.partition("=")
        datasets[name] = Path(path).resolve()
    wanted = set(args.only or ["funnel", *datasets])
    if not args.render:
        if "funnel" in wanted:
            run_funnel(args)
        run_grid(args, datasets, wanted)
    write_page(render(args, datasets), args.out)


if __name__ == "__main__":
    main()
