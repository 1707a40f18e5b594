"""1 process vs ``torchrun --nproc-per-node 2`` on this machine (gloo, loopback), same global batch.

    python benchmarks/ddp_scaling.py [--rows 30000] [--epochs 2] [--batch 512]

Prints a Markdown table: wall time of the whole command (start-up, data, training, evaluation)
and the final validation click AUC of each run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from msmt.experiments.bench import read_metrics


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="msmt-ddp-"))
    py = sys.executable
    subprocess.run([py, "-m", "msmt", "synth", "simple", "--out", str(tmp / "data"), "--rows", str(args.rows)], check=True, capture_output=True)
    sets = [f"train.epochs={args.epochs}", f"train.batch_size={args.batch}", "train.patience=9", "train.num_threads=1", "train.progress=false"]
    train = ["-m", "msmt", "train", str(tmp / "data" / "experiment.yaml"), "--quiet", *sum((["--set", s] for s in sets), [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    runs = {
        "1 process": [py, *train, "--out", str(tmp / "p1")],
        "2 processes (torchrun, gloo)": [py, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
                                         "--master-addr", "127.0.0.1", "--master-port", str(_port()), *train, "--out", str(tmp / "p2")],
    }
    print("| setup | wall time (s) | val click AUC |\n|---|---|---|")
    for name, cmd in runs.items():
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        seconds = time.perf_counter() - start
        out = cmd[cmd.index("--out") + 1]
        auc = read_metrics(Path(out))["val"]["overall"]["click"]["auc"]
        print(f"| {name} | {seconds:.1f} | {auc:.4f} |", flush=True)


if __name__ == "__main__":
    main()
