"""Cost of "a model per group": 10,000 personal blocks vs 10,000 full models, time to adapt.

Measured, not estimated, except where said: the blocks are really written (one safetensors file
per group + index.json, through :func:`msmt.rundir.blocks.save_blocks`); a full model is written once
with the run-directory writer and its size multiplied by the number of groups (writing 10,000
copies would only repeat the same byte count). Adaptation time is the wall-clock of
:func:`msmt.meta.adapt` (``meta.inner_steps`` steps on K support rows) for real groups of the
dataset, on 1 thread; composition time is scoring rows with base + block (block read from disk)
against the base alone. Meta-training time is the wall-clock of :func:`msmt.meta.meta_train` per
algorithm as msmt runs it (the frozen base out of autograd, :func:`msmt.meta.params.trainable_only`, and
computed once per batch in each inner loop, :mod:`msmt.meta.replay`) against the earlier behaviour (every
parameter requiring grad, the base recomputed on every call), interleaved, the final parameters compared;
``--meta-run RUN`` times it from a trained run's base (the cold-start study's advertiser M2M).

    python benchmarks/meta_cost.py --config configs/movielens.yaml [--meta-run RUN --log-reference]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from msmt.data.fit import fit_schema
from msmt.data.io import atomic_write_text
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.experiments.run import load_in_memory
from msmt.meta import GroupIndex, adapt, meta_train, plan_meta, split_parameters
from msmt.meta.episodes import group_values
from msmt.models import build_model
from msmt.rundir.blocks import load_block, read_index, save_blocks
from msmt.rundir.layout import load_run, save_weights
from msmt.runtime.host import describe_cpu
from msmt.scoring.predict import forward_with_block
from msmt.spec.batch import take
from msmt.spec.config import load_experiment


def disk_usage(path: Path) -> tuple[int, int]:
    """(sum of file sizes, bytes allocated on disk) under ``path``."""
    size = alloc = 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            size += st.st_size
            alloc += st.st_blocks * 512
    return size, alloc


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def storage(model, split, params: dict, work: Path, n_blocks: int) -> dict:
    """Bytes of one full model and of ``n_blocks`` personal blocks really written under ``work``."""
    save_weights(model, work / "model.safetensors")
    block = {n: params[n].detach() for n in split.personal}
    t0 = time.perf_counter()
    for start in range(0, n_blocks, 1000):  # save_blocks rewrites the index per call
        save_blocks(work, {f"g{i:06d}": block for i in range(start, min(start + 1000, n_blocks))})
    write_s = time.perf_counter() - t0
    blocks_size, blocks_alloc = disk_usage(work / "blocks")
    return {"full_bytes": (work / "model.safetensors").stat().st_size, "write_s": write_s, "blocks_size": blocks_size,
            "blocks_alloc": blocks_alloc, "one_block": (work / "blocks" / read_index(work)["g000000"]).stat().st_size}


def adaptation_times(model, split, cfg, data, index, ks: list[int], n_groups: int) -> list[tuple[int, int, float, float, float]]:
    """(K, groups timed, median ms, p90 ms, median ms with plain steps) of :func:`msmt.meta.adapt` on K
    support rows of real groups: with the config's ``meta.inner_backtrack`` and, alternating on the same
    groups, without backtracking."""
    rows = []
    for k in ks:
        groups = [i for i in index.eligible(k)][:n_groups]
        times = {cfg.meta.inner_backtrack: [], 0: []} if cfg.meta.inner_backtrack else {0: []}
        for g in groups:
            support = take(data, index.rows[g][:k])
            for backtrack, kept in times.items():
                t0 = time.perf_counter()
                adapt(model, split, support, cfg.dataset.tasks, cfg.meta.inner_steps, cfg.meta.inner_lr, cfg.meta.inner_max_grad_norm,
                      backtrack)
                kept.append(time.perf_counter() - t0)
        chosen = times[cfg.meta.inner_backtrack]
        rows.append((k, len(groups), 1000 * np.median(chosen), 1000 * np.percentile(chosen, 90), 1000 * np.median(times[0])))
    return rows


@contextmanager
def _untouched(model, names):
    """The earlier behaviour in place of :func:`msmt.meta.params.trainable_only` and
    :func:`msmt.meta.replay.replaying_frozen_base`: the base keeps requiring grad and is recomputed on every call."""
    yield


@contextmanager
def _earlier_behaviour():
    with mock.patch("msmt.meta.algorithms.trainable_only", _untouched), mock.patch("msmt.meta.params.replaying_frozen_base", _untouched):
        yield


def meta_training_ab(make_model, cfg, train, data, episodes: int, repeats: int, log_reference: bool) -> list[tuple[str, float, float, bool]]:
    """Per algorithm: (name, median seconds as msmt meta-trains, median seconds with the earlier behaviour,
    final parameters equal) of ``episodes`` episodes of :func:`msmt.meta.meta_train` from the same model
    (``make_model()``), the two arms interleaved ``repeats`` times after one untimed round."""
    out = []
    for algorithm in ("maml", "fomaml", "reptile", "metasgd"):
        meta = cfg.meta.model_copy(update={"algorithm": algorithm, "episodes": episodes, "log_reference": log_reference})
        times: dict[bool, list[float]] = {True: [], False: []}
        finals: dict[bool, dict] = {}
        for repeat in range(repeats + 1):  # the first round warms up, untimed
            for now in (True, False):
                torch.manual_seed(0)
                model = make_model()
                plan = plan_meta(model, meta, train)
                with nullcontext() if now else _earlier_behaviour():
                    t0 = time.perf_counter()
                    meta_train(model, meta, plan, data)
                    if repeat:
                        times[now].append(time.perf_counter() - t0)
                finals[now] = {n: p.detach().clone() for n, p in model.named_parameters()}
        same = all(torch.equal(finals[True][n], finals[False][n]) for n in finals[True])
        out.append((algorithm, float(np.median(times[True])), float(np.median(times[False])), same))
    return out


def scoring_times(model, data, work: Path) -> dict[int, tuple[float, float]]:
    """rows -> (base only ms, base + block read from disk ms), medians, for 1 and 100 rows."""
    inputs = {k: v for k, v in data.items() if k not in ("labels", "weight")}
    idx = read_index(work)  # read once, as a server would
    out = {}
    with torch.no_grad():
        for n, repeat in ((1, 200), (100, 100)):
            rows = take(inputs, slice(0, n))
            base = median_ms(lambda rows=rows: model(rows), repeat)
            comp = median_ms(lambda rows=rows: forward_with_block(model, load_block(work, "g000123", idx), rows), repeat)
            out[n] = (base, comp)
    return out


def report(args, cfg, n_total: int, n_personal: int, n_tensors: int, st: dict, adapt_rows: list, scoring: dict, ab_cfg, ab: list) -> list[str]:
    mib = 1024 * 1024
    n = args.blocks
    full_bytes, blocks_size, blocks_alloc = st["full_bytes"], st["blocks_size"], st["blocks_alloc"]
    return [
        "## Cost of personal blocks\n",
        f"Command: `python benchmarks/meta_cost.py {' '.join(sys.argv[1:])}` "
        f"(model `{cfg.model.name}` of `{args.config}`, personal = `{cfg.meta.personal}`, 1 thread, "
        f"shared machine: {describe_cpu()}).\n",
        f"Parameters: {n_total:,} in the model, {n_personal:,} personal ({100 * n_personal / n_total:.2f}%), "
        f"{n_tensors} personal tensors.\n",
        "| storage for groups | bytes (sum of files) | on disk | per group |",
        "|---|---|---|---|",
        f"| 1 full model (`model.safetensors`) | {full_bytes / mib:.2f} MiB | – | – |",
        f"| {n:,} full models (1 × {n:,}, computed) | {full_bytes * n / mib:,.0f} MiB | – | {full_bytes / 1024:,.1f} KiB |",
        f"| base once + {n:,} blocks (written) | {(full_bytes + blocks_size) / mib:,.1f} MiB | "
        f"{(full_bytes + blocks_alloc) / mib:,.1f} MiB | {st['one_block'] / 1024:,.1f} KiB per block |",
        "",
        f"Ratio: {n:,} full models take {full_bytes * n / (full_bytes + blocks_size):,.0f}× the bytes of base + "
        f"{n:,} blocks. Writing the {n:,} blocks (atomic, one file each + index) took {st['write_s']:.1f} s.\n",
        f"**Time to adapt one group** ({cfg.meta.inner_steps} inner steps, lr {cfg.meta.inner_lr}, up to {cfg.meta.inner_backtrack} "
        "halvings of a step that would raise the support loss, eval mode, 1 thread):\n",
        "| K support rows | groups timed | median | p90 | median with plain steps (no backtracking) |",
        "|---|---|---|---|---|",
        *[f"| {k} | {g} | {med:.1f} ms | {p90:.1f} ms | {plain:.1f} ms |" for k, g, med, p90, plain in adapt_rows],
        "",
        "**Scoring with a block** (index read once; the block file read from disk on every call, no cache; median):\n",
        "| rows | base only | base + block |",
        "|---|---|---|",
        f"| 1 | {scoring[1][0]:.2f} ms | {scoring[1][1]:.2f} ms |",
        f"| 100 | {scoring[100][0]:.2f} ms | {scoring[100][1]:.2f} ms |",
        "",
        *meta_ab_lines(args, ab_cfg, ab),
    ]


def meta_ab_lines(args, cfg, ab: list) -> list[str]:
    where = f"the trained base of `{args.meta_run}` (model `{cfg.model.name}`)" if args.meta_run else f"a freshly built `{cfg.model.name}`"
    return [
        f"**Meta-training time** ({args.episodes} episodes of {cfg.meta.groups_per_episode} groups from {where}, "
        f"`meta.shared` = {cfg.meta.shared or 'none'}, `meta.log_reference` = {args.log_reference}, 1 thread, median of "
        f"{args.repeats} interleaved runs after an untimed one): as msmt meta-trains (only the personal block and `meta.shared` "
        "require grad, and each inner loop computes the frozen base once per batch: `msmt.meta.params.trainable_only`, "
        "`msmt.meta.replay`) against the earlier behaviour (every parameter requiring grad, the base recomputed on every "
        "call of the inner loop).\n",
        "| algorithm | now | earlier | speed-up | final parameters equal |",
        "|---|---|---|---|---|",
        *[f"| {a} | {t_on:.2f} s | {t_off:.2f} s | {t_off / t_on:.2f}× | {'yes' if same else '**no**'} |" for a, t_on, t_off, same in ab],
        "",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/movielens.yaml"))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--blocks", type=int, default=10_000)
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    p.add_argument("--groups", type=int, default=30, help="groups timed per K")
    p.add_argument("--episodes", type=int, default=20, help="meta-training episodes per timed run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per arm and algorithm")
    p.add_argument("--log-reference", action="store_true", help="meta.log_reference on in the timed meta-training (the cold-start study's setting)")
    p.add_argument("--meta-run", type=Path, default=None,
                   help="time meta-training from this trained run's base, config and training rows (default: a fresh model of --config)")
    p.add_argument("--out", type=Path, default=Path("docs/results/meta_learning_cost.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_experiment(args.config, args.set)
    spec = cfg.dataset
    train = load_splits(spec)["train"]
    schema = fit_schema(train, spec)
    model = build_model(schema, cfg.model).eval()
    split = split_parameters(model, cfg.meta)
    params = dict(model.named_parameters())
    n_total = sum(p.numel() for p in model.parameters())
    n_personal = sum(params[n].numel() for n in split.personal)

    work = Path(tempfile.mkdtemp(prefix="msmt_cost_"))
    try:
        st = storage(model, split, params, work, args.blocks)
        data = encode_frame(train, schema)
        adapt_rows = adaptation_times(model, split, cfg, data, GroupIndex(group_values(train, spec.group)), args.ks, args.groups)
        scoring = scoring_times(model, data, work)
        if args.meta_run:
            run = load_run(args.meta_run)
            ab_cfg, ab_splits, _, ab_encoded = run.config, *load_in_memory(run.config.dataset)
            ab = meta_training_ab(lambda: copy.deepcopy(run.model), ab_cfg, ab_splits["train"], ab_encoded["train"], args.episodes, args.repeats, args.log_reference)
        else:
            ab_cfg = cfg
            ab = meta_training_ab(lambda: build_model(schema, cfg.model), cfg, train, data, args.episodes, args.repeats, args.log_reference)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = report(args, cfg, n_total, n_personal, len(split.personal), st, adapt_rows, scoring, ab_cfg, ab)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
