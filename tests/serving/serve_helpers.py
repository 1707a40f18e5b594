"""Helpers of the serving tests: rows as a client sends them, `msmt predict` in-process, a real server."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from helpers import run_main
from msmt.spec.config import load_experiment
from msmt.spec.dataset import DatasetSpec
from msmt.synth import advertiser, funnel, simple

REPO = Path(__file__).resolve().parents[2]
# not msmt tune's search spaces; not a dataset with `behaviour` (the same MovieLens data plus dense features
# computed from the request's context rows, served in tests/data/test_behaviour.py): its 15 models would
# repeat movielens' cases here at a minute of suite time
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml")
                 if not p.name.endswith(".tune.yaml") and load_experiment(p).dataset.behaviour is None)
SIMULATORS = {"sim_advertiser": advertiser, "sim_funnel": funnel, "sim_simple": simple}
TINY = ["train.epochs=1", "train.batch_size=64", "model.embedding_dim=4", "model.hidden_dims=[8]", "model.tower_dims=[4]",
        "train.num_threads=1", "train.patience=1"]
SAMPLE_ROWS = 400  # rows of a config's data file a tiny run trains on (panel data: whole units)
SCORED_ROWS = 40


def dataset_specs() -> dict[str, DatasetSpec]:
    """Each dataset's spec, known at collection (no data read)."""
    specs = {p.stem: load_experiment(p).dataset for p in CONFIGS}
    specs.update({name: DatasetSpec.model_validate(sim.dataset_config()) for name, sim in SIMULATORS.items()})
    return specs


SPECS = dataset_specs()


def json_records(frame: pd.DataFrame) -> list[dict]:
    """Every column of every row as JSON values (null for missing), exactly (no rounding of floats)."""
    out = []
    for rec in frame.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                row[k] = None
            elif isinstance(v, (np.integer, bool)):
                row[k] = int(v)
            elif isinstance(v, np.floating):
                row[k] = float(v)
            else:
                row[k] = v
        out.append(row)
    return out


def msmt_predict(run_dir: Path, data: Path, out: Path, context: Path | None = None) -> pd.DataFrame:
    """`msmt predict RUN --data DATA [--context C] --out OUT`, run in this process; the written table
    (OUT's suffix becomes .parquet: the predictions exactly, where a CSV rounds them)."""
    out = Path(out).with_suffix(".parquet")
    args = ["predict", run_dir, "--data", data, "--out", out]
    if context is not None:
        args += ["--context", context]
    assert run_main(*args) == 0
    return pd.read_parquet(out)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, *args: str, timeout: float = 60.0):
    """`msmt serve` in a subprocess on a free loopback port; returns (process, base url)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "msmt", "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    stop_server(proc)
    raise AssertionError("server did not answer /healthz in time")


def stop_server(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
