"""Load benchmark of ``msmt serve``: requests/s and p50 / p99 latency over real HTTP on loopback.

Starts the real server (``python -m msmt serve``) on a free 127.0.0.1 port, then runs
``--clients`` concurrent clients (asyncio + httpx, keep-alive) that each send requests back to
back for ``--duration`` seconds per case, after ``--warmup`` seconds that are not counted.
Cases: every ``--backend`` x ``--workers`` (a fresh server each) x ``--rows`` value (rows per
request) x ``--clients``. Every request is checked (status 200 and one prediction per row); any
other answer or exception counts as an error. Latency is client-side wall time per request
(client and server share the machine's cores). After a server's cases, the resident memory of
its processes (``/proc/PID/status`` VmRSS; with ``--workers N`` the supervisor and each worker)
is recorded.

Without ``--run`` the script trains the model it serves, 1 epoch, seed 0 (latency depends on
the model's size, not on how well it is trained):

* ``--dataset simple``: MMoE as in ``msmt synth simple``'s experiment.yaml (embedding 8, 4
  experts of [64, 32], towers [16]) on 5,000 rows;
* ``--dataset advertiser``: the advertiser simulator's experiment.yaml (M2M; ``--model`` picks
  another registered model) on 300 advertisers x 30 days. The server runs with ``--history``: a
  store filled by ``msmt history load`` with the training and validation days, and each request
  asks for the first test day of 1 or 100 units, so every request reads each unit's 14-day
  window from the store. ``--advertisers`` sizes the world and ``--set`` overrides the trained
  config: with ``--set dataset.panel.cross_section_keys=[scenario]`` every row also reads its
  scenario's other advertisers, from the store's per-step totals (the stage table adds, as a
  reference, the same encoding from every peer unit's rows).

Example (what docs/results/serving.md reports)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --out docs/results/serving.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --dataset advertiser --backend torch \
        --workers 1 2 --out docs/results/serving_history.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --dataset advertiser --advertisers 1200 \
        --set dataset.panel.cross_section_keys=[scenario] --backend torch --clients 1 \
        --out docs/results/serving_cross_section.md
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
from msmt.runtime.host import describe_cpu
from msmt.scoring.export import OnnxRunner, export_model, validation_batch
from msmt.serving.encode import PanelEncoder, RowEncoder
from msmt.serving.history import SqliteHistory, last_of_duplicates, observations_from_frame
from msmt.serving.request import build_request_models, history_columns, request_columns, rows_to_frame
from msmt.spec.batch import peer_channels
from msmt.spec.config import load_experiment
from msmt.synth.advertiser import write_advertiser
from msmt.synth.simple import write_simple

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_model(work: Path, dataset: str, seed: int, model: str | None, advertisers: int = 300, overrides=()) -> Path:
    if dataset == "advertiser":
        data = write_advertiser(work / "data", advertisers=advertisers, days=30, seed=seed)
    else:
        data = write_simple(work / "data", rows=5000, seed=seed)
    sets = ["train.epochs=1", f"train.seed={seed}", *([f"model.name={model}"] if model else []), *overrides]
    cfg = load_experiment(data / "experiment.yaml", sets)
    cfg.train.progress = False
    run_experiment(cfg, work / "run", overwrite=True)
    return work / "run"


def fill_store(run_dir: Path, db: Path) -> dict:
    """The run's training and validation rows in a history store (what ``msmt history load`` does)."""
    spec = load_run(run_dir).schema.spec
    splits = load_splits(spec)
    store = SqliteHistory(db, spec.panel)
    observations = [last_of_duplicates(observations_from_frame(splits[name], spec.panel)) for name in ("train", "validation")]
    start = time.perf_counter()
    for obs in observations:
        store.upsert(obs)
    seconds = time.perf_counter() - start
    summary = {**store.summary(), "rows_per_second": sum(map(len, observations)) / seconds}
    store.close()
    return summary


def sample_rows(run_dir: Path, n: int) -> list[dict]:
    """``n`` rows to score as JSON rows (the columns a row holds, without the outcomes): the
    validation split's first rows, or on panel data the first test day's rows (distinct units)."""
    run = load_run(run_dir)
    spec = run.schema.spec
    splits = load_splits(spec)
    if spec.panel is None:
        frame = splits["validation"]
    else:
        test = splits["test"]
        frame = test[test[spec.panel.time] == test[spec.panel.time].min()]
    cols = [c for c in request_columns(run.schema) if c.column in frame.columns and c.kind not in ("metric", "event")]
    rows = []
    for rec in frame.iloc[: max(n, 1)].to_dict("records"):
        row = {}
        for c in cols:
            v = rec[c.column]
            missing = v is None or (isinstance(v, float) and np.isnan(v))
            row[c.column] = None if missing else (float(v) if c.kind == "dense" else int(v) if c.kind == "time" else str(v))
        rows.append(row)
    while len(rows) < n:
        rows += rows[: n - len(rows)]
    return rows


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def process_name(pid: int) -> str:
    """What a server process is: the supervisor / a uvicorn worker (multiprocessing spawn) / a helper."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(c.decode(errors="replace") for c in cmd)
    if "resource_tracker" in text:
        return "resource tracker"
    if "spawn_main" in text:
        return "worker"
    return "msmt serve"


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the uvicorn supervisor and its workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def start_server(run_dir: Path, backend: str, threads: int, workers: int = 1, history: Path | None = None, timeout: float = 180.0):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "msmt", "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend", backend, "--threads", str(threads), "--workers", str(workers)]
    cmd += ["--history", str(history)] if history else []
    # the server's output (one access-log line per request) goes to a file: an undrained pipe fills
    # after ~64 KB, about 700 requests, and then blocks the server in the middle of a case
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
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


def stage_times(run_dir: Path, n: int, history: Path | None, reps: int = 50, onnx: OnnxRunner | None = None) -> dict[str, float]:
    """Median in-process ms of each server-side stage for an ``n``-row request (no HTTP); with
    ``onnx`` (the model exported as the ``onnx`` backend serves it) its forward on the same batch too."""
    run = load_run(run_dir)
    row_model, request, cols = build_request_models(run.schema, max(n, 1000))
    every_row = None
    if run.schema.spec.panel is not None:
        store = SqliteHistory(history, run.schema.spec.panel) if history else None
        direct = RowEncoder(run.schema, cols, row_model)
        panel = PanelEncoder(run.schema, cols, history_columns(run.schema), store, direct)
        keys = "direct" if direct.direct else "encode_frame"
        encoder, label = (lambda rows: panel(rows)[0]), f"store window + encode ({keys} + encode_rows, served)"
        if store is not None and any(panel.totalled(tuple(k)) for _, k in peer_channels(run.schema.spec.panel)):
            every_row = PanelEncoder(run.schema, cols, history_columns(run.schema), RowsOnly(store), direct)
            reference = f"reference: every peer unit's rows read ({keys} + encode_rows)"
    else:
        encoder = RowEncoder(run.schema, cols, row_model)
        label = f"encode ({'direct' if encoder.direct else 'encode_frame'}, served)"
    payload = json.dumps({"rows": sample_rows(run_dir, n)})
    times: dict[str, list[float]] = {
        "parse JSON + validate": [],
        label: [],
        "reference: rows -> DataFrame -> encode_frame": [],
        "model forward": [],
    }
    if onnx is not None:
        times["model forward (onnx)"] = []
    if every_row is not None:
        times[reference] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        req = request.model_validate(json.loads(payload))
        t1 = time.perf_counter()
        batch = encoder(req.rows)
        t2 = time.perf_counter()
        encode_frame(rows_to_frame(req.rows, cols), run.schema, with_labels=False)  # without history
        t3 = time.perf_counter()
        with torch.no_grad():
            run.model(batch)
        t4 = time.perf_counter()
        steps = [t1 - t0, t2 - t1, t3 - t2, t4 - t3]
        if onnx is not None:
            t5 = time.perf_counter()
            onnx(batch)
            steps.append(time.perf_counter() - t5)
        if every_row is not None:
            t6 = time.perf_counter()
            every_row(req.rows)
            steps.append(time.perf_counter() - t6)
        for key, dt in zip(times, steps):
            times[key].append(dt * 1000.0)
    return {k: float(np.median(v)) for k, v in times.items()}


def onnx_runner(run, path: Path, threads: int) -> OnnxRunner:
    """The run's model exported (parity-checked, as ``msmt serve --backend onnx`` does at start) and loaded in onnxruntime."""
    export_model(run.model, validation_batch(run), "onnx", path)
    return OnnxRunner(path, threads)


class RowsOnly:
    """A history store without ``group_totals``: the service then reads every unit of each peer
    group row by row (the path before the store kept per-step totals; the stage table's reference)."""

    def __init__(self, store):
        self.store = store

    def window(self, *args):
        return self.store.window(*args)

    def group_window(self, *args, **kwargs):
        return self.store.group_window(*args, **kwargs)

    def known(self, units):
        return self.store.known(units)


def conditions() -> str:
    load1 = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return (
        f"{describe_cpu()}, load average "
        f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} (1 / 5 / 15 min), Python {platform.python_version()}, "
        f"torch {torch.__version__}, commit {commit or '?'}"
    )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="run directory to serve (default: train one, see --dataset)")
    ap.add_argument("--dataset", default="simple", choices=["simple", "advertiser"],
                    help="what the script trains without --run (advertiser: panel data, served with a history store)")
    ap.add_argument("--model", help="with --dataset: the registered model to train (default: the experiment's)")
    ap.add_argument("--advertisers", type=int, default=300, help="with --dataset advertiser: the simulator's advertisers (30 days)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the trained model's config (e.g. dataset.panel.cross_section_keys=[scenario])")
    ap.add_argument("--history", type=Path, help="with --run on panel data: its history store (default: filled from its splits)")
    ap.add_argument("--backend", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1], help="server processes (one server per value)")
    ap.add_argument("--rows", nargs="+", type=int, default=[1, 100], help="rows per request")
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4], help="concurrent clients (one case each)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per case (max 120)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="server intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the markdown report here")
    ap.add_argument("--work", type=Path, help="train the model and fill its store here, kept (reused when there): "
                    "later calls can pass --run WORK/run --history WORK/history.db (default: a temporary folder)")
    ap.add_argument("--stages-only", action="store_true",
                    help="only the in-process stage table (no server, no report): e.g. the same run and store timed "
                         "with two versions of msmt, PYTHONPATH=<tree>/src")
    args = ap.parse_args()
    args.duration = min(args.duration, 120.0)
    args.clients = [max(1, min(c, 64)) for c in args.clients]
    return args


def load_cases(args, run_dir: Path, history: Path | None) -> tuple[list[dict], list[dict]]:
    """Every (backend, workers, rows per request, clients) case against a fresh server per
    (backend, workers); and the memory each server's processes held after its cases."""
    results, memory = [], []
    for backend in args.backend:
        for workers in args.workers:
            proc, url = start_server(run_dir, backend, args.threads, workers, history)
            try:
                for n in args.rows:
                    body = json.dumps({"rows": sample_rows(run_dir, n)}).encode()
                    for clients in args.clients:
                        r = asyncio.run(load(url, body, n, clients, args.warmup, args.duration))
                        r.update(backend=backend, workers=workers, rows=n, clients=clients)
                        results.append(r)
                        print(
                            f"{backend:5s} {workers} workers {n:4d} rows/request, {clients} clients: {r['rps']:8.1f} req/s  "
                            f"p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  errors {r['errors']}",
                            flush=True,
                        )
                pids = process_tree(proc.pid)
                rss = [rss_mb(p) for p in pids]
                names = [process_name(p) for p in pids]
                memory.append({"backend": backend, "workers": workers, "processes": len(pids), "rss": rss, "names": names})
            finally:
                stop_server(proc)
    return results, memory


def load_table(results: list[dict]) -> list[str]:
    lines = [
        "| backend | workers | rows / request | clients | requests | req/s | rows/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['rows']} | {r['clients']} | {r['requests']} | {r['rps']:.1f} | "
            f"{r['rps'] * r['rows']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |"
        )
    return lines


def memory_table(memory: list[dict]) -> list[str]:
    lines = ["| backend | workers | processes | resident memory, MB (each process) | total MB |", "|---|---:|---:|---|---:|"]
    for m in memory:
        each = ", ".join(f"{name} {x:.0f}" for name, x in zip(m["names"], m["rss"]))
        lines.append(f"| {m['backend']} | {m['workers']} | {m['processes']} | {each} | {sum(m['rss']):.0f} |")
    return lines


def stage_table(stages: dict[int, dict[str, float]]) -> list[str]:
    columns = next(iter(stages.values()))
    lines = ["| rows / request | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
    for n, st in stages.items():
        lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in st.values()) + " |")
    return lines


def write_report(out: Path, report: str, title: str) -> None:
    """The page: command, report, then the hand-written notes of the previous page (after the marker)."""
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    marker = "<!-- notes: kept when the benchmark rewrites this file -->"
    old = out.read_text() if out.exists() else ""
    notes = old[old.index(marker) :] if marker in old else marker + "\n"
    atomic_write_text(out, f"# {title}\n\nCommand: `{command}`\n\n{report}\n\n{notes}")
    print(f"wrote {out}")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="msmt-bench-") as tmp:
        work = args.work or Path(tmp)
        reuse = args.work is not None and (work / "run").is_dir()
        run_dir = args.run or (work / "run" if reuse else train_model(work, args.dataset, args.seed, args.model, args.advertisers, args.overrides))
        run = load_run(run_dir)
        n_params = sum(p.numel() for p in run.model.parameters())
        history, store_note = None, ""
        if run.schema.spec.panel is not None:
            history = args.history or work / "history.db"
            if not args.history and not (reuse and history.exists()):
                s = fill_store(run_dir, history)
                panel = run.schema.spec.panel
                channels = ", ".join(f"`{list(keys)}`" for _, keys in peer_channels(panel))
                store_note = (f" History store: SQLite (WAL), {s['rows']:,} rows of {s['units']:,} units "
                              f"(days {s['first_step']}..{s['last_step']}), loaded at {s['rows_per_second']:,.0f} rows/s"
                              + (f" with an index per peer channel ({channels})" if channels else "")
                              + (f" and the cross-section's per-step totals (`{list(panel.cross_section_keys)}`)" if panel.cross_section_keys else "")
                              + "; each request reads its units' 14-day windows.")
            else:
                store_note = f" History store: `{history}` (given or reused); each request reads its units' 14-day windows."
        onnx = onnx_runner(run, Path(tmp) / "model.onnx", args.threads) if "onnx" in args.backend else None
        if args.stages_only:
            torch.set_num_threads(args.threads)
            print("\n".join(stage_table({n: stage_times(run_dir, n, history, onnx=onnx) for n in args.rows})))
            return
        before = conditions()
        results, memory = load_cases(args, run_dir, history)
        torch.set_num_threads(args.threads)
        stages = {n: stage_times(run_dir, n, history, onnx=onnx) for n in args.rows}
        after = conditions()

    model = f"{run.config.model.name} on {run.schema.spec.name}, {n_params:,} parameters" + (
        "" if args.run else f" (trained by the script, seed {args.seed})")
    report = "\n".join(
        [
            f"Model: {model}. Server: `msmt serve --threads {args.threads} --workers N`; "
            "concurrent keep-alive clients (asyncio + httpx, one process) on the same machine; "
            f"{args.warmup:g} s warm-up then {args.duration:g} s measured per case.{store_note}",
            "",
            *load_table(results),
            "",
            "Resident memory of the server's processes after its cases (`--workers N`: the supervisor, then each worker):",
            "",
            *memory_table(memory),
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
        title = "Serving load benchmark" + (": forecasts with history-store look-ups" if history else "")
        write_report(args.out, report, title)


if __name__ == "__main__":
    main()
