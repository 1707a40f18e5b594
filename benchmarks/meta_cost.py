"""Cost of "a model per group": 10,000 personal blocks vs 10,000 full models, time to adapt.

Measured, not estimated, except where said: the blocks are really written (one safetensors file
per group + index.json, through :func:`msmt.scoring.personal.save_blocks`); a full model is written once
with the run-directory writer and its size multiplied by the number of groups (writing 10,000
copies would only repeat the same byte count). Adaptation time is the wall-clock of
:func:`msmt.meta.adapt` (``meta.inner_steps`` steps on K support rows) for real groups of the
dataset, on 1 thread; composition time is scoring rows with base + block (block read from disk)
against the base alone.

    python benchmarks/meta_cost.py --config configs/movielens.yaml
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from msmt.data.fit import fit_schema
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.meta import GroupIndex, adapt, split_parameters
from msmt.meta.episodes import group_values
from msmt.models import build_model
from msmt.rundir.blocks import load_block, read_index, save_blocks
from msmt.rundir.layout import save_weights
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/movielens.yaml"))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--blocks", type=int, default=10_000)
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    p.add_argument("--groups", type=int, default=30, help="groups timed per K")
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
        save_weights(model, work / "model.safetensors")
        full_bytes = (work / "model.safetensors").stat().st_size
        block = {n: params[n].detach() for n in split.personal}
        t0 = time.perf_counter()
        for start in range(0, args.blocks, 1000):  # save_blocks rewrites the index per call
            save_blocks(work, {f"g{i:06d}": block for i in range(start, min(start + 1000, args.blocks))})
        write_s = time.perf_counter() - t0
        blocks_size, blocks_alloc = disk_usage(work / "blocks")
        one_block = (work / "blocks" / read_index(work)["g000000"]).stat().st_size

        data = encode_frame(train, schema)
        index = GroupIndex(group_values(train, spec.group))
        tasks = spec.tasks
        adapt_rows = []
        for k in args.ks:
            groups = [i for i in index.eligible(k)][: args.groups]
            times = []
            for g in groups:
                support = take(data, index.rows[g][:k])
                t0 = time.perf_counter()
                adapt(model, split, support, tasks, cfg.meta.inner_steps, cfg.meta.inner_lr, cfg.meta.inner_max_grad_norm)
                times.append(time.perf_counter() - t0)
            adapt_rows.append((k, len(groups), 1000 * np.median(times), 1000 * np.percentile(times, 90)))

        one = take({k: v for k, v in data.items() if k not in ("labels", "weight")}, slice(0, 1))
        hundred = take({k: v for k, v in data.items() if k not in ("labels", "weight")}, slice(0, 100))
        idx = read_index(work)  # read once, as a server would
        with torch.no_grad():
            base_1 = median_ms(lambda: model(one), 200)
            comp_1 = median_ms(lambda: forward_with_block(model, load_block(work, "g000123", idx), one), 200)
            base_100 = median_ms(lambda: model(hundred), 100)
            comp_100 = median_ms(lambda: forward_with_block(model, load_block(work, "g000123", idx), hundred), 100)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = 1024 * 1024
    n = args.blocks
    lines = [
        "## Cost of personal blocks\n",
        f"Command: `python benchmarks/meta_cost.py {' '.join(sys.argv[1:])}` "
        f"(model `{cfg.model.name}` of `{args.config}`, personal = `{cfg.meta.personal}`, 1 thread, "
        f"shared machine; {os.cpu_count()} cores visible).\n",
        f"Parameters: {n_total:,} in the model, {n_personal:,} personal ({100 * n_personal / n_total:.2f}%), "
        f"{len(split.personal)} personal tensors.\n",
        "| storage for groups | bytes (sum of files) | on disk | per group |",
        "|---|---|---|---|",
        f"| 1 full model (`model.safetensors`) | {full_bytes / mib:.2f} MiB | – | – |",
        f"| {n:,} full models (1 × {n:,}, computed) | {full_bytes * n / mib:,.0f} MiB | – | {full_bytes / 1024:,.1f} KiB |",
        f"| base once + {n:,} blocks (written) | {(full_bytes + blocks_size) / mib:,.1f} MiB | "
        f"{(full_bytes + blocks_alloc) / mib:,.1f} MiB | {one_block / 1024:,.1f} KiB per block |",
        "",
        f"Ratio: {n:,} full models take {full_bytes * n / (full_bytes + blocks_size):,.0f}× the bytes of base + "
        f"{n:,} blocks. Writing the {n:,} blocks (atomic, one file each + index) took {write_s:.1f} s.\n",
        f"**Time to adapt one group** ({cfg.meta.inner_steps} inner steps, lr {cfg.meta.inner_lr}, eval mode, 1 thread):\n",
        "| K support rows | groups timed | median | p90 |",
        "|---|---|---|---|",
        *[f"| {k} | {g} | {med:.1f} ms | {p90:.1f} ms |" for k, g, med, p90 in adapt_rows],
        "",
        "**Scoring with a block** (index read once; the block file read from disk on every call, no cache; median):\n",
        "| rows | base only | base + block |",
        "|---|---|---|",
        f"| 1 | {base_1:.2f} ms | {comp_1:.2f} ms |",
        f"| 100 | {base_100:.2f} ms | {comp_100:.2f} ms |",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
