"""Load benchmark of ``msmt serve``: requests/s and p50 / p99 latency over real HTTP on loopback.

Starts the real server (``python -m msmt serve``) on a free 127.0.0.1 port, then runs
``--clients`` concurrent clients (asyncio + httpx, keep-alive) that each send requests back to
back for ``--duration`` seconds per case, after ``--warmup`` seconds that are not counted.
Cases: every ``--rows`` value (rows per request) x every ``--backend``. Every request is checked
(status 200 and one prediction per row); any other answer or exception counts as an error.
Latency is client-side wall time per request (client and server share the machine's cores).

Without ``--run`` the script trains the model it serves: MMoE as in ``msmt synth simple``'s
experiment.yaml (embedding 8, 4 experts of [64, 32], towers [16]), 1 epoch on 5,000 rows,
seed 0; latency depends on the model's size, not on how well it is trained.

Example (what docs/results/serving.md reports)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --out docs/results/serving.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from msmt.data.io import atomic_write_text
from msmt.data.loading import load_splits
from msmt.data.tensorize import encode_frame
from msmt.experiments.run import run_experiment
from msmt.rundir.layout import load_run
from msmt.serving.encode import RowEncoder
from msmt.serving.request import build_request_models, request_columns, rows_to_frame
from msmt.spec.config import load_experiment
from msmt.synth.simple import write_simple

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_model(work: Path, seed: int) -> Path:
    data = write_simple(work / "data", rows=5000, seed=seed)
    cfg = load_experiment(data / "experiment.yaml", ["train.epochs=1", f"train.seed={seed}"])
    cfg.train.progress = False
    run_experiment(cfg, work / "run", overwrite=True)
    return work / "run"


def sample_rows(run_dir: Path, n: int) -> list[dict]:
    """``n`` rows of the run's validation split, as JSON rows (feature columns only)."""
    run = load_run(run_dir)
    frame = load_splits(run.schema.spec)["validation"]
    cols = [c for c in request_columns(run.schema) if c.column in frame.columns]
    rows = []
    for rec in frame.iloc[: max(n, 1)].to_dict("records"):
        row = {}
        for c in cols:
            v = rec[c.column]
            missing = v is None or (isinstance(v, float) and np.isnan(v))
            row[c.column] = None if missing else (float(v) if c.kind == "dense" else str(v))
        rows.append(row)
    while len(rows) < n:
        rows += rows[: n - len(rows)]
    return rows


def start_server(run_dir: Path, backend: str, threads: int, timeout: float = 120.0):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "msmt", "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend", backend, "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    stop_server(proc)
    raise SystemExit("server did not start in time")


def stop_server(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def load(url: str, body: bytes, n_rows: int, clients: int, warmup: float, duration: float) -> dict:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as http:
        start = time.perf_counter()
        t_count, t_end = start + warmup, start + warmup + duration

        async def client() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                try:
                    resp = await http.post("/v1/predict", content=body, headers=headers)
                    ok = resp.status_code == 200 and len(resp.json()["predictions"]) == n_rows
                except Exception:  # noqa: BLE001 - any failure is an error of the run
                    ok = False
                t1 = time.perf_counter()
                if t0 >= t_count:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    lat = np.array(latencies) * 1000.0
    return {
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / duration,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def stage_times(run_dir: Path, n: int, reps: int = 50) -> dict[str, float]:
    """Median in-process ms of each server-side stage for an ``n``-row request (no HTTP)."""
    run = load_run(run_dir)
    row_model, request, cols = build_request_models(run.schema, max(n, 1000))
    encoder = RowEncoder(run.schema, cols, row_model)
    payload = json.dumps({"rows": sample_rows(run_dir, n)})
    times: dict[str, list[float]] = {
        "parse JSON + validate": [],
        f"encode ({'direct' if encoder.direct else 'encode_frame'}, served)": [],
        "reference: rows -> DataFrame -> encode_frame": [],
        "model forward": [],
    }
    for _ in range(reps):
        t0 = time.perf_counter()
        req = request.model_validate(json.loads(payload))
        t1 = time.perf_counter()
        batch = encoder(req.rows)
        t2 = time.perf_counter()
        encode_frame(rows_to_frame(req.rows, cols), run.schema, with_labels=False)
        t3 = time.perf_counter()
        with torch.no_grad():
            run.model(batch)
        t4 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            dt_ms = dt * 1000.0
            times[key].append(dt_ms)
    return {k: float(np.median(v)) for k, v in times.items()}


def conditions() -> str:
    load1 = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return (
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), load average "
        f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} (1 / 5 / 15 min), Python {platform.python_version()}, "
        f"torch {torch.__version__}, commit {commit or '?'}"
    )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="run directory to serve (default: train a small MMoE)")
    ap.add_argument("--backend", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    ap.add_argument("--rows", nargs="+", type=int, default=[1, 100], help="rows per request")
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4], help="concurrent clients (one case each)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per case (max 120)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="server intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the markdown report here")
    args = ap.parse_args()
    args.duration = min(args.duration, 120.0)
    args.clients = [max(1, min(c, 64)) for c in args.clients]
    return args


def load_cases(args, run_dir: Path) -> list[dict]:
    """Every (backend, rows per request, clients) case against a fresh server per backend."""
    results = []
    for backend in args.backend:
        proc, url = start_server(run_dir, backend, args.threads)
        try:
            for n in args.rows:
                body = json.dumps({"rows": sample_rows(run_dir, n)}).encode()
                for clients in args.clients:
                    r = asyncio.run(load(url, body, n, clients, args.warmup, args.duration))
                    r.update(backend=backend, rows=n, clients=clients)
                    results.append(r)
                    print(
                        f"{backend:5s} {n:4d} rows/request, {clients} clients: {r['rps']:8.1f} req/s  "
                        f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  errors {r['errors']}",
                        flush=True,
                    )
        finally:
            stop_server(proc)
    return results


def load_table(results: list[dict]) -> list[str]:
    lines = [
        "| backend | rows / request | clients | requests | req/s | rows/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['rows']} | {r['clients']} | {r['requests']} | {r['rps']:.1f} | "
            f"{r['rps'] * r['rows']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |"
        )
    return lines


def stage_table(stages: dict[int, dict[str, float]]) -> list[str]:
    lines = ["| rows / request | " + " | ".join(next(iter(stages.values()))) + " |", "|---:|" + "---:|" * 4]
    for n, st in stages.items():
        lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in st.values()) + " |")
    return lines


def write_report(out: Path, report: str) -> None:
    """The page: command, report, then the hand-written notes of the previous page (after the marker)."""
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    marker = "<!-- notes: kept when the benchmark rewrites this file -->"
    old = out.read_text() if out.exists() else ""
    notes = old[old.index(marker) :] if marker in old else marker + "\n"
    atomic_write_text(out, f"# Serving load benchmark\n\nCommand: `{command}`\n\n{report}\n\n{notes}")
    print(f"wrote {out}")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="msmt-bench-") as tmp:
        run_dir = args.run or train_model(Path(tmp), args.seed)
        run = load_run(run_dir)
        n_params = sum(p.numel() for p in run.model.parameters())
        before = conditions()
        results = load_cases(args, run_dir)
        torch.set_num_threads(args.threads)
        stages = {n: stage_times(run_dir, n) for n in args.rows}
        after = conditions()

    model = f"{run.config.model.name}, {n_params:,} parameters" + ("" if args.run else f" (trained by the script, seed {args.seed})")
    report = "\n".join(
        [
            f"Model: {model}. Server: `msmt serve --threads {args.threads}` (one uvicorn worker); "
            "concurrent keep-alive clients (asyncio + httpx, one process) on the same machine; "
            f"{args.warmup:g} s warm-up then {args.duration:g} s measured per case.",
            "",
            *load_table(results),
            "",
            "Server-side stages, in-process, median ms over 50 repetitions (same thread count):",
            "",
            *stage_table(stages),
            "",
            f"Conditions at start: {before}.  ",
            f"At end: {after}.",
        ]
    )
    print("\n" + report)
    if args.out:
        write_report(args.out, report)


if __name__ == "__main__":
    main()
