"""Few-shot protocol for new groups: metric vs K support rows, groups held out whole.

For each seed:

1. All rows of the dataset (every split file) are pooled; groups (``dataset.group``) with at least
   ``max(K) + query`` rows are candidates, and ``--test-groups`` of them are held out whole.
   The remaining groups' rows train everything (90/10 random train/validation split).
2. A conventional model is trained (``fit``), then copied and meta-trained with MAML, first-order
   MAML and Reptile (``meta.*`` of the config).
3. Each held-out group's rows are ordered by time (the split's time column, else ``timestamp``,
   else a seeded shuffle); its last ``--query`` rows are the query set, its first K rows the
   support set, K in ``--ks``. Methods, all scored on the same query rows:
   ``base`` (conventional model, no adaptation), ``finetune`` (its personal parameters adapted with
   the same inner steps / lr as the meta models), ``scratch`` (a fresh model of the same
   architecture trained on the K rows only: ``--scratch-steps`` full-batch Adam steps),
   ``maml`` / ``fomaml`` / ``reptile`` (meta-trained model adapted on the K rows).
4. Query predictions are pooled over held-out groups: the task-weighted loss (the training
   objective) and the AUC of each binary task.

Results (mean ± std over seeds) go to a Markdown file, a JSON file and PNG plots.

Examples::

    python benchmarks/meta_learning.py --config configs/movielens.yaml --name movielens_users
    python benchmarks/meta_learning.py --synth-simple --name synth_users \
        --set dataset.group=user_id --set meta.inner_lr=0.02
    # later, the advertiser simulator (issue 3): its experiment config and its group column
    python benchmarks/meta_learning.py --config DIR/experiment.yaml --set dataset.group=advertiser_id
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from msmt.data.fit import fit_schema
from msmt.data.io import atomic_write_text
from msmt.data.loading import load_splits, read_data
from msmt.data.split import split_frame
from msmt.data.tensorize import encode_frame
from msmt.meta import adapt, meta_train, plan_meta, split_parameters
from msmt.meta.episodes import group_values
from msmt.models import build_model
from msmt.scoring.predict import forward_with_block
from msmt.spec.batch import take
from msmt.spec.config import load_experiment
from msmt.spec.dataset import SplitSpec
from msmt.spec.task_kinds import rules, to_user_units
from msmt.training.loop import fit, seed_everything
from msmt.training.losses import task_losses

ALGORITHMS = ("maml", "fomaml", "reptile")
METHODS = ("base", "finetune", "scratch", *ALGORITHMS)


def order_rows(frame: pd.DataFrame, spec, seed: int, time_column: str | None = None) -> pd.DataFrame:
    if time_column:  # explicit (e.g. a day column): seeded shuffle, then time order, so ties differ per seed
        shuffled = frame.sample(frac=1.0, random_state=seed)
        return shuffled.sort_values(time_column, kind="stable").reset_index(drop=True)
    time_col = spec.split.time_column or ("timestamp" if "timestamp" in frame.columns else None)
    if time_col:
        return frame.sort_values(time_col, kind="stable").reset_index(drop=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def scratch_block(cfg, schema, support, steps: int, lr: float, seed: int):
    """A fresh model trained on the support rows only (all of its parameters)."""
    torch.manual_seed(seed)
    model = build_model(schema, cfg.model)
    if int(support["scenario"].shape[0]) and steps:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        tasks = cfg.dataset.tasks
        for _ in range(steps):
            losses = task_losses(tasks, model(support), support["labels"], support["weight"])
            loss = sum(t.weight * losses[t.name] for t in tasks)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict(model, block, batch, tasks) -> dict[str, np.ndarray]:
    out = forward_with_block(model, block, batch)
    return {t.name: to_user_units(t.kind, out[t.name]).numpy() for t in tasks}


def pooled_metrics(tasks, labels: np.ndarray, preds: dict[str, list[np.ndarray]]) -> dict[str, float]:
    res, objective = {}, 0.0
    for i, t in enumerate(tasks):
        p = np.concatenate(preds[t.name])
        y = labels[:, i]
        bad = ~np.isfinite(p)
        res[f"{t.name}_nonfinite"] = float(bad.mean())
        if bad.any():  # a diverged adaptation: reported as such, never silently dropped
            res[f"{t.name}_loss"] = float("nan")
            objective = float("nan")
            if "auc" in rules(t).primary:
                res[f"{t.name}_auc"] = None
            continue
        # the training loss on the prediction scale, so every method is scored the same way
        kind = rules(t)
        o = kind.inverse_link(torch.from_numpy(p).double())
        loss = float(kind.row_loss(o, torch.from_numpy(y).double()).mean())
        res[f"{t.name}_loss"] = loss
        objective += t.weight * loss
        if "auc" in kind.primary:
            res[f"{t.name}_auc"] = kind.measures(y, p)["auc"]
    res["objective"] = objective
    return res


@dataclass
class HeldOut:
    """Rows that train everything, and the held-out groups' rows (whole groups never seen in training)."""

    train: pd.DataFrame
    test: pd.DataFrame
    test_groups: np.ndarray  # [len(test)] group of each test row
    held: set
    train_group_count: int


def hold_out(args, frame: pd.DataFrame, spec, seed: int) -> HeldOut:
    """``--test-groups`` groups with at least ``max(K) + query`` rows, held out whole: from
    ``--held-out-file`` (new groups only; every row of ``frame`` trains) or from ``frame`` itself."""
    groups = group_values(frame, spec.group)
    need = max(args.ks) + args.query
    rng = np.random.default_rng(seed)
    if args.held_out_file:
        held_frame = order_rows(read_data(args.held_out_file, spec), spec, seed, args.time_column)
        held_groups = group_values(held_frame, spec.group)
        unseen = sorted(set(held_groups) - set(groups))
        counts = pd.Series(held_groups).value_counts()
        candidates = sorted(g for g in counts[counts >= need].index if g in unseen)
        if not candidates:
            raise SystemExit(f"no group of {args.held_out_file} is new and has {need} rows")
        held = set(rng.choice(candidates, size=min(args.test_groups, len(candidates)), replace=False).tolist())
        test_mask = np.isin(held_groups, list(held))
        return HeldOut(frame.reset_index(drop=True), held_frame[test_mask].reset_index(drop=True), held_groups[test_mask], held, len(set(groups)))
    counts = pd.Series(groups).value_counts()
    candidates = sorted(counts[counts >= need].index)
    held = set(rng.choice(candidates, size=min(args.test_groups, len(candidates)), replace=False).tolist())
    is_test = np.isin(groups, list(held))
    return HeldOut(frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True), groups[is_test], held,
                   int(len(set(groups[~is_test]))))


def train_models(cfg, schema, parts: dict, enc: dict) -> tuple[dict, dict]:
    """({method: model}, timings): the conventional model (``base`` and ``finetune`` share it) and a
    meta-trained copy of it per algorithm."""
    timings = {}
    t0 = time.perf_counter()
    conventional = build_model(schema, cfg.model)
    fit(conventional, cfg.train, cfg.loss, enc["train"], enc["validation"], parts["validation"])
    timings["conventional_train_s"] = time.perf_counter() - t0
    models = {"base": conventional, "finetune": conventional}
    for algo in ALGORITHMS:
        t0 = time.perf_counter()
        acfg = cfg.model_copy(deep=True)
        acfg.meta.algorithm = algo
        model = copy.deepcopy(conventional)
        meta_train(model, acfg.meta, plan_meta(model, acfg.meta, parts["train"]), enc["train"])
        models[algo] = model
        timings[f"{algo}_meta_train_s"] = time.perf_counter() - t0
    return models, timings


def score_k(args, cfg, schema, models: dict, split, held: HeldOut, test_enc, k: int, seed: int) -> dict[str, dict[str, float]]:
    """{method: pooled query metrics} with K = ``k`` support rows per held-out group."""
    tasks = cfg.dataset.tasks
    preds = {m: {t.name: [] for t in tasks} for m in METHODS}
    labels = []
    for gi, g in enumerate(sorted(held.held)):
        rows = np.flatnonzero(held.test_groups == g)  # already in time order
        query = take(test_enc, torch.from_numpy(rows[-args.query :]))
        support = take(test_enc, torch.from_numpy(rows[:k]))
        labels.append(query["labels"].numpy())
        for m in METHODS:
            if m == "scratch":
                model, block = scratch_block(cfg, schema, support, args.scratch_steps, args.scratch_lr, seed * 100003 + gi), None
            elif m == "base":
                model, block = models[m], None
            else:
                model = models[m]
                block = adapt(model, split, support, tasks, cfg.meta.inner_steps, cfg.meta.inner_lr, cfg.meta.inner_max_grad_norm) if k else None
            for t, p in predict(model, block, query, tasks).items():
                preds[m][t].append(p)
    y = np.concatenate(labels)
    return {m: pooled_metrics(tasks, y, preds[m]) for m in METHODS}


def run_seed(args, seed: int) -> dict:
    """One seed of the protocol: hold groups out, train and meta-train, score every method at every K."""
    cfg = load_experiment(args.config, [*args.set, f"train.seed={seed}", f"meta.seed={seed}", "train.progress=false"])
    spec = cfg.dataset
    if not spec.group:
        raise SystemExit("the dataset has no group column: pass --set dataset.group=COLUMN")
    seed_everything(seed)
    frame = order_rows(pd.concat(list(load_splits(spec).values()), ignore_index=True), spec, seed, args.time_column)
    frame.attrs["source"] = str(spec.files.train)
    held = hold_out(args, frame, spec, seed)
    held.train.attrs["source"] = frame.attrs["source"]
    parts = split_frame(held.train, SplitSpec(method="random", validation_fraction=0.1, seed=seed))
    schema = fit_schema(parts["train"], spec)
    enc = {k: encode_frame(v, schema) for k, v in parts.items()}
    models, timings = train_models(cfg, schema, parts, enc)
    split = split_parameters(models["base"], cfg.meta)
    test_enc = encode_frame(held.test, schema)
    t0 = time.perf_counter()
    results = {k: score_k(args, cfg, schema, models, split, held, test_enc, k, seed) for k in args.ks}
    timings["evaluation_s"] = time.perf_counter() - t0
    return {
        "seed": seed,
        "held_out_groups": len(held.held),
        "train_groups": int(held.train_group_count),
        "train_rows": int(len(parts["train"])),
        "results": {str(k): v for k, v in results.items()},
        "timings": timings,
    }


def summarise(runs: list[dict], ks: list[int], metric: str) -> dict[str, dict[int, tuple[float, float, int]]]:
    """{method: {K: (mean, std, seeds left out)}} over the seeds whose predictions were finite; a seed
    whose model diverged (non-finite predictions) is counted, never averaged in."""
    out = {}
    for m in METHODS:
        out[m] = {}
        for k in ks:
            raw = [r["results"][str(k)][m] for r in runs]
            vals = np.array([x[metric] for x in raw if x[metric] is not None and np.isfinite(x[metric])], dtype=float)
            mean = float(vals.mean()) if len(vals) else float("nan")
            out[m][k] = (mean, float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(raw) - len(vals))
    return out


def cell(v: tuple[float, float, int], n: int) -> str:
    mean, std, bad = v
    if bad == n:
        return f"diverged ({n}/{n})"
    if n - bad == 1 and n > 1:
        return f"{mean:.4f} (1 seed; {bad}/{n} diverged)"
    return f"{mean:.4f} ± {std:.4f}" + (f" ({bad}/{n} diverged)" if bad else "")


def write_outputs(args, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(args.out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    metrics = [k for k in runs[0]["results"][str(args.ks[0])]["base"] if k == "objective" or k.endswith("_auc")]
    lines = [
        f"## {args.name}\n",
        f"Command: `{args.command}`\n",
        (f"Held-out groups: from `{Path(args.held_out_file).name}` (all rows of the config's splits train). " if args.held_out_file else "")
        + f"Seeds {args.seeds}; {runs[0]['held_out_groups']} held-out groups per seed (never seen in training), "
        f"{runs[0]['train_groups']} training groups, {runs[0]['train_rows']} training rows; query = each held-out "
        f"group's last {args.query} rows; metrics pooled over the held-out groups' query rows; mean ± std over seeds.\n",
    ]
    for metric in metrics:
        table = summarise(runs, args.ks, metric)
        better = "lower" if metric == "objective" else "higher"
        title = "task-weighted query loss" if metric == "objective" else f"query {metric.replace('_', ' ').upper().replace(' AUC', ' AUC')}"
        lines.append(f"\n**{title}** ({better} is better)\n")
        lines.append("| method | " + " | ".join(f"K={k}" for k in args.ks) + " |")
        lines.append("|---|" + "---|" * len(args.ks))
        for m in METHODS:
            lines.append(f"| {m} | " + " | ".join(cell(table[m][k], len(runs)) for k in args.ks) + " |")
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for m in METHODS:
            mean = np.array([table[m][k][0] for k in args.ks])
            std = np.array([table[m][k][1] for k in args.ks])
            ax.errorbar(args.ks, mean, yerr=std, marker="o", capsize=3, label=m)
        ax.set_xlabel("K support rows per held-out group")
        ax.set_ylabel(title)
        ax.set_title(args.name)
        ax.legend(fontsize=7)
        fig.tight_layout()
        png = plots / f"meta_{args.name}_{metric}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines.append(f"\n![{title}](plots/{png.name})\n")
    t = {k: np.mean([r["timings"][k] for r in runs]) for k in runs[0]["timings"]}
    lines.append("\nWall-clock per seed (1 thread): " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()) + "\n")
    section = out_dir / f"meta_learning_{args.name}.md"
    atomic_write_text(section, "\n".join(lines))
    raw = out_dir / f"meta_learning_{args.name}.json"
    atomic_write_text(raw, json.dumps(runs, indent=1))
    print(f"wrote {section} and {raw}")


def main() -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, help="experiment YAML (its dataset needs a group column)")
    p.add_argument("--synth-simple", action="store_true", help="generate `msmt synth simple` data and use its config")
    p.add_argument("--synth-rows", type=int, default=30000)
    p.add_argument("--set", action="append", default=[], help="config override, e.g. dataset.group=user_id")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ks", type=int, nargs="+", default=[0, 5, 10, 20, 50])
    p.add_argument("--query", type=int, default=20)
    p.add_argument("--test-groups", type=int, default=40)
    p.add_argument("--scratch-steps", type=int, default=30)
    p.add_argument("--scratch-lr", type=float, default=0.01)
    p.add_argument("--held-out-file", type=Path, default=None,
                   help="take the held-out groups from this file (e.g. the simulator's new_scenario.csv); all rows of the config train")
    p.add_argument("--time-column", default=None,
                   help="order each group's rows by this column (seeded shuffle within ties), e.g. day")
    p.add_argument("--name", default="run")
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--render", action="store_true", help="rebuild the Markdown and plots from the JSON of an earlier run")
    args = p.parse_args()
    args.command = "python benchmarks/meta_learning.py " + " ".join(a for a in sys.argv[1:] if a != "--render")
    if args.render:
        write_outputs(args, json.loads((Path(args.out_dir) / f"meta_learning_{args.name}.json").read_text()))
        return
    torch.set_num_threads(1)
    if args.synth_simple:
        from msmt.synth.simple import write_simple

        tmp = Path(tempfile.mkdtemp(prefix="msmt_meta_"))
        write_simple(tmp, rows=args.synth_rows, seed=0)
        args.config = tmp / "experiment.yaml"
    if args.config is None:
        p.error("give --config or --synth-simple")
    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(args, seed))
        base = runs[-1]["results"]
        print(f"seed {seed} done in {time.perf_counter() - t0:.0f}s: " + "; ".join(
            f"K={k} " + " ".join(f"{m}={base[str(k)][m]['objective']:.4f}" for m in METHODS) for k in args.ks))
    write_outputs(args, runs)


if __name__ == "__main__":
    main()
