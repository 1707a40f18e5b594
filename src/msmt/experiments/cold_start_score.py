"""Score one state of the cold-start protocol: every method at every K, one number per group.

Per group (rows in time order: the panel's time, else the time split's column), with K support
rows: support = its earliest K rows, query = its rows after them; a group counts at K only when
it has more than K rows. Per method, on the same query rows:

* ``base``: the conventionally trained model, no adaptation;
* ``finetune``: the base's personal block adapted on the support rows by plain gradient descent
  (``meta.inner_steps`` steps of ``meta.inner_lr``, clipped at ``meta.inner_max_grad_norm``: the
  steps every meta method gets);
* ``maml`` / ``fomaml`` / ``reptile`` / ``metasgd``: the meta-trained run adapted the same way
  (Meta-SGD with its learned per-parameter rates); K = 0 scores the meta-learned start;
* ``idwarmup``: the run with Meta-Embedding's generator (a new ID reads the generated embedding),
  fine-tuned like ``finetune`` for K > 0; at K = 0 it is compared with ``base`` (the OOV row);
* ``naive_mean`` (simulator): the trailing-mean forecaster; ``naive``: each group's mean of its
  support rows' observed labels in the query row's scenario (all its support rows when it has
  none there), for every query row (count tasks, K > 0);
* ``oracle`` (simulator): the simulator's expected value given the latent state (``true_<label>``),
  at every K: how far any forecaster could go.

Adaptation goes through :func:`msmt.meta.adapt_groups` and scoring through
:func:`msmt.scoring.predict.predict` with the blocks, the path of ``msmt adapt`` / ``msmt predict``.
Measures per group: AUC of a binary task (groups with both classes), NMAE = Σ|y − ŷ| / Σ y of a
count task (groups with Σ y > 0); the same pooled over the state's query rows (``*_pooled``,
group ``<all>``); plus the block's displacement ‖φ_g − φ‖₂.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from msmt.data.io import write_table
from msmt.data.tensorize import encode_frame
from msmt.experiments.cold_start import Study
from msmt.meta import adapt_groups, split_parameters
from msmt.meta.algorithms import episode_time, numeric_time
from msmt.meta.episodes import GroupIndex, group_values
from msmt.rundir.layout import LoadedRun, load_meta_rates, load_run
from msmt.scoring.predict import predict
from msmt.spec.batch import take
from msmt.spec.task_kinds import rules


class Blocks:
    """{group: φ_g} as the block source :func:`msmt.scoring.predict.predict` reads."""

    def __init__(self, blocks: dict):
        self.blocks = blocks

    def has(self, group: str) -> bool:
        return group in self.blocks

    def get(self, group: str):
        return self.blocks.get(group)


def splits_at(frame: pd.DataFrame, group: str, time: str | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(support rows, query rows) of ``frame`` at K = ``k``: per group with more than k rows, its
    earliest k rows (by ``time``, ties in table order) and the rows after them."""
    index = GroupIndex(group_values(frame, group), numeric_time(frame, time) if time else None)
    support, query = [], []
    for rows in index.rows:
        if len(rows) > k:
            support.append(rows[:k].numpy())
            query.append(rows[k:].numpy())
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(support) if support else empty), (np.concatenate(query) if query else empty)


def per_group_measure(task) -> str | None:
    """The measure a task is scored by per group: AUC where the kind's table shows it, else NMAE."""
    primary = rules(task).primary
    return "auc" if "auc" in primary else "nmae" if "nmae" in primary else None


def group_measures(groups: np.ndarray, labels: np.ndarray, mask: np.ndarray, preds: dict[str, np.ndarray], tasks) -> list[dict]:
    """[{group, task, metric, value, rows}] of one method's query predictions."""
    out = []
    frame = pd.DataFrame({"group": groups, "i": np.arange(len(groups))})
    for g, part in frame.groupby("group", sort=True):
        rows = part["i"].to_numpy()
        for t_index, task in enumerate(tasks):
            if task.name not in preds:
                continue
            keep = rows[mask[rows, t_index]]
            y, p = labels[keep, t_index], preds[task.name][keep]
            measure = per_group_measure(task)
            if measure == "auc":
                if len(np.unique(y)) == 2:
                    out.append(dict(group=g, task=task.name, metric="auc", value=float(roc_auc_score(y, p)), rows=len(keep)))
            elif measure == "nmae" and y.sum() > 0:
                out.append(dict(group=g, task=task.name, metric="nmae", value=float(np.abs(y - p).sum() / y.sum()), rows=len(keep)))
    return out


def pooled_measures(labels: np.ndarray, mask: np.ndarray, preds: dict[str, np.ndarray], tasks) -> list[dict]:
    """The same measures over every query row of the state at once (``auc_pooled``, ``nmae_pooled``;
    group ``<all>``): defined where groups have too few rows or one class only (the new scenario)."""
    out = []
    for t_index, task in enumerate(tasks):
        measure = per_group_measure(task)
        if task.name not in preds or measure is None:
            continue
        keep = mask[:, t_index]
        y, p = labels[keep, t_index], preds[task.name][keep]
        if measure == "auc" and len(np.unique(y)) == 2:
            out.append(dict(group="<all>", task=task.name, metric="auc_pooled", value=float(roc_auc_score(y, p)), rows=int(keep.sum())))
        elif measure == "nmae" and y.sum() > 0:
            out.append(dict(group="<all>", task=task.name, metric="nmae_pooled", value=float(np.abs(y - p).sum() / y.sum()), rows=int(keep.sum())))
    return out


def support_means(support: pd.DataFrame, query: pd.DataFrame, tasks) -> dict[str, np.ndarray]:
    """The per-group naive forecast of each count task, per query row: the mean of the task's
    observed labels on the group's support rows *in the query row's scenario* (an advertiser's
    search and splash traffic differ by orders of magnitude), else over all of the group's
    support rows when it has none in that scenario.

    ``support`` / ``query``: columns ``group``, ``scenario`` and, per task ``i``, ``y{i}`` (label)
    and ``m{i}`` (observed); returns ``{task: [len(query)]}`` (NaN for a group without support)."""
    out = {}
    for t_index, task in enumerate(tasks):
        if per_group_measure(task) != "nmae":
            continue
        seen = support[support[f"m{t_index}"] > 0]
        by_scenario = seen.groupby(["group", "scenario"])[f"y{t_index}"].mean()
        by_group = seen.groupby("group")[f"y{t_index}"].mean()
        keys = pd.MultiIndex.from_arrays([query["group"], query["scenario"]])
        pred = by_scenario.reindex(keys).to_numpy(dtype=np.float64)
        fallback = by_group.reindex(query["group"]).to_numpy(dtype=np.float64)
        out[task.name] = np.where(np.isnan(pred), fallback, pred)
    return out


def label_table(groups: np.ndarray, scenarios: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """Rows of (group, scenario, y0, m0, y1, m1, …) for :func:`support_means`."""
    cols = {"group": groups, "scenario": scenarios}
    for i in range(labels.shape[1]):
        cols[f"y{i}"], cols[f"m{i}"] = labels[:, i], mask[:, i]
    return pd.DataFrame(cols)


Split = Callable[[pd.DataFrame, int], tuple[np.ndarray, np.ndarray]]


def first_k(group: str, time: str | None) -> Split:
    """The protocol's split as a function of (frame, K): :func:`splits_at` on ``group`` and ``time``."""
    return lambda frame, k: splits_at(frame, group, time, k)


def truth(frame: pd.DataFrame, rows: np.ndarray, tasks) -> dict[str, np.ndarray]:
    """The oracle's forecast of ``frame``'s ``rows``: per task with a ``true_<label>`` column (the
    simulator's expected value given its latent state, :mod:`msmt.synth.advertiser`), that column;
    ``{}`` for data without one."""
    return {t.name: frame[f"true_{t.label}"].to_numpy(dtype=np.float64)[rows] for t in tasks if f"true_{t.label}" in frame.columns}


def score_state(runs: dict[str, LoadedRun], frame: pd.DataFrame, group: str, ks: Sequence[int],
                split: Split | None = None, personal: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Long table (K, method, group, task, metric, value, rows) of one state's rows ``frame``.

    ``split(frame, K)`` → (support rows, query rows); default :func:`first_k`, the protocol's.
    ``personal``: {method name: ``meta.personal`` globs} of the base run's fine-tuning variants;
    default ``{"finetune": <the run's own>}``. Methods adapted at K > 0: those variants and every run
    but ``base`` and ``naive_mean``; ``naive`` (per-group support means) with ``naive_mean``;
    ``oracle`` wherever ``frame`` has ``true_<label>`` columns (every K).
    """
    base = runs["base"]
    spec = base.schema.spec
    tasks = spec.tasks
    encoded = encode_frame(frame, base.schema, with_labels=True)
    labels, mask = encoded["labels"].numpy(), encoded["task_mask"].numpy()
    groups = group_values(frame, group)
    split = split or first_k(group, episode_time(spec) or ("timestamp" if "timestamp" in frame.columns else None))
    variants = [(name, base, blocks) for name, blocks in (personal or {"finetune": None}).items()]
    methods = variants + [(m, run, None) for m, run in runs.items()]
    table = label_table(groups, encoded["scenario"].numpy(), labels, mask)  # the naive forecast's input, every K
    records = []

    def add(k: int, method: str, q_rows: np.ndarray, preds: dict[str, np.ndarray], extra=()) -> None:
        q_groups, y, m = groups[q_rows], labels[q_rows], mask[q_rows]
        scored = group_measures(q_groups, y, m, preds, tasks) + pooled_measures(y, m, preds, tasks)
        records.extend(dict(K=k, method=method, **r) for r in [*scored, *extra])

    for k in ks:
        s_rows, q_rows = split(frame, k)
        if len(q_rows) == 0:
            continue
        query = take(encoded, torch.from_numpy(q_rows))
        support = take(encoded, torch.from_numpy(s_rows))
        q_groups = groups[q_rows]
        for method, run, block in methods:
            blocks, extra = {}, []
            if k > 0 and method not in ("base", "naive_mean"):
                meta = run.config.meta if block is None else run.config.meta.model_copy(update={"personal": block})
                rates = load_meta_rates(run.path) if method == "metasgd" else None
                blocks, stats = adapt_groups(run.model, split_parameters(run.model, meta), frame.iloc[s_rows].reset_index(drop=True),
                                             support, group, tasks, meta, rates)
                extra = [dict(group=g, task="*", metric="displacement", value=v, rows=stats.rows[g]) for g, v in stats.displacement.items()]
            preds = predict(run.model, query, groups=q_groups if blocks else None, blocks=Blocks(blocks) if blocks else None).values
            add(k, method, q_rows, preds, extra)
        if k > 0 and "naive_mean" in runs:
            add(k, "naive", q_rows, support_means(table.iloc[s_rows], table.iloc[q_rows], tasks))
        if oracle := truth(frame, q_rows, tasks):
            add(k, "oracle", q_rows, oracle)
    return pd.DataFrame(records)


def newer_than_runs(scores: Path, run_dirs) -> bool:
    """Whether ``scores`` (a table scored from the runs in ``run_dirs``) exists and was written after every
    one of them finished (its ``metrics.json``): a retrained run invalidates it."""
    return scores.exists() and all(scores.stat().st_mtime >= (d / "metrics.json").stat().st_mtime for d in run_dirs)


def study_records(study: Study, cache: bool = True) -> pd.DataFrame:
    """Every world × seed × state scored: (world, state, seed, K, method, group, task, metric, value, rows).

    Seed-major (a stopped study has whole seeds); a world × seed's records are kept in its run
    folder and reused while its runs are (same overrides, same code) and the K values match."""
    frames = []
    for seed in study.seeds:
        for world in study.worlds:
            held, run_dirs = study.prepare(world, seed)
            cached = study.work / "runs" / world.name / f"seed{seed}" / f"records-{_key(held, study)}.csv"
            if cache and newer_than_runs(cached, run_dirs.values()):
                frames.append(pd.read_csv(cached, dtype={"group": str}))
                continue
            runs = {m: load_run(d) for m, d in run_dirs.items()}
            parts = []
            for state, frame in held.states.items():
                study.log(f"scoring {world.name} seed {seed}: {state} ({frame[world.group].nunique()} groups, {len(frame)} rows)")
                part = score_state(runs, frame, world.group, study.ks)
                parts.append(part.assign(world=world.name, state=state, seed=seed))
            records = pd.concat(parts, ignore_index=True)
            write_table(records, cached)
            frames.append(records)
    return pd.concat(frames, ignore_index=True)


def _key(held, study: Study) -> str:
    return hashlib.sha1(json.dumps([held.held, list(study.ks), {s: len(f) for s, f in held.states.items()}]).encode()).hexdigest()[:10]
