"""Data-parallel training: 2 processes on loopback match 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from msmt.experiments.run import run_experiment
from msmt.spec.config import load_experiment
from msmt.spec.dataset import Task, TaskKind
from msmt.spec.errors import ConfigError
from msmt.training.distributed import Dist
from msmt.training.losses import task_losses

# 1,600 training rows in global batches of 127: shards of 64 and 63 rows, a last batch of 76
SETTINGS = [
    "train.epochs=2",
    "train.batch_size=127",
    "train.progress=false",
    "train.num_threads=1",
    "loss.strategy=uncertainty",  # a balancer with its own parameters (synchronised by hand)
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), tree


def _single_and_ddp(tiny_dir, tmp_path, settings):
    """(metrics of one process, metrics of two processes under torchrun) with the same settings."""
    single = run_experiment(load_experiment(tiny_dir / "experiment.yaml", settings), tmp_path / "single")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1"]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    run = tmp_path / "ddp"
    sets = sum((["--set", s] for s in settings), [])
    res = subprocess.run(
        [*launch, "-m", "msmt", "train", str(tiny_dir / "experiment.yaml"), "--out", str(run), "--quiet", *sets],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run directory:") == 1  # only rank 0 reports
    return single, json.loads((run / "metrics.json").read_text())


def _assert_same_metrics(ddp, single):
    got, want = dict(_leaves(ddp)), dict(_leaves(single))
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        else:  # row counts, and None where a metric is undefined (one class only)
            assert got[key] == value, key
    assert ddp["val"]["rows"] == single["val"]["rows"]  # metrics over all ranks' gathered predictions


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_dir, tmp_path):
    # Tolerance: the two runs differ only in float32 summation order (gradients are summed
    # across ranks by all-reduce); over 26 Adam steps that moves values around 1e-7 relative.
    _assert_same_metrics(*reversed(_single_and_ddp(tiny_dir, tmp_path, SETTINGS)))


@pytest.mark.slow
def test_two_processes_count_like_one_process_for_a_closed_form_model(tiny_dir, tmp_path):
    """popularity's counts: each rank counts its shard of every batch, the counts are summed over
    the ranks (``Dist.all_sum``), so two processes score exactly as one."""
    _assert_same_metrics(*reversed(_single_and_ddp(tiny_dir, tmp_path, [*SETTINGS, "model.name=popularity"])))


def test_shard_weights_make_the_ddp_mean_the_global_mean():
    torch.manual_seed(0)
    tasks = (Task(name="y", label="y", kind=TaskKind.BINARY),)
    n = 11
    batch = {"scenario": torch.zeros(n, dtype=torch.long), "labels": (torch.rand(n, 1) > 0.5).float(), "weight": torch.rand(n)}
    logits = torch.randn(n)
    full = task_losses(tasks, {"y": logits}, batch["labels"], batch["weight"])["y"]
    parts = []
    for rank in range(3):
        d = Dist(rank, 3)
        local = d.shard({**batch, "logit": logits})
        parts.append(task_losses(tasks, {"y": local["logit"]}, local["labels"], local["weight"])["y"])
    assert [d for d in (Dist(r, 3).bounds(n) for r in range(3))] == [(0, 4), (4, 8), (8, 11)]
    assert float(sum(parts) / 3) == pytest.approx(float(full), rel=1e-6)  # what DDP's averaging yields


def test_gradient_rewriting_balancers_refuse_ddp():
    Dist(0, 2).check_strategy("fixed")
    Dist(0, 2).check_strategy("dwa")
    for name in ("gradnorm", "pcgrad"):
        Dist(0, 1).check_strategy(name)
        with pytest.raises(ConfigError, match=name):
            Dist(0, 2).check_strategy(name)
