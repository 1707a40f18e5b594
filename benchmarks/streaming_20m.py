"""One training epoch over a large synthetic Parquet file, streamed, with peak memory measured.

    python benchmarks/streaming_20m.py --rows 5000000 20000000 --dir /tmp/msmt-stream [--doc docs/results/streaming.md]

Step 1 (a child process) writes ``train.parquet`` (row groups of 500,000 rows) and a small
``validation.parquet`` under ``--dir``; never commit them. Step 2 (another child process)
runs ``msmt train`` with ``train.streaming=true`` for one epoch and reports its own peak
resident memory (``ru_maxrss``), so the generator's memory is not counted. With several ``--rows`` the
sizes run one after the other (each file replaces the last) and ``--doc`` gets one table row per size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from msmt.data.io import atomic_write_text
from msmt.runtime.host import describe_cpu

SCENARIOS = np.array(["feed", "search", "display", "minor"])
CHUNK = 500_000


def _chunk(rng: np.random.Generator, n: int, users: int, items: int) -> pa.Table:
    s = rng.choice(4, size=n, p=[0.4, 0.33, 0.25, 0.02])
    u = rng.integers(0, users, n)
    i = rng.integers(0, items, n)
    price = np.exp(rng.normal(3.0, 0.8, n))
    logit = -0.6 + 0.3 * s - 0.4 * (np.log(price) - 3.0) / 0.8 + np.sin(u * 0.001) + np.cos(i * 0.01)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    dwell = rng.poisson(np.exp(1.0 + 0.5 * click))
    return pa.table({
        "scenario": pa.array(SCENARIOS[s]),
        "user_id": pa.array(u.astype(np.int64)),
        "item_id": pa.array(i.astype(np.int64)),
        "price": pa.array(price.round(2)),
        "click": pa.array(click),
        "dwell": pa.array(dwell.astype(np.int32)),
    })


def generate(rows: int, out: Path, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(out / "train.parquet", _chunk(rng, 1, 10, 10).schema) as writer:
        done = 0
        while done < rows:
            n = min(CHUNK, rows - done)
            writer.write_table(_chunk(rng, n, users=5_000_000, items=50_000), row_group_size=CHUNK)
            done += n
    pq.write_table(_chunk(rng, 20_000, users=5_000_000, items=50_000), out / "validation.parquet")
    dataset = {
        "name": "stream_bench",
        "files": {"train": str(out / "train.parquet"), "validation": str(out / "validation.parquet")},
        "scenario": {"column": "scenario"},
        "features": {
            "sparse": [{"name": "user_id", "hash_buckets": 1 << 20}, "item_id"],
            "dense": [{"name": "price", "transform": "log1p"}],
        },
        "tasks": [{"name": "click", "label": "click", "kind": "binary"}, {"name": "dwell", "label": "dwell", "kind": "count"}],
    }
    experiment = {
        "dataset": dataset,
        "model": {"name": "shared_bottom", "embedding_dim": 8, "hidden_dims": [64], "tower_dims": [16]},
        "train": {"epochs": 1, "batch_size": 4096, "lr": 0.003, "streaming": True, "shuffle_buffer": 262144,
                  "num_threads": 1, "progress": False, "eval_batch_size": 8192},
    }
    (out / "experiment.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))


def train(out: Path) -> dict:
    from msmt.experiments.run import run_experiment
    from msmt.spec.config import load_experiment

    start = time.perf_counter()
    metrics = run_experiment(load_experiment(out / "experiment.yaml"), out / "run", overwrite=True)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = pq.ParquetFile(out / "train.parquet").metadata.num_rows
    return {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds), "peak_rss_mb": round(peak_mb),
            "val_click_auc": metrics["val"]["overall"]["click"]["auc"]}


def measure(rows: int, out: Path) -> dict:
    """Generate ``rows`` rows and train one streamed epoch on them, each in its own child process."""
    t = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--step", "generate", "--rows", str(rows), "--dir", str(out)], check=True)
    print(f"generated {rows:,} rows in {time.perf_counter() - t:.0f} s", flush=True)
    res = subprocess.run([sys.executable, __file__, "--step", "train", "--dir", str(out)], check=True, capture_output=True, text=True)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def page(results: list[dict], command: str) -> str:
    from msmt.rundir.provenance import source_hash

    rows = "".join(
        f"| {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} | {r['peak_rss_mb']} | {r['val_click_auc']:.4f} |\n" for r in results
    )
    return (
        "# Streaming benchmark (benchmarks/streaming_20m.py)\n\n"
        f"Command: `{command}`, msmt's source {source_hash()[:12]}, {describe_cpu()}, "
        "one training thread. One epoch of `shared_bottom` over a synthetic Parquet file read by row group "
        "(500,000 rows each), hashed `user_id` (2^20 buckets), batch 4,096, shuffle buffer 262,144 rows.\n\n"
        "| rows | wall time (s) | rows/s | peak RSS (MB) | val click AUC |\n|---|---|---|---|---|\n"
        f"{rows}\n"
        "Wall time includes the one-pass encoder fit (a full read of the file), the epoch, and validation; generating "
        "the file is not counted. Peak RSS is the training process's own (`ru_maxrss`). It is bounded by one row "
        "group plus the shuffle buffer, not by the file's size.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[20_000_000])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/msmt-stream"))
    ap.add_argument("--doc", type=Path, default=None)
    ap.add_argument("--step", choices=["all", "generate", "train"], default="all")
    args = ap.parse_args()
    if args.step == "generate":
        return generate(args.rows[0], args.dir)
    if args.step == "train":
        return print(json.dumps(train(args.dir)))
    results = [measure(rows, args.dir) for rows in args.rows]
    if args.doc:
        command = f"python benchmarks/streaming_20m.py --rows {' '.join(map(str, args.rows))} --dir {args.dir} --doc {args.doc}"
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.doc, page(results, command))


if __name__ == "__main__":
    main()
